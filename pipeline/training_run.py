"""One tracked training: the MLflow run around ``training.fit`` and the stage's outputs."""

from __future__ import annotations

import contextlib
import csv
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import keras

from pipeline import backend
from pipeline.atomic import atomic_path, write_json, write_text
from pipeline.checkpoints import TrainingCheckpoint, checkpoint_key
from pipeline.checksums import files_md5
from pipeline.errors import PipelineError
from pipeline.lineage import lineage_tags
from pipeline.model import model_summary
from pipeline.params import Params, flatten_params
from pipeline.paths import REPO_ROOT
from pipeline.run_info import RunInfo, write_run_info
from pipeline.tracking import log_keras_model, prepare_tracking, tracking_uri, use_experiment
from pipeline.training import (
    BEST_MONITOR,
    EpochRow,
    fit,
    load_prepared,
    resolve_mixed_precision,
)

if TYPE_CHECKING:
    from mlflow import ActiveRun

log = logging.getLogger("pipeline")

HISTORY_COLUMNS = [
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "seconds",
    "images_per_s",
]
# MLflow metric names of the per-epoch history columns (epoch itself is the step).
EPOCH_METRICS = {
    "loss": "loss",
    "accuracy": "accuracy",
    "val_loss": "val_loss",
    "val_accuracy": "val_accuracy",
    "seconds": "epoch_seconds",
    "images_per_s": "images_per_s",
}


@dataclass
class TrainOutputs:
    """Where the train stage writes."""

    models_dir: Path
    reports_dir: Path

    @property
    def model(self) -> Path:
        return self.models_dir / "model.keras"

    @property
    def run_info(self) -> Path:
        return self.models_dir / "run.json"


def run_training(
    params: Params,
    prepared_dir: Path,
    outputs: TrainOutputs,
    checkpoints_dir: Path,
    raw_archive: Path,
) -> dict[str, float]:
    """Train from params inside one MLflow run, write the stage outputs, return final metrics.

    Resumes an interrupted training (and its MLflow run) from its checkpoint; under
    ``mlflow run`` it logs to the run that ``MLFLOW_RUN_ID`` names instead of opening another.
    """
    import mlflow

    # First: train.device=gpu without a GPU must fail before any run, store or output exists.
    backend.select_device(params.train.device, params.train.deterministic)
    data = load_prepared(prepared_dir)
    uri = prepare_tracking()  # a dead tracking server fails here, before any training
    data_md5 = files_md5(data.files)
    key = checkpoint_key(params.model_dump(include={"model", "train"}), data_md5)
    checkpoint = TrainingCheckpoint(checkpoints_dir / key)
    resume = checkpoint.load()
    run_id = os.environ.get("MLFLOW_RUN_ID") or (resume.run_id if resume else None)

    with _tracking_failures(uri, checkpoint, params.train.epochs):
        experiment_id = use_experiment(params.mlflow.experiment_name)
        with _open_run(run_id, experiment_id) as run:
            # Seed only now: MLflow draws the run name from Python's `random`, and seeding
            # before start_run would give every run the same name.
            backend.configure_determinism(params.train.seed, params.train.deterministic)
            mixed_precision = resolve_mixed_precision(params.train.mixed_precision)
            keras.mixed_precision.set_global_policy(
                "mixed_float16" if mixed_precision else "float32"
            )
            mlflow.log_params(flatten_params(params))
            mlflow.set_tags(lineage_tags(REPO_ROOT, raw_archive, data_md5, mixed_precision))
            model, history = fit(
                data,
                params.model,
                params.train,
                checkpoint,
                run.info.run_id,
                resume,
                log_epoch=_log_epoch_metrics,
            )
            final = final_metrics(history, params.train.restore_best)
            mlflow.log_metrics({f"final_{name}": value for name, value in final.items()})
            summary = model_summary(model)
            mlflow.log_text(summary, "model_summary.txt")
            model_uri = log_keras_model(model)
            _write_outputs(outputs, model, history, final, summary)
            write_run_info(
                outputs.run_info,
                RunInfo(run.info.run_id, experiment_id, model_uri, tracking_uri(), data.classes),
            )
    checkpoint.remove()
    log.info("MLflow run %s finished; model at %s", run.info.run_id, outputs.model)
    return final


@contextlib.contextmanager
def _open_run(run_id: str | None, experiment_id: str) -> Iterator[ActiveRun]:
    """``mlflow.start_run`` whose closing, when the body failed, cannot hide why it failed.

    The body may fail because the tracking server went away; marking the run FAILED then fails
    too, and that second error must not replace the first.
    """
    import mlflow

    run = mlflow.start_run(run_id=run_id, experiment_id=experiment_id)
    try:
        yield run
    except BaseException:
        with contextlib.suppress(Exception):
            mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")


@contextlib.contextmanager
def _tracking_failures(uri: str, checkpoint: TrainingCheckpoint, epochs: int) -> Iterator[None]:
    """An MLflow failure mid-training (server gone, access refused) becomes one clear line.

    MLflow has already retried (MLFLOW_HTTP_REQUEST_MAX_RETRIES) by then. What was logged
    stays in the run, and the checkpoint lets a rerun resume into that same run.
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        state = checkpoint.load()
        where = (
            f"after epoch {state.epochs_done} of {epochs}; the epochs logged so far stay in run "
            f"{state.run_id} and rerunning the train stage resumes it"
            if state
            else "before the first epoch was checkpointed"
        )
        message = " ".join(str(exc).split())
        raise PipelineError(f"MLflow tracking at {uri} failed {where}: {message}") from None


def final_metrics(history: list[EpochRow], restore_best: bool) -> dict[str, float]:
    """Metrics of the epoch whose weights were kept, plus timing over the whole training."""
    kept = max(history, key=lambda row: row[BEST_MONITOR]) if restore_best else history[-1]
    return {
        "epoch": kept["epoch"],
        "loss": kept["loss"],
        "accuracy": kept["accuracy"],
        "val_loss": kept["val_loss"],
        "val_accuracy": kept["val_accuracy"],
        "train_seconds": sum(row["seconds"] for row in history),
        "images_per_s": sum(row["images_per_s"] for row in history) / len(history),
    }


def _log_epoch_metrics(row: EpochRow) -> None:
    import mlflow

    metrics = {name: row[column] for column, name in EPOCH_METRICS.items() if column in row}
    mlflow.log_metrics(metrics, step=int(row["epoch"]))


def _write_outputs(
    outputs: TrainOutputs,
    model: keras.Model,
    history: list[EpochRow],
    final: dict[str, float],
    summary: str,
) -> None:
    # Keras insists on the .keras suffix, so the temp file keeps it.
    outputs.models_dir.mkdir(parents=True, exist_ok=True)
    partial = outputs.model.with_name(f".{outputs.model.stem}.partial.keras")
    try:
        model.save(partial)
        os.replace(partial, outputs.model)
    finally:
        partial.unlink(missing_ok=True)
    with atomic_path(outputs.reports_dir / "history.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, HISTORY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    write_json(outputs.reports_dir / "train_metrics.json", final)
    write_text(outputs.reports_dir / "model_summary.txt", summary)
