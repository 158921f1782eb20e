"""The multi-host plan's first step, on one machine: two JAX processes, one data-parallel fit.

docs/scaling.md plans multi-node training with Kubeflow Trainer's JAX runtime, which starts one
pod per JAX process and sets ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
``JAX_PROCESS_ID``, and ``keras.distribution.initialize()``, which reads
``KERAS_DISTRIBUTION_*``. This runs that mapping with two local processes (CPU, gloo) instead of
two pods: no cluster, no GPU, and not the train stage (tests/multihost_worker.py is a one-layer
model), so it checks the Keras/JAX side of the plan, nothing of Kubernetes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import QUIET_ENV, REPO_ROOT, free_port

# End to end: three Python processes with JAX, Keras and TensorFlow.
pytestmark = pytest.mark.e2e

# What the pod's command maps (docs/scaling.md): Trainer's variable -> the one Keras reads.
TRAINER_TO_KERAS = {
    "JAX_COORDINATOR_ADDRESS": "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "JAX_NUM_PROCESSES": "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "JAX_PROCESS_ID": "KERAS_DISTRIBUTION_PROCESS_ID",
}


def start(out: Path, trainer_env: dict[str, str]) -> subprocess.Popen[str]:
    env = {**os.environ, **QUIET_ENV, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # one CPU device per process, as one GPU-less pod would have
    env.update({TRAINER_TO_KERAS[name]: value for name, value in trainer_env.items()})
    return subprocess.Popen(
        [sys.executable, "-m", "tests.multihost_worker", str(out)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_train_as_one_over_the_trainer_variables(tmp_path: Path) -> None:
    coordinator = f"127.0.0.1:{free_port()}"
    workers = [
        start(
            tmp_path / f"process-{index}.json",
            {
                "JAX_COORDINATOR_ADDRESS": coordinator,
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(index),
            },
        )
        for index in range(2)
    ]
    alone = start(tmp_path / "alone.json", {})
    try:
        for process in [*workers, alone]:
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, stderr[-3000:]
    finally:
        for process in [*workers, alone]:
            process.kill()
            process.wait(timeout=30)

    results = [json.loads((tmp_path / f"process-{i}.json").read_text()) for i in range(2)]
    single = json.loads((tmp_path / "alone.json").read_text())
    # One job of two processes, each with one local device, both devices in the mesh.
    assert [r["process_index"] for r in results] == [0, 1]
    assert {(r["process_count"], r["global_devices"], r["local_devices"]) for r in results} == {
        (2, 2, 1)
    }
    assert (single["process_count"], single["global_devices"]) == (1, 1)
    # The same steps as one process over the same global batches: same losses, same weights.
    for result in results:
        np.testing.assert_allclose(result["loss"], single["loss"], rtol=1e-6)
        for theirs, ours in zip(result["weights"], single["weights"], strict=True):
            np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-6)
    assert single["loss"][0] > 2 * single["loss"][-1], "it trained"
    # The train stage's JAX input (numpy arrays) is refused across processes: the plan's first
    # code change is feeding a tf.data.Dataset there too.
    assert single["numpy_error"] is None
    for result in results:
        assert "must be provided as a `tf.data.Dataset`" in result["numpy_error"]
