"""One evaluation: test-set metrics, confusion matrix, report, and the Model Registry decision.

Order matters for failures: every metrics file is written before the registry is touched, so a
registry failure leaves valid metrics and a ``registry.json`` that says "failed", never success.
Everything is logged to the training run, which keeps its FINISHED status.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.artifacts.history import read_history
from pipeline.artifacts.run_info import RunInfo, read_run_info
from pipeline.core import paths
from pipeline.core.atomic import atomic_path, check_writable, write_json
from pipeline.core.checksums import file_md5
from pipeline.core.errors import PipelineError
from pipeline.core.params import Params
from pipeline.core.redact import redact
from pipeline.data.checks import SUMMARY_TAG
from pipeline.evaluate.registry import (
    failure_record,
    mlflow_errors,
    register_model_version,
    version_lineage,
)
from pipeline.evaluate.report import (
    build_sections,
    plot_confusion_matrix,
    plot_misclassified,
    plot_training_curves,
    write_report,
)
from pipeline.evaluate.scoring import (
    Evaluation,
    check_classes,
    evaluate_predictions,
    load_test_split,
    load_trained_model,
    metrics_dict,
    mlflow_metrics,
    most_confident_mistakes,
    most_confused_pairs,
    per_class_frame,
    predictions_frame,
)
from pipeline.evaluate.tta import (
    flip_tta_accuracy,
    mirrored_probabilities,
    predict_probabilities,
    translate_tta_accuracy,
)
from pipeline.tracking.datasets import ROWS_TAG, SplitDataset, log_datasets, split_dataset
from pipeline.tracking.headline import (
    DESCRIPTION_TAG,
    changed_params,
    committed_params,
    headline,
)
from pipeline.tracking.runs import prepare_tracking
from pipeline.tracking.serving import model_id

log = logging.getLogger("pipeline")

OUTPUTS = paths.EVALUATE_FILES
ARTIFACT_PATH = "report"


def run_evaluation(params: Params, prepared_dir: Path, models_dir: Path, reports_dir: Path) -> None:
    """Evaluate the trained model on the test split, write and log the reports, then register.

    Raises PipelineError for missing or mismatched inputs and for tracking/registry failures.
    """
    out = {key: reports_dir / name for key, name in OUTPUTS.items()}
    # registry.json is persistent (dvc.yaml), so a success from an earlier run would survive a
    # failure of this one: until this run registers, the file says it did not.
    name = params.mlflow.registered_model_name
    # A read-only reports/ fails here in one line, before any scoring.
    check_writable(reports_dir)
    with _output_failures(reports_dir):
        write_json(
            out["registry"], failure_record(name, "the evaluate stage stopped before registering")
        )
    run_info = read_run_info(models_dir)
    test, classes = load_test_split(prepared_dir)
    x, y = test.x, test.y.astype(np.int64)
    check_classes(classes, run_info.classes)
    history = read_history(reports_dir / paths.HISTORY_FILE)
    uri = prepare_tracking()
    run = _training_run(run_info, uri)
    run_tags = dict(run.data.tags)
    model_path = models_dir / paths.MODEL_FILE
    check_model_of_run(model_path, run_info)
    model = load_trained_model(model_path, len(classes))
    # Again: a file replaced while it loaded would be scored as the run's model all the same.
    check_model_of_run(model_path, run_info)

    probabilities = predict_probabilities(model, x)
    evaluation = evaluate_predictions(y, probabilities, classes)
    # The mirror images' pass once, whichever TTA scorings are on.
    tta_on = params.evaluate.flip_tta or params.evaluate.translate_tta
    mirrored = mirrored_probabilities(model, x) if tta_on else None
    if params.evaluate.flip_tta:
        tta = flip_tta_accuracy(model, x, y, probabilities, mirrored)
        evaluation = dataclasses.replace(evaluation, accuracy_flip_tta=tta)
        log.info("test accuracy with flip test-time augmentation %.4f", tta)
    if params.evaluate.translate_tta:
        tta = translate_tta_accuracy(model, x, y, probabilities, mirrored)
        evaluation = dataclasses.replace(evaluation, accuracy_translate_tta=tta)
        log.info("test accuracy with mirror-plus-translate test-time augmentation %.4f", tta)
    with _output_failures(reports_dir):
        _write_evaluation(evaluation, history, x, out)
    test_dataset = split_dataset("test", test, params.data.url)
    _log_metrics(run_info, mlflow_metrics(evaluation), test_dataset)
    _describe_run(run_info.run_id, params, evaluation.accuracy)
    details = _data_details(run, len(y))
    _register_and_report(params, run_info, run_tags, evaluation, out, details)
    _log_files(run_info.run_id, list(out.values()))
    # One closing line, the result and where to look (a short run prints at most 40, issue 31).
    log.info(
        "test accuracy %.4f, loss %.4f on %d images; wrote %s and logged it to MLflow run %s",
        evaluation.accuracy, evaluation.loss, len(y), reports_dir, run_info.run_id,
    )  # fmt: skip


def check_model_of_run(model_path: Path, run_info: RunInfo) -> None:
    """Refuse a model file other than the one the training run logged (run.json's md5).

    Evaluate registers the run's logged model and tags it with the accuracy it measured on
    ``model_path``: scoring any other file would give the registered version another model's
    score.
    """
    if not zipfile.is_zipfile(model_path):
        # Keras says "File not found" for any file that is not a zip: say what it is.
        raise PipelineError(
            f"{model_path}: not a Keras model file (not a zip archive, "
            f"{model_path.stat().st_size:,} bytes); rerun `dvc repro train`"
        )
    actual = file_md5(model_path)
    if actual != run_info.model_md5:
        raise PipelineError(
            f"{model_path} is not the model MLflow run {run_info.run_id} logged (md5 {actual}, "
            f"run.json records {run_info.model_md5}): evaluate scores only the model it "
            f"registers; restore it (`dvc checkout {model_path}`) or train again "
            "(`dvc repro train`)"
        )


@contextlib.contextmanager
def _output_failures(reports_dir: Path) -> Iterator[None]:
    """A failed write of the reports (full disk, read-only folder) becomes one line.

    Each file is written beside its target and renamed, so none is left half-written.
    """
    try:
        yield
    except OSError as exc:
        raise PipelineError(
            f"cannot write the evaluation outputs to {reports_dir}: {exc.strerror or exc}"
        ) from None


def _write_evaluation(
    evaluation: Evaluation, history: pd.DataFrame, x: np.ndarray, out: dict[str, Path]
) -> None:
    """Every output that does not depend on the registry."""
    write_json(out["metrics"], metrics_dict(evaluation))
    with atomic_path(out["per_class"]) as tmp:
        per_class_frame(evaluation).to_csv(tmp, index=False)
    with atomic_path(out["predictions"]) as tmp:
        predictions_frame(evaluation).to_csv(tmp, index=False)
    with atomic_path(out["confusion_csv"]) as tmp:
        evaluation.confusion.to_csv(tmp)
    plot_confusion_matrix(evaluation.confusion, out["confusion"])
    plot_training_curves(history, out["curves"])
    plot_misclassified(x, evaluation, most_confident_mistakes(evaluation), out["misclassified"])


def _register_and_report(
    params: Params,
    run_info: RunInfo,
    run_tags: dict[str, str],
    evaluation: Evaluation,
    out: dict[str, Path],
    details: str,
) -> None:
    """Register, then write registry.json and the report, saying "failed" if registration did."""
    name = params.mlflow.registered_model_name
    registry = failure_record(name, "registration stopped", run_info.model_uri, run_info.run_id)
    try:
        registry = register_model_version(
            name,
            run_info.model_uri,
            run_info.run_id,
            run_tags,
            evaluation.accuracy,
            params.registration,
            classes=evaluation.classes,
            details=details,
        ).to_dict()
    except PipelineError as exc:
        registry = failure_record(name, str(exc), run_info.model_uri, run_info.run_id)
        raise
    finally:
        with _output_failures(out["registry"].parent):
            write_json(out["registry"], registry)
            provenance = version_lineage(run_info.run_id, run_tags) | {
                "model_uri": run_info.model_uri,
                # The preprocess stage's data report, as the train stage logged it.
                "data checks": run_tags.get(SUMMARY_TAG, "not recorded"),
            }
            sections = build_sections(
                evaluation, most_confused_pairs(evaluation.confusion), registry, provenance, out
            )
            write_report(sections, out["markdown"], out["html"], "CIFAR-10 evaluation report")


def _data_details(run: Any, test_images: int) -> str:
    """E.g. "trained on 45,000 images, validated on 5,000, tested on 10,000", from the run."""
    rows = {}
    for dataset_input in run.inputs.dataset_inputs if run.inputs else []:
        tags = {tag.key: tag.value for tag in dataset_input.tags}
        if tags.get(ROWS_TAG, "").isdigit():
            rows[tags.get("mlflow.data.context")] = int(tags[ROWS_TAG])
    parts = [f"trained on {rows['training']:,} images"] if "training" in rows else []
    parts += [f"validated on {rows['validation']:,}"] if "validation" in rows else []
    return ", ".join([*parts, f"tested on {test_images:,}"])


def _training_run(run_info: RunInfo, uri: str) -> Any:
    """The training run; fails if the run is not in this tracking store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.MlflowClient().get_run(run_info.run_id)
    except MlflowException:
        raise PipelineError(
            f"MLflow run {run_info.run_id} (models/run.json) is not in the tracking store "
            f"{redact(uri)}; it was logged to {redact(run_info.tracking_uri)}: set "
            "MLFLOW_TRACKING_URI to that store, or train again: `dvc repro --force --single-item "
            "train`, then `dvc repro`"
        ) from None


# The client logs to the run without reopening it, so its FINISHED status never changes,
# not even when this stage fails half-way (a reopened run would end FAILED).
def _describe_run(run_id: str, params: Params, accuracy: float) -> None:
    """The run's description: its headline, test accuracy first (pipeline/tracking/headline.py)."""
    import mlflow

    changes = changed_params(params, committed_params(paths.REPO_ROOT))
    with mlflow_errors(f"describing MLflow run {run_id}"):
        mlflow.MlflowClient().set_tag(run_id, DESCRIPTION_TAG, headline(changes, accuracy))


def _log_metrics(run_info: RunInfo, metrics: dict[str, float], test: SplitDataset) -> None:
    """Log the test metrics and the test dataset, each metric linked to the model and the data."""
    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    link = {
        "model_id": model_id(run_info.model_uri),
        "dataset_name": test.dataset.name,
        "dataset_digest": test.dataset.digest,
    }
    with mlflow_errors(f"logging test metrics to MLflow run {run_info.run_id}"):
        log_datasets(run_info.run_id, [test])
        entities = [Metric(key, value, now, 0, **link) for key, value in metrics.items()]
        mlflow.MlflowClient().log_batch(run_info.run_id, metrics=entities)


def _log_files(run_id: str, files: list[Path]) -> None:
    import mlflow

    with mlflow_errors(f"logging the report to MLflow run {run_id}"):
        client = mlflow.MlflowClient()
        for path in files:
            client.log_artifact(run_id, str(path), ARTIFACT_PATH)
