"""What the sweep pipeline's own components run (cifar10_kfp.sweep): open, judge and close a sweep.

start: the sweep's parent MLflow run, which every trial's training run nests under. pick: the
best trial by validation accuracy, from the trainings' own artifacts (no MLflow needed), and a
copy of its model and reports for the evaluate component. finish: the sweep's table on the
parent run (:func:`pipeline.compare.sweeps.sweep_table`, with each trial's number and the
winner's test figures), the winner named in tags and params, then the parent run closed.
Errors end the task like a stage: one ``error:`` line and a non-zero exit.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cifar10_kfp.runtime import PARENT_RUN_KEY, SWEEP_KEY, TRIAL_KEY
from cifar10_kfp.sections import from_arguments
from cifar10_kfp.trials import best_trial
from pipeline.core import paths
from pipeline.core.errors import PipelineError
from stages.cli import call_stage

# Tags of the sweep's runs: the parent is a sweep run too (SWEEP_TAG), and says it is the parent;
# each trial gets its number in the trials list; the parent names the winner.
ROLE_TAG = "sweep.role"
TRIAL_TAG = "sweep.trial"
BEST_TRIAL_TAG = "sweep.best_trial"
BEST_RUN_TAG = "sweep.best_run_id"
TABLE_FILE = "sweep_table.json"
CSV_FILE = "sweep_table.csv"


def sweep_name(given: str | None) -> str:
    """The sweep's name: ``given`` (mlflow.sweep), else one made from the clock (UTC)."""
    from pipeline.compare.sweeps import check_sweep_name

    return check_sweep_name(given or time.strftime("sweep-%Y%m%d-%H%M%S", time.gmtime()))


def start_sweep_step(trials: list[str], mlflow_section: str, sweep_run: Any) -> None:
    """Component start_sweep: open the parent run in the mlflow section's experiment; its id
    and the sweep's name go in the ``sweep_run`` artifact's metadata (and file), which every
    trial and the closing read."""

    def work() -> None:
        import mlflow

        from pipeline.compare.sweeps import SWEEP_TAG
        from pipeline.tracking.runs import prepare_tracking, use_experiment

        prepare_tracking()
        (section,) = from_arguments({"mlflow": mlflow_section}).values()
        name = sweep_name(section.get("sweep"))
        client = mlflow.MlflowClient()
        experiment_id = use_experiment(section["experiment_name"])
        run = client.create_run(
            experiment_id, run_name=name, tags={SWEEP_TAG: name, ROLE_TAG: "parent"}
        )
        client.log_param(run.info.run_id, "sweep.trials", len(trials))
        overrides = [json.loads(trial) for trial in trials]
        client.log_text(run.info.run_id, json.dumps(overrides, indent=2), "sweep_trials.json")
        started = {SWEEP_KEY: name, PARENT_RUN_KEY: run.info.run_id}
        sweep_run.metadata.update(started)
        Path(sweep_run.path).parent.mkdir(parents=True, exist_ok=True)
        Path(sweep_run.path).write_text(json.dumps(started) + "\n", encoding="utf-8")

    call_stage(work)


def trial_results(models: Sequence[Any], reports: Sequence[Any], trials: list[str]) -> list[dict]:
    """One result per trial, in the trials' order: its run, params overrides, val figures, and
    the model and reports folders it wrote.

    Matched by MLflow run id (the model's run.json and the reports' train_metrics.json), not by
    list position, and to its trial by the overrides (JSON text) the model's metadata carries.
    """
    by_run: dict[str, Path] = {}
    for artifact in reports:
        folder = Path(artifact.path)
        metrics = json.loads((folder / paths.TRAIN_METRICS_FILE).read_text(encoding="utf-8"))
        by_run[metrics["mlflow_run_id"]] = folder
    results: list[dict | None] = [None] * len(trials)
    for model in models:
        run_id = model.metadata["mlflow_run_id"]
        trial = model.metadata[TRIAL_KEY]
        if trial not in trials or run_id not in by_run:
            raise PipelineError(f"training run {run_id}: no trial or reports of its own")
        number = trials.index(trial)
        folder = by_run[run_id]
        metrics = json.loads((folder / paths.TRAIN_METRICS_FILE).read_text(encoding="utf-8"))
        results[number] = {
            "trial": number,
            "run_id": run_id,
            "params": json.loads(trial),
            "val_accuracy": metrics["val_accuracy"],
            "val_loss": metrics["val_loss"],
            "epoch": metrics["epoch"],
            "model_dir": model.path,
            "model_metadata": dict(model.metadata),
            "reports_dir": str(folder),
        }
    missing = [number for number, result in enumerate(results) if result is None]
    if missing:
        raise PipelineError(f"trial {missing[0]} has no training")
    return [result for result in results if result is not None]


