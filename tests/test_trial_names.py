"""A sweep trial's run name (pipeline/train/trial_names.py): its sweep, number and values."""

from __future__ import annotations

from pathlib import Path

import mlflow

from pipeline.tracking.runs import PARENT_ROLE, ROLE_TAG, SWEEP_TAG
from pipeline.train.trial_names import trial_name, trial_number


def test_name_is_the_sweep_its_number_and_the_values_it_tried() -> None:
    changes = {"train.learning_rate": 0.003, "train.optimizer": "adam"}
    # Short names where sweeps vary most: MLflow's run name column shows about 26 characters.
    assert trial_name("lr-grid", 2, changes) == "lr-grid 2: lr=0.003, optimizer=adam"
    assert trial_name("bs", 1, {"train.batch_size": 25}) == "bs 1: bs=25"
    assert trial_name("lr-grid", 1, {}) == "lr-grid 1: the committed params"
    # Outside git nothing to compare with: the number alone, the values are in the params.
    assert trial_name("lr-grid", 3, None) == "lr-grid 3"


def test_number_counts_the_sweep_s_runs_that_started_before(tmp_path: Path) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("cifar10-cnn", str(tmp_path / "mlruns"))
    other = client.create_experiment("elsewhere", str(tmp_path / "mlruns-2"))

    def run(start: int, sweep: str | None, experiment_id: str = experiment) -> str:
        tags = {SWEEP_TAG: sweep} if sweep else {}
        return client.create_run(experiment_id, start_time=start, tags=tags).info.run_id

    # A Kubeflow sweep's parent run, tagged with the sweep, starts before its trials.
    parent = {SWEEP_TAG: "lr-grid", ROLE_TAG: PARENT_ROLE}
    client.create_run(experiment, start_time=500, tags=parent)
    first = run(1000, "lr-grid")
    run(1500, "another")  # another sweep, and
    run(1600, None)  # a run of no sweep do not count;
    run(1700, "lr-grid", other)  # nor does this sweep's name in another experiment.
    second = run(2000, "lr-grid")
    third = run(3000, "lr-grid")
    numbers = [trial_number(client, experiment, "lr-grid", r) for r in (third, first, second)]
    assert numbers == [3, 1, 2]
