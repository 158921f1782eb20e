"""What a Kubeflow component runs in its container: pipeline parameters -> Params -> stage run().

KFP copies a component function's source into the pod, so the functions cifar10_kfp/pipeline.py
generates (from dvc.yaml's stage params) only pass their arguments here. Each step turns the flat
pipeline parameters (``train_epochs``) into the same validated Params the DVC stages read, calls
the stage's own ``run`` with the artifact paths, and publishes what the stage wrote as typed KFP
artifacts. Errors end the task like a DVC stage: one ``error:`` line and a non-zero exit.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cifar10_kfp.trials import FIXED_KEYS, check_trials
from pipeline.core import paths
from pipeline.core.errors import ParamsError
from pipeline.core.params import Params, flatten_params, load_params, validate_params
from pipeline.core.paths import REPO_ROOT
from stages.cli import call_stage

log = logging.getLogger("pipeline")

# Artifact metadata key: every params key (dotted) that shaped the artifact, upstream included,
# so train logs to MLflow the data.* and preprocess.* values the pipeline really used.
PARAMS_KEY = "params"
# Model artifact metadata key of the sweep's trainings: the trial's params overrides.
TRIAL_KEY = "sweep_trial"
# Metadata keys of the sweep's start artifact: its name, and its parent MLflow run.
SWEEP_KEY = "sweep"
PARENT_RUN_KEY = "parent_run_id"
# params.yaml sections, in file order; a pipeline parameter is SECTION_KEY (e.g. train_epochs).
SECTIONS = tuple(field.alias or name for name, field in Params.model_fields.items())
# How a null params value travels as a pipeline parameter, by the key's type. The schema rejects
# both as values (max_train_images >= 10, md5 is 32 hex digits), so they cannot mean anything else.
NULL_AS: dict[type, Any] = {int: 0, str: ""}
# Files of the train stage's reports that evaluate reads (dvc.yaml: reports/history.csv).


def dotted_name(flat: str) -> str:
    """``train_epochs`` -> ``train.epochs``; ParamsError for a name outside every section."""
    section, sep, key = flat.partition("_")
    if not sep or not key or section not in SECTIONS:
        raise ParamsError(
            f"{flat}: not a pipeline parameter (expected SECTION_KEY with SECTION one of "
            f"{', '.join(SECTIONS)}, e.g. train_epochs)"
        )
    return f"{section}.{key}"


def flat_name(dotted: str) -> str:
    """``train.epochs`` -> ``train_epochs``, the pipeline parameter's name."""
    return dotted.replace(".", "_", 1)


def nullable_type(dotted: str) -> type | None:
    """The type of a params key that may be null (``preprocess.max_train_images``: int), else None.

    KFP cannot pass null to a parameter, so such a key travels as its type's empty value.
    """
    section, _, key = dotted.partition(".")
    sections = {
        field.alias or name: field.annotation for name, field in Params.model_fields.items()
    }
    model = sections.get(section)
    if model is None or key not in model.model_fields:
        return None
    kinds = typing.get_args(model.model_fields[key].annotation)
    if type(None) not in kinds:
        return None
    (kind,) = (kind for kind in kinds if kind is not type(None))
    return kind


def to_pipeline_value(dotted: str, value: Any) -> Any:
    """A params value as a pipeline parameter value: null becomes "" or 0 (never valid values)."""
    kind = nullable_type(dotted)
    return NULL_AS[kind] if value is None and kind is not None else value


def from_pipeline_value(dotted: str, value: Any) -> Any:
    """The inverse of :func:`to_pipeline_value`."""
    kind = nullable_type(dotted)
    if kind is not None and value == NULL_AS[kind]:
        return None
    return _integral_floats_as_ints(value)


