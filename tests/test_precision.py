"""Precision policy (``train.mixed_precision``), bf16 determinism on the CPU, LR schedules."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from pipeline.train.precision import cpu_bf16_flags, resolve_precision_policy
from tests.conftest import REPO_ROOT, repo_params, run_stage


@pytest.mark.parametrize(
    ("setting", "has_gpu", "flags", "policy"),
    [
        ("auto", False, ["amx_bf16", "avx512_bf16"], "mixed_bfloat16"),
        ("auto", False, ["amx_bf16"], "mixed_bfloat16"),
        # Measured: AVX512-BF16 without AMX trains at 1.8x float32's images/s.
        ("auto", False, ["avx512_bf16"], "mixed_bfloat16"),
        ("auto", False, [], "float32"),
        ("auto", True, [], "mixed_float16"),
        ("on", False, [], "mixed_bfloat16"),
        ("on", True, ["avx512_bf16"], "mixed_float16"),
        ("off", False, ["amx_bf16"], "float32"),
        ("off", True, [], "float32"),
    ],
)
def test_precision_policy(setting: str, has_gpu: bool, flags: list[str], policy: str) -> None:
    assert resolve_precision_policy(setting, has_gpu, flags) == policy


def test_auto_keeps_float32_for_jax_on_a_bf16_cpu() -> None:
    # bf16's CPU speed-up was measured with TensorFlow's oneDNN kernels only.
    assert resolve_precision_policy("auto", False, ["avx512_bf16"], "jax") == "float32"
    assert resolve_precision_policy("auto", True, [], "jax") == "mixed_float16"
    assert resolve_precision_policy("on", False, [], "jax") == "mixed_bfloat16"


def test_bf16_flags_come_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    )
    assert cpu_bf16_flags(cpuinfo) == ["amx_bf16", "avx512_bf16"]
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert cpu_bf16_flags(cpuinfo) == []
    assert cpu_bf16_flags(tmp_path / "missing") == []


def _lr_at(schedule: object, step: int) -> float:
    return float(schedule(step)) if callable(schedule) else float(schedule)


@pytest.mark.keras
def test_learning_rate_schedules_span_all_steps() -> None:
    from pipeline.train.fit import learning_rate

    steps_per_epoch, epochs, peak = 10, 5, 0.01
    total = steps_per_epoch * epochs

    def lr(name: str) -> object:
        params = repo_params(
            f"train.learning_rate={peak}", f"train.epochs={epochs}", f"train.lr_schedule={name}"
        )
        return learning_rate(params.train, steps_per_epoch)

    assert lr("constant") == peak
    cosine = lr("cosine")
    assert _lr_at(cosine, 0) == pytest.approx(peak)
    assert _lr_at(cosine, total // 2) == pytest.approx(peak / 2, rel=1e-3)
    assert _lr_at(cosine, total) == pytest.approx(0.0, abs=1e-9)
    one_cycle = lr("one_cycle")
    warmup = int(total * 0.2)
    assert _lr_at(one_cycle, 0) == pytest.approx(peak / 10)
    assert _lr_at(one_cycle, warmup // 2) < _lr_at(one_cycle, warmup) == pytest.approx(peak)
    assert _lr_at(one_cycle, total) == pytest.approx(0.0, abs=1e-9)


def test_default_params_keep_the_reference_schedule() -> None:
    assert repo_params().train.lr_schedule == "constant"


@pytest.mark.e2e
def test_bf16_training_on_the_cpu_is_deterministic(tmp_path: Path, prepared_dir: Path) -> None:
    import keras

    weights, policies = [], []
    for name in ("a", "b"):
        workdir = tmp_path / name
        uri = f"sqlite:///{workdir / 'mlflow.db'}"
        result = run_stage(
            "train",
            "--params", REPO_ROOT / "params.yaml",
            "--prepared-dir", prepared_dir,
            "--models-dir", workdir / "models",
            "--reports-dir", workdir / "reports",
            "--checkpoints-dir", workdir / "checkpoints",
            "--archive", workdir / "none.tar.gz",
            "--set", "train.epochs=2", "--set", "train.batch_size=50",
            "--set", 'train.mixed_precision="on"',
            env={"MLFLOW_TRACKING_URI": uri},
            cwd=workdir.parent,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        client = mlflow.MlflowClient(tracking_uri=uri)
        (run,) = client.search_runs([client.get_experiment_by_name("cifar10-cnn").experiment_id])
        policies.append(run.data.tags["train.precision_policy"])
        model = keras.saving.load_model(workdir / "models" / "model.keras")
        assert model.get_layer("block1_conv_same").dtype_policy.name == "mixed_bfloat16"
        weights.append([np.asarray(w) for w in model.weights])
    assert policies == ["mixed_bfloat16", "mixed_bfloat16"]
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))