def pick_best_trial_step(
    models: Sequence[Any],
    train_reports: Sequence[Any],
    trials: list[str],
    best_model: Any,
    best_reports: Any,
    table: Any,
) -> None:
    """Component pick_best_trial: the best trial by validation accuracy, copied for evaluate."""

    def work() -> None:
        results = trial_results(models, train_reports, trials)
        try:
            best = best_trial(results)
        except ValueError as exc:
            raise PipelineError(str(exc)) from None
        winner = results[best]
        shutil.copytree(winner["model_dir"], best_model.path, dirs_exist_ok=True)
        shutil.copytree(winner["reports_dir"], best_reports.path, dirs_exist_ok=True)
        best_model.metadata.update(winner["model_metadata"] | {"sweep_trial_number": best})
        rows = [
            {key: result[key] for key in ("trial", "run_id", "params", "val_accuracy", "val_loss")}
            for result in results
        ]
        Path(table.path).parent.mkdir(parents=True, exist_ok=True)
        Path(table.path).write_text(
            json.dumps({"best_trial": best, "trials": rows}, indent=2) + "\n", encoding="utf-8"
        )
        table.metadata.update({"best_trial": best, "best_run_id": winner["run_id"]})

    call_stage(work)


def finish_sweep_step(
    sweep_run: Any,
    table: Any,
    test_metrics: Any,
    evaluation: Any,
    sweep_table: Any,
) -> None:
    """Component finish_sweep: the table and the winner on the parent run, which then ends."""

    def work() -> None:
        import mlflow

        from pipeline.compare.sweeps import sweep_table as ranked_table
        from pipeline.tracking.runs import prepare_tracking

        prepare_tracking()
        client = mlflow.MlflowClient()
        sweep, parent = sweep_run.metadata[SWEEP_KEY], sweep_run.metadata[PARENT_RUN_KEY]
        picked = json.loads(Path(table.path).read_text(encoding="utf-8"))
        best = picked["best_trial"]
        numbers = {row["run_id"]: row["trial"] for row in picked["trials"]}
        winner = picked["trials"][best]
        for run_id, number in numbers.items():
            client.set_tag(run_id, TRIAL_TAG, str(number))
        # The store's view of the sweep (the trial runs tagged sweep=<name>), best first.
        ranked = ranked_table(client, sweep)
        rows = []
        for trial in ranked.trials:
            if trial.run_id not in numbers:
                continue  # a run of an earlier sweep of the same name
            number = numbers[trial.run_id]
            rows.append(
                {
                    "trial": number,
                    "winner": number == best,
                    "run_id": trial.run_id,
                    "run_name": trial.run_name,
                    "params": json.dumps(picked["trials"][number]["params"], sort_keys=True),
                    "val_accuracy": trial.val_accuracy,
                    "test_accuracy": trial.test_accuracy,
                }
            )
        test = {k: v for k, v in test_metrics.metadata.items() if isinstance(v, int | float)}
        registry = evaluation.metadata.get("registry") or {}
        client.set_tag(parent, BEST_TRIAL_TAG, str(best))
        client.set_tag(parent, BEST_RUN_TAG, winner["run_id"])
        for key, value in winner["params"].items():
            client.log_param(parent, f"best.{key}", value)
        client.log_metric(parent, "best/accuracy/val", winner["val_accuracy"])
        if _finite(test.get("accuracy")):
            client.log_metric(parent, "best/test/accuracy", test["accuracy"])
        if registry.get("version") is not None:
            client.set_tag(parent, "sweep.registered_version", str(registry["version"]))
        client.log_table(parent, data=_columns(rows), artifact_file=TABLE_FILE)
        client.log_text(parent, _csv(rows), CSV_FILE)
        client.set_terminated(parent, "FINISHED")
        Path(sweep_table.path).parent.mkdir(parents=True, exist_ok=True)
        Path(sweep_table.path).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        # The winner on the artifact's metadata too, where the KFP UI shows it.
        sweep_table.metadata.update({"best_trial": best, "best_run_id": winner["run_id"]})

    call_stage(work)


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    names = list(rows[0]) if rows else ["trial"]
    return {name: [row[name] for row in rows] for name in names}


def _csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
