"""benchmarks/gpu_check.py at toy size on this CPU (--allow-cpu); the real run needs a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.train.precision import cpu_bf16_flags
from tests.conftest import QUIET_ENV, REPO_ROOT

# End to end: the GPU check trains on this CPU in a subprocess.
pytestmark = pytest.mark.e2e

GPU_CHECK = REPO_ROOT / "benchmarks" / "gpu_check.py"
TOY = ["--epochs", "2", "--images", "128", "--batch-size", "32", "--steps-per-execution", "2"]


def gpu_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GPU_CHECK), *args],
        cwd=REPO_ROOT,
        env={**os.environ, **QUIET_ENV},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_gpu_check_trains_times_and_checks_on_a_cpu_when_allowed() -> None:
    result = gpu_check("--backends", "tensorflow", "--allow-cpu", *TOY)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = result.stdout.splitlines()  # stdout holds only the JSON lines
    report = json.loads(line)
    assert report["backend"] == "tensorflow" and report["ok"] is True
    policy = "mixed_bfloat16" if cpu_bf16_flags() else "float32"  # train.mixed_precision: auto
    assert report["device"] == "cpu" and report["policy"] == policy
    assert report["steps_per_execution"] == 2 and report["epochs"] == 2
    assert len(report["images_per_s"]) == 2 and all(v > 0 for v in report["images_per_s"])
    assert report["first_epoch_s"] > 0
    assert report["checks"] == {
        "output_float32": True,
        "save_load_resume": True,
        "deterministic": True,
    }


def test_gpu_check_fails_plainly_without_a_gpu() -> None:
    result = gpu_check("--backends", "tensorflow", "--no-checks", *TOY)
    assert result.returncode == 1
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["ok"] is False
    assert any("sees no GPU" in error for error in report["errors"])


def test_gpu_check_imports_neither_mlflow_nor_tensorflow_nor_dvc() -> None:
    """The GPU machine has JAX and little else: the JAX path must not need the rest."""
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import gpu_check; "
        "import pipeline.train.fit, pipeline.core.params, pipeline.train.checkpoints; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlflow', 'tensorflow', 'dvc'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(REPO_ROOT / "benchmarks"), str(REPO_ROOT)],
        env={**os.environ, **QUIET_ENV, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
