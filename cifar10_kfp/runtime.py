"""What the stage components run in their pods: params sections -> Params -> the stage's run().

Each step reads its params sections (JSON text, :mod:`cifar10_kfp.sections`) over those its
input artifacts were made with, validates them once with the params schema, calls the stage's
own ``run`` with the artifact paths, and publishes what the stage wrote as typed KFP artifacts.
Errors end the task like a DVC stage: one ``error:`` line and a non-zero exit.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cifar10_kfp.sections import from_arguments, validated, with_overrides
from pipeline.core import paths
from pipeline.core.params import Params
from stages.cli import call_stage

# Artifact metadata key: every params section (JSON text) that shaped the artifact, upstream
# included, so train logs to MLflow the data and preprocess values the pipeline really used.
PARAMS_KEY = "params"
# Model artifact metadata key of the sweep's trainings: the trial's params overrides (JSON text).
TRIAL_KEY = "sweep_trial"
# Metadata keys of the sweep's start artifact: its name, and its parent MLflow run.
SWEEP_KEY = "sweep"
PARENT_RUN_KEY = "parent_run_id"


def stage_params(
    given: Mapping[str, str], *inputs: Any, overrides: Mapping[str, Any] | None = None
) -> tuple[Params, str]:
    """Validated Params from the component's sections over its ``inputs``' ones, with
    ``overrides`` (dotted keys) on top; and those sections as JSON text, for the outputs."""
    sections: dict[str, Any] = {}
    for artifact in inputs:
        sections.update(json.loads(artifact.metadata.get(PARAMS_KEY) or "{}"))
    sections = with_overrides(sections | from_arguments(given), overrides or {})
    return validated(sections), json.dumps(sections)


def download_step(archive: Any, **given: str) -> None:
    """Component download: fetch data.url into the ``archive`` Dataset and check data.md5."""
    from stages import download

    def work() -> None:
        params, used = stage_params(given)
        md5 = download.run(params, archive=Path(archive.path))
        archive.metadata.update({PARAMS_KEY: used, "md5": md5})

    call_stage(work)


def preprocess_step(archive: Any, prepared: Any, data_reports: Any, **given: str) -> None:
    """Component preprocess: the archive -> the ``prepared`` Dataset folder (train/val/test.npz)."""
    from stages import preprocess

    def work() -> None:
        params, used = stage_params(given, archive)
        reports = Path(data_reports.path)
        preprocess.run(
            params,
            archive=Path(archive.path),
            prepared_dir=Path(prepared.path),
            reports_dir=reports,
        )
        summary = json.loads((reports / paths.DATA_SUMMARY_FILE).read_text(encoding="utf-8"))
        images = {split: counts["total"] for split, counts in summary.items()}
        prepared.metadata.update({PARAMS_KEY: used, "images": images})

    call_stage(work)


def train_step(
    prepared: Any,
    archive: Any,
    keras_model: Any,
    train_reports: Any,
    train_metrics: Any,
    device: str,
    trial: str | None = None,
    sweep_run: Any = None,
    **given: str,
) -> None:
    """Component train (and a sweep's train_trial): the ``keras_model`` folder (model.keras +
    run.json), the training reports and final metrics, on ``device`` (set by the pipeline).

    run.json names the MLflow run, which evaluate reopens: both log to one run. A sweep's
    ``trial`` (overrides, JSON text) applies over the run's values; its run is tagged with the
    sweep's name and nested under the sweep's parent run (the ``sweep_run`` artifact).
    """
    from pipeline.artifacts.run_info import read_run_info
    from stages import train

    def work() -> None:
        overrides: dict[str, Any] = {}
        if trial is not None:
            from cifar10_kfp.trials import trial_overrides
            from pipeline.tracking.runs import PARENT_RUN_ENV

            overrides = trial_overrides(trial) | {"mlflow.sweep": sweep_run.metadata[SWEEP_KEY]}
            os.environ[PARENT_RUN_ENV] = sweep_run.metadata[PARENT_RUN_KEY]
            keras_model.metadata[TRIAL_KEY] = trial
        # Last: the pipeline's device goes with its GPU request, whatever a trial says.
        overrides["train.device"] = device
        params, used = stage_params(given, archive, prepared, overrides=overrides)
        models_dir = Path(keras_model.path)
        # A pod has no disk that outlives it: checkpoints serve only retries inside this task.
        with tempfile.TemporaryDirectory(prefix="checkpoints-") as checkpoints:
            final = train.run(
                params,
                prepared_dir=Path(prepared.path),
                models_dir=models_dir,
                reports_dir=Path(train_reports.path),
                checkpoints_dir=Path(checkpoints),
                archive=Path(archive.path),
            )
        log_metrics(train_metrics, final)
        info = read_run_info(models_dir)
        keras_model.metadata.update(
            {
                PARAMS_KEY: used,
                "file": paths.MODEL_FILE,
                "framework": "keras",
                "mlflow_run_id": info.run_id,
                "mlflow_model_uri": info.model_uri,
            }
        )

    call_stage(work)


def evaluate_step(
    prepared: Any,
    model: Any,
    train_reports: Any,
    test_metrics: Any,
    confusion: Any,
    report: Any,
    evaluation: Any,
    **given: str,
) -> None:
    """Component evaluate: test metrics, confusion matrix, HTML report, registry; never cached.

    Logs to the training run that the Model artifact's run.json names.
    """
    from stages import evaluate

    def work() -> None:
        params, used = stage_params(given, model)
        reports = Path(evaluation.path)
        reports.mkdir(parents=True, exist_ok=True)
        # The evaluate stage draws the training curves from reports/history.csv, as under DVC.
        shutil.copyfile(Path(train_reports.path) / paths.HISTORY_FILE, reports / paths.HISTORY_FILE)
        evaluate.run(
            params,
            prepared_dir=Path(prepared.path),
            models_dir=Path(model.path),
            reports_dir=reports,
        )
        publish_evaluation(reports, test_metrics, confusion, report)
        registry = json.loads(
            (reports / paths.EVALUATE_FILES["registry"]).read_text(encoding="utf-8")
        )
        evaluation.metadata.update({PARAMS_KEY: used, "registry": registry})

    call_stage(work)


def publish_evaluation(reports: Path, test_metrics: Any, confusion: Any, report: Any) -> None:
    """The evaluate stage's files as KFP Metrics, ClassificationMetrics and HTML artifacts."""
    import pandas as pd

    metrics = json.loads((reports / paths.EVALUATE_FILES["metrics"]).read_text(encoding="utf-8"))
    log_metrics(test_metrics, {k: v for k, v in metrics.items() if isinstance(v, int | float)})
    matrix = pd.read_csv(reports / paths.EVALUATE_FILES["confusion_csv"], index_col=0)
    confusion.log_confusion_matrix(list(matrix.columns), matrix.to_numpy().tolist())
    shutil.copyfile(reports / paths.EVALUATE_FILES["confusion_csv"], confusion.path)
    shutil.copyfile(reports / paths.EVALUATE_FILES["html"], report.path)


def log_metrics(artifact: Any, metrics: Mapping[str, float]) -> None:
    """Log ``metrics`` to a Metrics artifact, and write them as JSON to its file as well.

    The UI reads the metadata; the file exists so that the artifact does too (kfp.local treats a
    cached output whose file is missing as a cache miss, and would retrain).
    """
    for name, value in metrics.items():
        artifact.log_metric(name, value)
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(json.dumps(dict(metrics), indent=2) + "\n", encoding="utf-8")
