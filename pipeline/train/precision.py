"""Which Keras dtype policy ``train.mixed_precision`` means on this machine (no Keras import).

Measured in docs/benchmarks.md: bfloat16 trained the reference configuration at 1.8x the
images/s of float32 on an AMD EPYC with AVX512-BF16 (quiet machine, same run) and at 2.4x on a
Xeon with AMX-BF16 (issue 16), with the same final test accuracy within the seed-to-seed noise.
So ``auto`` picks bfloat16 on any CPU with native bf16 math and float32 on the others.
(An earlier run on the EPYC under a load average of 20 saw no gain: the oversubscribed cores,
not the math, set the pace there.)
"""

from __future__ import annotations

from pathlib import Path

# CPU flags (/proc/cpuinfo) of native bfloat16 math that oneDNN can use for bf16 layers.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bf16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """Which of BF16_CPU_FLAGS this CPU reports (empty where it has none, or off Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return [flag for flag in BF16_CPU_FLAGS if flag in flags]


def resolve_precision_policy(
    setting: str, has_gpu: bool, bf16_flags: list[str], backend: str = "tensorflow"
) -> str:
    """The Keras dtype policy for ``train.mixed_precision`` (``auto``, ``on`` or ``off``).

    Mixed precision is float16 on a GPU and bfloat16 on a CPU. ``auto`` turns it on with a GPU,
    and on a CPU with native bf16 math (any of BF16_CPU_FLAGS) under TensorFlow, whose oneDNN
    kernels were measured; JAX on a CPU keeps float32 (its bf16 speed was not measured).
    """
    mixed = "mixed_float16" if has_gpu else "mixed_bfloat16"
    if setting == "auto":
        cpu_bf16 = bool(bf16_flags) and backend == "tensorflow"
        return mixed if has_gpu or cpu_bf16 else "float32"
    return mixed if setting == "on" else "float32"
