"""train.device, the start-up line that says how training runs, and the logged requirements.

This machine has no GPU: ``train.device=gpu`` must refuse to train, before any MLflow run or
output exists. (That ``cpu`` hides a present GPU is checked on a GPU by benchmarks/gpu_check.py.)
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import keras
import mlflow
import pytest
from packaging.requirements import Requirement

from pipeline.core.keras_backend import backend_requirements
from pipeline.train.backend import compilation_cache_dir, use_compilation_cache
from pipeline.train.precision import cpu_bf16_flags, resolve_precision_policy
from tests.conftest import REPO_ROOT, run_stage, store_env, train_args

# End to end: trainings on the CPU under each device setting.
pytestmark = pytest.mark.e2e

BACKENDS = ["tensorflow", "jax"]


def locked_versions() -> dict[str, set[str]]:
    versions: dict[str, set[str]] = {}
    for package in tomllib.loads((REPO_ROOT / "uv.lock").read_text())["package"]:
        versions.setdefault(package["name"], set()).add(package.get("version", ""))
    return versions


@pytest.mark.parametrize("backend", BACKENDS)
def test_device_gpu_without_a_gpu_fails_before_any_run_or_output(
    tmp_path: Path, prepared_dir: Path, backend: str
) -> None:
    result = run_stage(
        "train",
        *train_args(tmp_path, prepared_dir, "train.epochs=1", "train.device=gpu"),
        env={**store_env(tmp_path), "KERAS_BACKEND": backend},
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: train.device=gpu but {backend} sees no GPU: check the NVIDIA driver "
        "(`nvidia-smi`), CUDA_VISIBLE_DEVICES and the CUDA install (`make setup GPU=1`), "
        "or train on the CPU with --set train.device=cpu"
    ]
    assert "Traceback" not in result.stderr
    # No tracking store, no run, no model, no reports, no checkpoint.
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.fixture(scope="module", params=BACKENDS)
def cpu_training(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, prepared_dir: Path
) -> tuple[str, Path, str]:
    """One tiny training with train.device=cpu and steps_per_execution 2: (backend, dir, log)."""
    backend = request.param
    tmp_path = tmp_path_factory.mktemp(f"cpu-{backend}")
    result = run_stage(
        "train",
        *train_args(
            tmp_path,
            prepared_dir,
            "train.epochs=1",
            "train.device=cpu",
            "train.steps_per_execution=2",
        ),
        env={
            **store_env(tmp_path),
            "KERAS_BACKEND": backend,
            "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache"),
        },
    )
    assert result.returncode == 0, result.stderr
    return backend, tmp_path, result.stderr


def test_train_stage_says_how_it_trains(cpu_training: tuple[str, Path, str]) -> None:
    backend, _, log = cpu_training
    versions = locked_versions()["tensorflow-cpu" if backend == "tensorflow" else "jax"]
    (line,) = [line for line in log.splitlines() if line.startswith("training on ")]
    # XLA/JIT: Keras compiles with XLA on JAX always, on TensorFlow only with a GPU.
    jit = "on" if backend == "jax" else "off"
    policy = resolve_precision_policy("auto", False, cpu_bf16_flags(), backend)
    assert line in {
        f"training on cpu, backend {backend} {v}, precision policy {policy}, "
        f"XLA/JIT {jit}, steps_per_execution 2"
        for v in versions
    }


def test_jax_keeps_its_compiled_steps_for_the_next_run(cpu_training: tuple[str, Path, str]) -> None:
    backend, tmp_path, _ = cpu_training
    cache = tmp_path / "jax-cache"
    if backend == "jax":
        # The train step, the evaluation step and the rest, each one file.
        assert len(list(cache.iterdir())) >= 2
    else:
        assert not cache.exists()


@pytest.mark.parametrize(
    ("env", "folder"),
    [
        ({}, Path.home() / ".cache" / "cifar10-pipeline" / "jax"),
        ({"XDG_CACHE_HOME": "/c"}, Path("/c/cifar10-pipeline/jax")),
        ({"XDG_CACHE_HOME": "/c", "JAX_COMPILATION_CACHE_DIR": "/mine"}, Path("/mine")),
        ({"JAX_COMPILATION_CACHE_DIR": "/mine", "JAX_ENABLE_COMPILATION_CACHE": "false"}, None),
        ({"JAX_ENABLE_COMPILATION_CACHE": "0"}, None),
        ({"JAX_ENABLE_COMPILATION_CACHE": "true"}, Path.home() / ".cache/cifar10-pipeline/jax"),
    ],
)
def test_compilation_cache_folder_follows_jax_settings(
    env: dict[str, str], folder: Path | None
) -> None:
    assert compilation_cache_dir(env) == folder


def test_a_compilation_cache_folder_that_cannot_exist_turns_the_cache_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("")
    folder = tmp_path / "a-file" / "cache"
    assert use_compilation_cache({"JAX_COMPILATION_CACHE_DIR": str(folder)}) is None
    assert f"JAX compilation cache off: cannot create {folder}" in caplog.text


def test_steps_per_execution_reaches_the_compiled_model(
    cpu_training: tuple[str, Path, str],
) -> None:
    _, tmp_path, _ = cpu_training
    model = keras.saving.load_model(tmp_path / "models" / "model.keras", compile=True)
    assert model.steps_per_execution == 2


def test_logged_requirements_name_the_installed_backend_at_locked_versions(
    cpu_training: tuple[str, Path, str],
) -> None:
    backend, tmp_path, _ = cpu_training
    model_uri = json.loads((tmp_path / "models" / "run.json").read_text())["model_uri"]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store_env(tmp_path)["MLFLOW_TRACKING_URI"])
    try:
        requirements_txt = Path(mlflow.pyfunc.get_model_dependencies(model_uri)).read_text()
    finally:
        mlflow.set_tracking_uri(previous)
    requirements = [Requirement(line) for line in requirements_txt.split() if line]
    names = [req.name for req in requirements]
    if backend == "tensorflow":
        assert "tensorflow-cpu" in names and "tensorflow" not in names
    else:
        assert {"jax", "jaxlib"} <= set(names) and "jax-cuda12-plugin" not in names
        assert not any(name.startswith("tensorflow") for name in names)
    # Every pin is exact and is the version uv.lock holds: the environment that MLflow rebuilds
    # (mlflow models serve --env-manager virtualenv) is a subset of the locked, resolving set.
    locked = locked_versions()
    for req in requirements:
        (spec,) = req.specifier
        assert spec.operator == "==", req
        assert spec.version in locked.get(req.name, set()), f"{req} is not what uv.lock holds"


@pytest.mark.parametrize(
    ("backend", "installed", "expected"),
    [
        ("tensorflow", {"tensorflow-cpu": "2.21.0"}, ["tensorflow-cpu==2.21.0"]),
        (
            "tensorflow",
            {"tensorflow": "2.21.0", "nvidia-cudnn-cu12": "9.3"},
            ["tensorflow[and-cuda]==2.21.0"],
        ),
        ("tensorflow", {"tensorflow": "2.21.0"}, ["tensorflow==2.21.0"]),
        ("jax", {"jax": "0.10.2", "jaxlib": "0.10.2"}, ["jax==0.10.2", "jaxlib==0.10.2"]),
        (
            "jax",
            {
                "jax": "0.10.2",
                "jaxlib": "0.10.2",
                "jax-cuda12-plugin": "0.10.2",
                "jax-cuda12-pjrt": "0.10.2",
            },
            [
                "jax==0.10.2",
                "jaxlib==0.10.2",
                "jax-cuda12-plugin[with-cuda]==0.10.2",
                "jax-cuda12-pjrt==0.10.2",
            ],
        ),
    ],
)
def test_requirements_follow_the_installed_distributions(
    backend: str, installed: dict[str, str], expected: list[str]
) -> None:
    assert backend_requirements(backend, installed.get) == expected
