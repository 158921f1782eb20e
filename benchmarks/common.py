"""Shared helpers: measured subprocesses, incremental JSON, the machine description."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.core.paths import REPO_ROOT

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
# Quiet, CPU-only unless told otherwise, no telemetry: every measured child gets this.
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "PYTHONUNBUFFERED": "1",
}
LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "jax", "numpy", "mlflow", "dvc")
CPU_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


@dataclass
class Measured:
    """One finished child process: exit code, wall and CPU time, peak resident memory, output."""

    returncode: int
    wall_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str
    # User + system CPU seconds: on a shared machine this moves far less with load than wall time.
    cpu_s: float = 0.0


def run_measured(
    cmd: list[str], env: dict[str, str] | None = None, cwd: Path = REPO_ROOT, timeout: float = 7200
) -> Measured:
    """Run ``cmd`` to the end and measure it alone: its own rusage comes from ``wait4``.

    ``ru_maxrss`` of that one child (and the children it waited for) is its peak RSS; the
    process-wide RUSAGE_CHILDREN would keep the maximum over every earlier child too.
    """
    full_env = {**os.environ, **QUIET_ENV, **(env or {})}
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{os.getpid()}-{time.time_ns()}"
    with open(f"{out_path}.out", "w+") as out, open(f"{out_path}.err", "w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=out, stderr=err, text=True)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    Path(f"{out_path}.out").unlink(missing_ok=True)
    Path(f"{out_path}.err").unlink(missing_ok=True)
    # Linux reports ru_maxrss in KiB.
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(proc.returncode, wall, usage.ru_maxrss / 1024, stdout, stderr, cpu)


def check(measured: Measured, what: str) -> Measured:
    """Stop with the child's last lines when it failed: a failed run must not become a figure."""
    if measured.returncode != 0:
        tail = "\n".join(measured.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"error: {what} failed (exit {measured.returncode}):\n{tail}")
    return measured


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` beside ``path`` and rename it into place (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def cpu_info() -> dict[str, Any]:
    """CPU model, the flags that matter for bf16/vector math, and the core count."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags.update(value.split())
    except OSError:
        pass
    return {
        "model": model,
        "flags": [flag for flag in CPU_FLAGS_OF_INTEREST if flag in flags],
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
    }


def gpu_info() -> list[str]:
    """``nvidia-smi`` names of the GPUs, or an empty list (no driver, no GPU)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def machine_info() -> dict[str, Any]:
    """Everything docs/benchmarks.md says about where the figures were measured."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    return {
        "cpu": cpu_info(),
        "gpu": gpu_info(),
        "memory_gb": _memory_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": versions,
        "load_average": load,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def python() -> str:
    """The interpreter the benchmarks run under (the project's .venv one under make bench)."""
    return sys.executable


def module(name: str, *args: object) -> list[str]:
    """The command line ``python -m name args...`` under this interpreter."""
    return [python(), "-m", name, *map(str, args)]
