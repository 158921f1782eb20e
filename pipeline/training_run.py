"""One tracked training: the MLflow run around ``training.fit`` and the stage's outputs."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import keras

from pipeline import backend, metric_names
from pipeline.atomic import atomic_path, write_json, write_text
from pipeline.checkpoints import TrainingCheckpoint, checkpoint_key
from pipeline.checksums import files_md5
from pipeline.datasets import SplitDataset, log_datasets, split_dataset
from pipeline.history import EpochRow, write_history
from pipeline.lineage import dvc_experiment, lineage_tags
from pipeline.model import model_summary
from pipeline.params import Params, flatten_params
from pipeline.paths import REPO_ROOT
from pipeline.run_info import RunInfo, write_run_info
from pipeline.serving import log_served_model, model_id
from pipeline.tracking import prepare_tracking, tracking_uri, use_experiment
from pipeline.training import (
    BEST_MONITOR,
    fit,
    load_prepared,
    resolve_mixed_precision,
)

log = logging.getLogger("pipeline")

# Final metrics measured on a split, for linking them to its dataset in MLflow.
FINAL_ON_SPLIT = {"train": ("train_loss", "train_accuracy"), "val": ("val_loss", "val_accuracy")}
# The key of reports/train_metrics.json that ties a DVC experiment row to its MLflow run.
RUN_ID_KEY = "mlflow_run_id"


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
    prepare_tracking()  # a dead tracking server fails here, before any training
    experiment_id = use_experiment(params.mlflow.experiment_name)

    data_md5 = files_md5(data.files)
    key = checkpoint_key(params.model_dump(include={"model", "train"}), data_md5)
    checkpoint = TrainingCheckpoint(checkpoints_dir / key)
    resume = checkpoint.load()
    run_id = os.environ.get("MLFLOW_RUN_ID") or (resume.run_id if resume else None)

    experiment = dvc_experiment()
    # A new run under `dvc exp run` is named after the DVC experiment; a resumed one keeps its name.
    run_name = experiment[0] if experiment and run_id is None else None
    with mlflow.start_run(
        run_id=run_id, experiment_id=experiment_id, run_name=run_name, log_system_metrics=True
    ) as run:
        # Seed only now: MLflow draws the run name from Python's `random`, and seeding before
        # start_run would give every run the same name.
        backend.configure_determinism(params.train.seed, params.train.deterministic)
        mixed_precision = resolve_mixed_precision(params.train.mixed_precision)
        keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
        mlflow.log_params(flatten_params(params))
        mlflow.set_tags(lineage_tags(REPO_ROOT, raw_archive, data_md5, mixed_precision))
        datasets = {
            "train": split_dataset("train", data.train, params.data.url),
            "val": split_dataset("val", data.val, params.data.url),
        }
        log_datasets(list(datasets.values()))
        model, history = fit(
            data,
            params.model,
            params.train,
            checkpoint,
            run.info.run_id,
            resume,
            log_epoch=_log_epoch_metrics,
        )
        summary = model_summary(model)
        mlflow.log_text(summary, "model_summary.txt")
        model_uri = log_served_model(model, data.classes)
        final = final_metrics(history, params.train.restore_best)
        _log_final_metrics(final, model_id(model_uri), datasets)
        _write_outputs(outputs, model, history, final | {RUN_ID_KEY: run.info.run_id}, summary)
        write_run_info(
            outputs.run_info,
            RunInfo(run.info.run_id, experiment_id, model_uri, tracking_uri(), data.classes),
        )
    checkpoint.remove()
    log.info("MLflow run %s finished; model at %s", run.info.run_id, outputs.model)
    return final


def final_metrics(history: list[EpochRow], restore_best: bool) -> dict[str, float]:
    """Metrics of the epoch whose weights were kept, plus timing over the whole training."""
    kept = max(history, key=lambda row: row[BEST_MONITOR]) if restore_best else history[-1]
    # Names unlike metrics.json's: `dvc exp show` gives a name found in two files its path.
    return {
        "val_accuracy": kept["val_accuracy"],
        "val_loss": kept["val_loss"],
        "train_accuracy": kept["accuracy"],
        "train_loss": kept["loss"],
        "epoch": kept["epoch"],
        "train_seconds": sum(row["seconds"] for row in history),
        "images_per_s": sum(row["images_per_s"] for row in history) / len(history),
    }


def _log_epoch_metrics(row: EpochRow) -> None:
    import mlflow

    metrics = {name: row[column] for column, name in metric_names.EPOCH.items() if column in row}
    mlflow.log_metrics(metrics, step=int(row["epoch"]))


def _log_final_metrics(
    final: dict[str, float], logged_model_id: str, datasets: dict[str, SplitDataset]
) -> None:
    """Log the final metrics, each linked to the logged model and the split it was measured on.

    The links are what the LoggedModel page shows as the datasets the model was trained on.
    """
    import mlflow

    on_split = {key for keys in FINAL_ON_SPLIT.values() for key in keys}
    for split, keys in FINAL_ON_SPLIT.items():
        mlflow.log_metrics(
            {metric_names.final(key): final[key] for key in keys},
            model_id=logged_model_id,
            dataset=datasets[split].dataset,
        )
    rest = {metric_names.final(key): value for key, value in final.items() if key not in on_split}
    mlflow.log_metrics(rest, model_id=logged_model_id)


def _write_outputs(
    outputs: TrainOutputs,
    model: keras.Model,
    history: list[EpochRow],
    final: dict[str, float | str],
    summary: str,
) -> None:
    # Keras insists on the .keras suffix, so the temp file keeps it.
    with atomic_path(outputs.model, suffix=".keras") as tmp:
        model.save(tmp)
    write_history(outputs.reports_dir / "history.csv", history)
    # Rounded: float32 noise digits make `dvc exp show` columns wide and hard to read.
    readable = {k: round(v, 4) if isinstance(v, float) else v for k, v in final.items()}
    write_json(outputs.reports_dir / "train_metrics.json", readable)
    write_text(outputs.reports_dir / "model_summary.txt", summary)
