"""A sweep trial's MLflow run name: the sweep, the trial's number in it, and its values.

``lr-grid 2: lr=0.003`` says at a glance what DVC's random ``filmy-geum`` did not:
which sweep the run belongs to and what it tried. The DVC experiment's own name stays findable
in the run's ``dvc.experiment`` tag (pipeline/tracking/lineage.py). The usual sweep params go
by their short names, as MLflow's run name column is 190 px wide (about 26 characters); the
run's params hold the full names.

The number is the run's place among the sweep's runs in its experiment by start time. The train
stage tags a run with its sweep as it creates it, so a trial sees every trial that started before
it; only two created within the same few milliseconds could share a number. Their values still
tell them apart: the name is a label, never a key.
"""

from __future__ import annotations

from typing import Any

from pipeline.tracking.headline import UNKNOWN_CHANGES, describe_changes
from pipeline.tracking.runs import PARENT_ROLE, ROLE_TAG, SWEEP_TAG

# Short names of the params sweeps vary most; any other keeps its name without the section.
SHORT_NAMES = {
    "learning_rate": "lr",
    "batch_size": "bs",
    "weight_decay": "wd",
    "label_smoothing": "ls",
    "momentum": "mom",
}
# Enough for any sweep one would read in the UI; a bigger one still counts up to here.
MAX_COUNTED = 10_000


def trial_name(sweep: str, number: int, changes: dict[str, Any] | None) -> str:
    """``lr-grid 2: lr=0.003``; just ``lr-grid 2`` when the values are unknown."""
    values = describe_changes(changes)
    if values == UNKNOWN_CHANGES:
        return f"{sweep} {number}"
    short = []
    for pair in values.split(", ") if changes else [values]:
        key, sep, value = pair.partition("=")
        short.append(f"{SHORT_NAMES.get(key, key)}{sep}{value}")
    return f"{sweep} {number}: {', '.join(short)}"


def trial_number(client: Any, experiment_id: str, sweep: str, run_id: str) -> int:
    """1 + how many trials of ``sweep`` in ``experiment_id`` started before run ``run_id``.

    A Kubeflow sweep's parent run carries the sweep tag too, and started first: it is no trial.

    Runs that started in the same millisecond are ordered by run id. The sweep name passed the
    rules of ``mlflow.sweep`` (no quotes), so it is safe in the filter string.
    """
    own = client.get_run(run_id).info
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{sweep}'", max_results=MAX_COUNTED
    )
    before = [
        run
        for run in runs
        if run.data.tags.get(ROLE_TAG) != PARENT_ROLE
        and (run.info.start_time, run.info.run_id) < (own.start_time, own.run_id)
    ]
    return len(before) + 1
