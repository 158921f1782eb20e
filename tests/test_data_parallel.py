"""train.distribution=data_parallel on 2 virtual CPU devices, against a one-device training.

Virtual devices exist only if configured before the backend starts, so every training here is a
subprocess: JAX gets ``--xla_force_host_platform_device_count=2``, TensorFlow two logical CPU
devices (``tf.config.set_logical_device_configuration``, in a small launcher before the stage).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest

from tests.conftest import QUIET_ENV, REPO_ROOT, store_env, train_args, write_prepared

# End to end: trainings of the train stage in subprocesses.
pytestmark = pytest.mark.e2e

BACKENDS = ["tensorflow", "jax"]
# The train stage's command line on two virtual CPU devices, per backend.
TF_TWO_CPUS = (
    "import runpy, sys, tensorflow as tf; "
    "tf.config.set_logical_device_configuration(tf.config.list_physical_devices('CPU')[0], "
    "[tf.config.LogicalDeviceConfiguration()] * 2); "
    "sys.argv[0] = 'stages.train'; runpy.run_module('stages.train', run_name='__main__')"
)
TWO_DEVICES = "data_parallel x2 (cpu:0, cpu:1)"
# Same global batch, same seed, float32, SGD: the two trainings differ only in the order the
# gradient is summed (two halves, then across devices), i.e. float32 round-off. Measured on JAX
# at the default learning rate (0.001): 7e-9 apart after 2 epochs; at 0.05 the round-off grows
# to 7e-5 in the same 8 steps. RMSprop is left out on purpose: it turns the round-off of a
# gradient that is zero in exact arithmetic (a dropped unit) into a whole +-lr/sqrt(0.1) step,
# 8e-3 apart measured.
ATOL = 1e-5
COMPARED = ("train.optimizer=sgd", "train.mixed_precision=off")


def stage_command(backend: str, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The train stage's argv and environment on two virtual CPU devices of ``backend``."""
    env = {**os.environ, **QUIET_ENV, "KERAS_BACKEND": backend}
    if backend == "jax":
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        return [sys.executable, "-m", "stages.train", *args], env
    return [sys.executable, "-c", TF_TWO_CPUS, *args], env


def train_on_two(
    backend: str, workdir: Path, prepared: Path, *sets: str
) -> subprocess.CompletedProcess[str]:
    """Run the train stage to the end with two devices visible."""
    command, env = stage_command(backend, train_args(workdir, prepared, *sets))
    env.update(store_env(workdir))
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def start_line(stderr: str) -> str:
    (line,) = [line for line in stderr.splitlines() if line.startswith("training on ")]
    return line


def history_rows(workdir: Path) -> list[str]:
    return (workdir / "reports" / "history.csv").read_text().splitlines()[1:]


def only_run(workdir: Path) -> mlflow.entities.Run:
    client = mlflow.MlflowClient(tracking_uri=store_env(workdir)["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("cifar10-cnn")
    (run,) = client.search_runs([experiment.experiment_id])
    return run


@pytest.mark.parametrize("backend", BACKENDS)
def test_data_parallel_trains_on_both_devices_like_one_device(
    tmp_path: Path, prepared_dir: Path, backend: str
) -> None:
    one = train_on_two(backend, tmp_path / "one", prepared_dir, "train.epochs=2", *COMPARED)
    assert one.returncode == 0, one.stderr
    two = train_on_two(
        backend,
        tmp_path / "two",
        prepared_dir,
        "train.epochs=2",
        *COMPARED,
        "train.distribution=data_parallel",
        "train.devices=0",
    )
    assert two.returncode == 0, two.stderr

    # The placement as the backend made it: the variables have a copy on each device...
    assert start_line(two.stderr).startswith(
        f"training on {TWO_DEVICES}, variables on cpu:0 + cpu:1"
    )
    assert only_run(tmp_path / "two").data.tags["device"] == TWO_DEVICES
    # ...and with distribution none, two visible devices do not matter.
    assert start_line(one.stderr).startswith("training on cpu, backend")
    assert only_run(tmp_path / "one").data.tags["device"] == "cpu"

    # Loaded here, a process with one device: the saved model is a plain one.
    model_one = keras.saving.load_model(tmp_path / "one" / "models" / "model.keras")
    model_two = keras.saving.load_model(tmp_path / "two" / "models" / "model.keras")
    if backend == "tensorflow":
        # Not comparable yet: MirroredStrategy's distributed copy of the seeded tf.data shuffle
        # draws another permutation than the plain dataset (same seed), so the two trainings see
        # other batches (docs/gpu.md, "Several GPUs").
        return
    for a, b in zip(model_one.weights, model_two.weights, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=ATOL, err_msg=a.path)
    # The trainings did learn something: equal by being untouched would prove nothing.
    losses = [row.split(",")[1] for row in history_rows(tmp_path / "two")]
    assert losses[0] != losses[1]
    images = np.load(prepared_dir / "test.npz")["x"][:8]
    np.testing.assert_allclose(
        np.asarray(model_two.predict(images, verbose=0)),
        np.asarray(model_one.predict(images, verbose=0)),
        atol=1e-4,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_more_devices_than_visible_fails_before_any_run(
    tmp_path: Path, prepared_dir: Path, backend: str
) -> None:
    result = train_on_two(
        backend,
        tmp_path,
        prepared_dir,
        "train.epochs=1",
        "train.distribution=data_parallel",
        "train.devices=5",
        "train.batch_size=50",
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: train.devices=5 but {backend} sees 2 CPU device(s) (cpu:0, cpu:1): "
        "lower train.devices, or 0 for all"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_data_parallel_training_resumes(tmp_path: Path, backend: str) -> None:
    # JAX: its Keras distribution is process-wide, the state a resume most easily loses;
    # TensorFlow: the checkpoint is loaded back into a MirroredStrategy's scope.
    # Enough images that one epoch takes seconds: the kill lands inside epoch 2.
    prepared = write_prepared(tmp_path / "prepared", {"train": 1000, "val": 50, "test": 10})
    workdir = tmp_path / "work"
    args = train_args(
        workdir, prepared, "train.epochs=3", "train.distribution=data_parallel", "train.devices=2"
    )
    command, env = stage_command(backend, args)
    env.update(store_env(workdir))
    first = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        state = None
        deadline = time.monotonic() + 300
        while state is None and time.monotonic() < deadline and first.poll() is None:
            found = list((workdir / "checkpoints").glob("*/state.json"))
            state = json.loads(found[0].read_text()) if found else None
            time.sleep(0.02)
        assert state is not None, "no checkpoint appeared before the first run ended"
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait(timeout=60)
    assert state["epochs_done"] == 1
    assert not (workdir / "models" / "model.keras").exists()

    second = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr
    assert "resuming after epoch 1 of 3" in second.stderr
    assert start_line(second.stderr).startswith(f"training on {TWO_DEVICES}, variables on")
    run = only_run(workdir)
    assert run.info.run_id == state["run_id"] and run.info.status == "FINISHED"
    assert [row.split(",")[0] for row in history_rows(workdir)] == ["1", "2", "3"]
    model = keras.saving.load_model(workdir / "models" / "model.keras")
    assert model.predict(np.load(prepared / "test.npz")["x"], verbose=0).shape == (10, 10)