def _integral_floats_as_ints(value: Any) -> Any:
    """KFP hands every number over as a float (5000.0); the schema's ints are strict, and its
    floats take ints, so a whole number goes back to an int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral_floats_as_ints(item) for item in value]
    if isinstance(value, dict):  # a nested section's struct, e.g. model_reference
        return {key: _integral_floats_as_ints(item) for key, item in value.items()}
    return value


def pipeline_defaults(params: Params) -> dict[str, Any]:
    """Every params key as a pipeline parameter name -> its value (e.g. from params.yaml)."""
    return {
        flat_name(key): to_pipeline_value(key, value)
        for key, value in flatten_params(params).items()
    }


def stage_params(
    values: Mapping[str, Any], upstream: Mapping[str, Any] | None = None
) -> tuple[Params, dict[str, Any]]:
    """Validated Params from a component's parameters over its inputs' params; and those params.

    ``values`` are flat pipeline parameters, ``upstream`` dotted keys from the input artifacts'
    metadata. Keys nobody passed keep the image's params.yaml values (the stage does not read
    them): the schema holds no values of its own.
    """
    # Artifact metadata comes back from KFP with its numbers as floats, too.
    dotted = {key: _integral_floats_as_ints(value) for key, value in (upstream or {}).items()}
    for name, value in values.items():
        key = dotted_name(name)
        dotted[key] = from_pipeline_value(key, value)
    base = flatten_params(load_params(REPO_ROOT / "params.yaml"))
    nested: dict[str, dict[str, Any]] = {}
    for key, value in (base | dotted).items():
        section, _, field = key.partition(".")
        nested.setdefault(section, {})[field] = value
    return validate_params(nested, "pipeline parameters"), dotted


def upstream_params(*artifacts: Any) -> dict[str, Any]:
    """The params recorded in the metadata of the given input artifacts, merged in order."""
    merged: dict[str, Any] = {}
    for artifact in artifacts:
        merged.update(artifact.metadata.get(PARAMS_KEY) or {})
    return merged


def download_step(archive: Any, **values: Any) -> None:
    """Component download: fetch data.url into the ``archive`` Dataset and check data.md5."""
    from stages import download

    def work() -> None:
        params, used = stage_params(values)
        md5 = download.run(params, archive=Path(archive.path))
        archive.metadata.update({PARAMS_KEY: used, "md5": md5})

    call_stage(work)


def preprocess_step(archive: Any, prepared: Any, data_reports: Any, **values: Any) -> None:
    """Component preprocess: the archive -> the ``prepared`` Dataset folder (train/val/test.npz)."""
    from stages import preprocess

    def work() -> None:
        params, used = stage_params(values, upstream_params(archive))
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
    model: Any,
    train_reports: Any,
    train_metrics: Any,
    **values: Any,
) -> None:
    """Component train: the ``model`` folder (model.keras + run.json) and the training reports.

    run.json names the MLflow run, which evaluate reopens: both log to one run.
    """
    from pipeline.artifacts.run_info import read_run_info
    from stages import train

    def work() -> None:
        params, used = stage_params(values, upstream_params(archive, prepared))
        models_dir = Path(model.path)
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
        model.metadata.update(
            {
                PARAMS_KEY: used,
                "file": paths.MODEL_FILE,
                "framework": "keras",
                "mlflow_run_id": info.run_id,
                "mlflow_model_uri": info.model_uri,
            }
        )

    call_stage(work)


def train_trial_step(
    prepared: Any,
    archive: Any,
    model: Any,
    train_reports: Any,
    train_metrics: Any,
    sweep_trial: dict[str, Any],
    sweep_run: Any,
    **values: Any,
) -> None:
    """Component train_trial, one trial of the sweep: train's step with the trial's params
    overrides (dotted keys) over the run's values, its MLflow run tagged with the sweep's name
    and nested under the sweep's parent run (both from the ``sweep_run`` artifact's metadata).

    The trial travels on in the Model's metadata, for the step that picks the best one.
    """
    from pipeline.tracking.runs import PARENT_RUN_ENV

    def overridden() -> dict[str, Any]:
        # The train stage's own parameters, less what the sweep sets: submit checked the same.
        sweepable = {dotted_name(name) for name in values} - set(FIXED_KEYS)
        trial = dict(sweep_trial)
        check_trials([trial], sweepable, lambda overrides: overrides)
        trial_values = {flat_name(key): to_pipeline_value(key, v) for key, v in trial.items()}
        return values | trial_values | {"mlflow_sweep": sweep_run.metadata[SWEEP_KEY]}

    arguments = call_stage(overridden)
    os.environ[PARENT_RUN_ENV] = sweep_run.metadata[PARENT_RUN_KEY]
    model.metadata[TRIAL_KEY] = dict(sweep_trial)
    train_step(prepared, archive, model, train_reports, train_metrics, **arguments)


def evaluate_step(
    prepared: Any,
    model: Any,
    train_reports: Any,
    test_metrics: Any,
    confusion: Any,
    report: Any,
    evaluation: Any,
    **values: Any,
) -> None:
    """Component evaluate: test metrics, confusion matrix, HTML report, registry; never cached.

    Logs to the training run that the Model artifact's run.json names.
    """
    from stages import evaluate

    def work() -> None:
        params, used = stage_params(values, upstream_params(model))
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
