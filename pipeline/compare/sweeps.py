"""Sweeps in MLflow: the trials of one sweep are the training runs tagged ``sweep=<name>``.

``mlflow.sweep`` in params.yaml (null by default) names the sweep a training belongs to; the
train stage then tags its run with it, so a grid queued with ``dvc exp run --queue -S
mlflow.sweep=NAME -S 'train.learning_rate=...'`` lands in the store as one group the UI can
filter on (``tags.sweep = 'NAME'``; the tag's name is ``pipeline.tracking.runs.SWEEP_TAG``).
This module is the one reader of it:
:func:`sweep_table` finds a sweep's trials in every experiment of a store and ranks them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.errors import UsageError
from pipeline.core.params import MLFLOW_NAME
from pipeline.tracking import metric_names
from pipeline.tracking.runs import PARENT_ROLE, PARENT_RUN_TAG, ROLE_TAG, SWEEP_TAG

# MLflow's own tag on a nested run: a sweep's parent run (if any) is not one of its trials.
PARENT_TAG = PARENT_RUN_TAG
VAL_ACCURACY = metric_names.EPOCH["val_accuracy"]
TEST_ACCURACY = metric_names.TEST_ACCURACY
MACRO_F1 = metric_names.test("macro_f1")
KEPT_EPOCH = metric_names.final("epoch")
# What the table ranks by: test accuracy when every trial has one, else validation accuracy.
BY_TEST = "test accuracy"
BY_VAL = "validation accuracy"
PAGE = 1000


@dataclass(frozen=True)
class Trial:
    """One training run of a sweep, with the figures the table compares."""

    run_id: str
    run_name: str
    experiment: str
    status: str
    params: dict[str, str]
    # Validation accuracy of the epoch whose weights were kept (final/epoch), not of the last
    # epoch: with train.restore_best they differ.
    val_accuracy: float | None
    test_accuracy: float | None
    macro_f1: float | None


@dataclass(frozen=True)
class SweepTable:
    """A sweep's trials, best first, and the params that tell them apart."""

    sweep: str
    ranked_by: str
    changed: list[str]
    trials: list[Trial] = field(default_factory=list)


def check_sweep_name(name: str) -> str:
    """``name`` if it can be a sweep (the rules of mlflow.sweep), else UsageError in one line.

    The name goes into a search filter between quotes, which the rules keep out.
    """
    if not name or not re.fullmatch(MLFLOW_NAME, name) or name != name.strip():
        raise UsageError(
            f"sweep name {name!r}: must be non-empty, without / : quotes, backslashes or "
            "control characters, nor start or end with a space (the rules of mlflow.sweep)"
        )
    return name


def rank(trials: Iterable[Trial]) -> tuple[list[Trial], str]:
    """``trials`` best first, and what they were ranked by.

    By test accuracy when every trial has one (all were evaluated), else by validation accuracy
    for all: a test figure and a validation figure are not compared with each other. A trial
    without the ranking figure (failed, still running) comes last; ties go to the other
    accuracy, then to the run name, so the order is the same on every call.
    """
    trials = list(trials)
    by_test = bool(trials) and all(trial.test_accuracy is not None for trial in trials)

    def key(trial: Trial) -> tuple[bool, float, float, str]:
        first, second = (
            (trial.test_accuracy, trial.val_accuracy)
            if by_test
            else (trial.val_accuracy, trial.test_accuracy)
        )
        return (
            first is None,
            -(first if first is not None else 0.0),
            -(second if second is not None else 0.0),
            trial.run_name,
        )

    return sorted(trials, key=key), BY_TEST if by_test else BY_VAL


def changed_params(trials: Sequence[Trial]) -> list[str]:
    """The params (dotted names) whose values are not the same in every trial, sorted."""
    names = sorted({name for trial in trials for name in trial.params})
    return [name for name in names if len({trial.params.get(name) for trial in trials}) > 1]


def sweep_runs(client: Any, sweep: str) -> list[Any]:
    """Every active run tagged ``sweep=<sweep>``, in every active experiment of the store.

    A parent run (tagged ``sweep.role=parent``, or the parent of another run of the sweep) is
    left out: it holds no training.
    """
    check_sweep_name(sweep)
    experiment_ids = [
        experiment.experiment_id for experiment in _all(client.search_experiments, PAGE)
    ]
    if not experiment_ids:
        return []
    runs = list(
        _all(
            client.search_runs,
            PAGE,
            experiment_ids=experiment_ids,
            filter_string=f"tags.`{SWEEP_TAG}` = '{sweep}'",
        )
    )
    parents = {run.data.tags.get(PARENT_TAG) for run in runs}
    return [
        run
        for run in runs
        if run.info.run_id not in parents and run.data.tags.get(ROLE_TAG) != PARENT_ROLE
    ]


def trial_of(client: Any, run: Any, experiment_names: dict[str, str]) -> Trial:
    """The Trial of MLflow run ``run`` (one metric-history call, for the kept epoch's val)."""
    metrics = run.data.metrics
    return Trial(
        run_id=run.info.run_id,
        run_name=run.info.run_name or run.info.run_id,
        experiment=experiment_names.get(run.info.experiment_id, run.info.experiment_id),
        status=run.info.status,
        params=dict(run.data.params),
        val_accuracy=_kept_val_accuracy(client, run),
        test_accuracy=metrics.get(TEST_ACCURACY),
        macro_f1=metrics.get(MACRO_F1),
    )


def sweep_table(client: Any, sweep: str) -> SweepTable:
    """The trials of sweep ``sweep`` in the store ``client`` reads, best first (see :func:`rank`).

    An empty table when no run carries the tag.
    """
    runs = sweep_runs(client, sweep)
    names = {
        experiment_id: client.get_experiment(experiment_id).name
        for experiment_id in {run.info.experiment_id for run in runs}
    }
    trials, ranked_by = rank(trial_of(client, run, names) for run in runs)
    return SweepTable(sweep, ranked_by, changed_params(trials), trials)


def format_table(table: SweepTable) -> str:
    """The table as aligned text: one line per trial, best first, the changed params last."""
    header = ["#", "run", "experiment", "status", "val_acc", "test_acc", "macro_f1"]
    header += table.changed
    rows = [
        [
            str(place),
            trial.run_name,
            trial.experiment,
            trial.status,
            _figure(trial.val_accuracy),
            _figure(trial.test_accuracy),
            _figure(trial.macro_f1),
            *(trial.params.get(name, "") for name in table.changed),
        ]
        for place, trial in enumerate(table.trials, start=1)
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        f"sweep {table.sweep}: {len(table.trials)} trials, best first by {table.ranked_by}",
        *("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
          for row in [header, *rows]),
    ]  # fmt: skip
    return "\n".join(lines)


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _kept_val_accuracy(client: Any, run: Any) -> float | None:
    latest = run.data.metrics.get(VAL_ACCURACY)
    kept = run.data.metrics.get(KEPT_EPOCH)
    if latest is None or kept is None:
        return latest
    history = client.get_metric_history(run.info.run_id, VAL_ACCURACY)
    # Logged with step = epoch; the last value logged at that step (a resumed run logs again).
    at_kept = [point for point in history if point.step == int(kept)]
    return max(at_kept, key=lambda point: point.timestamp).value if at_kept else latest


def _all(search: Any, page: int, **kwargs: Any) -> Iterable[Any]:
    """Every result of an MLflow ``search_*`` call, page by page."""
    token = None
    while True:
        results = search(max_results=page, page_token=token, **kwargs)
        yield from results
        token = results.token
        if not token:
            return
