"""The sweep table (``make sweep``): which runs are a sweep's trials, and their order.

Ranking is checked on plain Trials; finding the trials, on a real SQLite store with runs logged
by MlflowClient (params and metrics only, no training: a second). The whole path, a DVC grid
run by two queue workers, is tests/test_sweep_dvc.py.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from pipeline.compare.sweeps import (
    BY_TEST,
    BY_VAL,
    KEPT_EPOCH,
    MACRO_F1,
    PARENT_ROLE,
    PARENT_TAG,
    ROLE_TAG,
    SWEEP_TAG,
    TEST_ACCURACY,
    VAL_ACCURACY,
    Trial,
    changed_params,
    check_sweep_name,
    rank,
    sweep_table,
)
from pipeline.core.errors import UsageError
from views.sweep import main


def trial(name: str, val: float | None, test: float | None, **params: str) -> Trial:
    return Trial(name, name, "cifar10-cnn", "FINISHED", params, val, test, None)


def names(trials: list[Trial]) -> list[str]:
    return [t.run_name for t in trials]


def test_ranked_by_test_accuracy_when_every_trial_has_one() -> None:
    # Validation would order them b, c, a: the test figure decides.
    trials = [trial("a", 0.30, 0.50), trial("b", 0.60, 0.40), trial("c", 0.45, 0.45)]
    ranked, by = rank(trials)
    assert (names(ranked), by) == (["a", "c", "b"], BY_TEST)


def test_ranked_by_validation_while_a_trial_has_no_test_figure() -> None:
    # c's evaluate has not run (or failed): test and validation figures are never mixed.
    trials = [trial("a", 0.30, 0.50), trial("b", 0.60, 0.40), trial("c", 0.45, None)]
    ranked, by = rank(trials)
    assert (names(ranked), by) == (["b", "c", "a"], BY_VAL)


def test_trials_without_figures_come_last_and_ties_are_stable() -> None:
    trials = [
        trial("running", None, None),
        trial("z", 0.5, None),
        trial("y", 0.5, None),
        trial("better-test", 0.5, 0.1),
    ]
    ranked, by = rank(trials)
    assert by == BY_VAL
    # Same val: the one with a test figure, then by name; the run with no figure at all last.
    assert names(ranked) == ["better-test", "y", "z", "running"]
    assert rank([]) == ([], BY_VAL)


def test_changed_params_are_those_that_differ() -> None:
    trials = [
        trial("a", 0.1, 0.1, **{"train.learning_rate": "0.001", "train.epochs": "1"}),
        trial("b", 0.1, 0.1, **{"train.learning_rate": "0.002", "train.epochs": "1"}),
        trial("c", 0.1, 0.1, **{"train.learning_rate": "0.002", "train.epochs": "1",
                                "model.augment": "True"}),
    ]  # fmt: skip
    assert changed_params(trials) == ["model.augment", "train.learning_rate"]


@pytest.mark.parametrize("name", ["", "lr'grid", "a/b", " lead", "x\ny"])
def test_names_a_filter_could_not_quote_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match=r"^sweep name "):
        check_sweep_name(name)


# (run name, experiment, sweep tag, lr, val per epoch, kept epoch, test acc) of the store below.
RUNS = [
    ("lr-small", "cifar10-cnn", "lr-grid", "0.0005", [0.20, 0.30], 2, 0.31),
    # restore_best kept epoch 1: its val (0.55) is the trial's, not the last epoch's (0.25).
    ("lr-mid", "cifar10-cnn", "lr-grid", "0.001", [0.55, 0.25], 1, 0.52),
    ("lr-big", "other-exp", "lr-grid", "0.002", [0.40, 0.42], 2, 0.40),
    ("elsewhere", "cifar10-cnn", "other-grid", "0.003", [0.90, 0.95], 2, 0.99),
    ("untagged", "cifar10-cnn", None, "0.004", [0.90, 0.95], 2, 0.99),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite store holding RUNS, plus two parent runs and a deleted run tagged lr-grid."""
    folder = tmp_path_factory.mktemp("sweep-store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiments = {
        name: client.create_experiment(name, (folder / name).as_uri())
        for name in ("cifar10-cnn", "other-exp")
    }
    parent = client.create_run(experiments["cifar10-cnn"], tags={SWEEP_TAG: "lr-grid"})
    for name, experiment, sweep, rate, vals, kept, test in RUNS:
        tags = {PARENT_TAG: parent.info.run_id} if name == "lr-mid" else {}
        if sweep:
            tags[SWEEP_TAG] = sweep
        run = client.create_run(experiments[experiment], run_name=name, tags=tags)
        run_id = run.info.run_id
        client.log_param(run_id, "train.learning_rate", rate)
        client.log_param(run_id, "train.epochs", "2")
        for epoch, val in enumerate(vals, start=1):
            client.log_metric(run_id, VAL_ACCURACY, val, step=epoch)
        client.log_metric(run_id, KEPT_EPOCH, kept)
        client.log_metric(run_id, TEST_ACCURACY, test)
        client.log_metric(run_id, MACRO_F1, test - 0.01)
        client.set_terminated(run_id)
    # A parent that no trial is nested under yet: the Kubeflow sweep's, as it starts.
    client.create_run(
        experiments["cifar10-cnn"], tags={SWEEP_TAG: "lr-grid", ROLE_TAG: PARENT_ROLE}
    )
    deleted = client.create_run(experiments["cifar10-cnn"], tags={SWEEP_TAG: "lr-grid"})
    client.log_metric(deleted.info.run_id, TEST_ACCURACY, 0.99)
    client.delete_run(deleted.info.run_id)
    return uri


def test_the_sweep_is_its_tagged_trainings_in_every_experiment(store: str) -> None:
    table = sweep_table(mlflow.MlflowClient(store), "lr-grid")
    # Not the other sweep, the untagged run, the parents (no training) nor the deleted run.
    assert names(table.trials) == ["lr-mid", "lr-big", "lr-small"]
    assert table.ranked_by == BY_TEST
    assert [t.experiment for t in table.trials] == ["cifar10-cnn", "other-exp", "cifar10-cnn"]
    assert [t.val_accuracy for t in table.trials] == [0.55, 0.42, 0.30]
    assert table.trials[0].macro_f1 == pytest.approx(0.51)
    assert table.changed == ["train.learning_rate"]
    assert sweep_table(mlflow.MlflowClient(store), "no-such-sweep").trials == []


def test_command_prints_the_table_best_first(
    store: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert main(["lr-grid"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "sweep lr-grid: 3 trials, best first by test accuracy"
    assert lines[1].split() == [
        "#", "run", "experiment", "status", "val_acc", "test_acc", "macro_f1",
        "train.learning_rate",
    ]  # fmt: skip
    assert [line.split()[1] for line in lines[2:]] == ["lr-mid", "lr-big", "lr-small"]
    assert lines[2].split() == [
        "1", "lr-mid", "cifar10-cnn", "FINISHED", "0.5500", "0.5200", "0.5100", "0.001",
    ]  # fmt: skip


def test_command_errors_in_one_line(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert main(["nothing"]) == 1
    assert capsys.readouterr().err == (
        f"error: no run tagged sweep=nothing in {store}: train with -S mlflow.sweep=nothing\n"
    )
    assert main([""]) == 2
    assert capsys.readouterr().err == "error: name the sweep: make sweep SWEEP=NAME\n"
    assert main(["it's"]) == 2
    assert capsys.readouterr().err.startswith('error: sweep name "it\'s": must be')
    # A store that does not exist is named, and not created by reading it.
    missing = tmp_path / "none" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{missing}")
    assert main(["lr-grid"]) == 1
    assert capsys.readouterr().err == (
        f"error: no MLflow store at {missing}: nothing was trained there yet\n"
    )
    assert not missing.parent.exists()
