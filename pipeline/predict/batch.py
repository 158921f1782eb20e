"""Batch prediction: a folder of images (or a CIFAR batch file) through a registered model.

Writes, in the output folder (each file beside its target, then renamed): ``predictions.csv``
(file, class, probability, top 3, label when known, skipped reason), ``predict_report.json``,
``report.md``, the class distribution chart, a contact sheet of the least confident images and,
when the training run holds a drift reference, the drift figure. All of them are logged to a
batch-inference MLflow run that names the model version and its training run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.atomic import check_writable, write_json, write_text
from pipeline.core.errors import PipelineError
from pipeline.core.params import Params
from pipeline.predict import drift
from pipeline.predict.inputs import Batch, image_files, read_batch
from pipeline.predict.model import LoadedModel, ResolvedModel, load_model, resolve_model

log = logging.getLogger(__name__)

# The files of the output folder, by role: the names the MLflow run's artifacts also carry.
OUTPUT_FILES = {
    "predictions": "predictions.csv",
    "report_json": "predict_report.json",
    "report": "report.md",
    "classes": "class_distribution.png",
    "least_confident": "least_confident.png",
    "drift": "drift.png",
}
CSV_COLUMNS = ("file", "class", "probability", "top3", "label", "skipped")
DEFAULT_MODEL = "@champion"
TOP_K = 3


class DriftDetected(PipelineError):
    """``--fail-on-drift`` and the batch drifted: its own exit code, so CI can tell it apart."""

    exit_code = 3


@dataclass
class Prediction:
    """A batch, the model's probabilities for it, and the class names."""

    batch: Batch
    probabilities: np.ndarray
    classes: list[str]

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)

    def accuracy(self) -> float | None:
        """Share of images whose label is the predicted class, if every image has a label."""
        if not self.batch.has_labels:
            return None
        return float(np.mean(self.predicted == self.batch.labels))


def run_prediction(
    params: Params,
    input_path: Path,
    output_dir: Path,
    model_spec: str = DEFAULT_MODEL,
    fail_on_drift: bool = False,
) -> dict[str, Any]:
    """Predict every image under ``input_path``; write and log the outputs; return the summary."""
    from pipeline.tracking.runs import prepare_tracking

    if not input_path.exists() or (input_path.is_dir() and not image_files(input_path)):
        # Before anything slow: a missing path or an empty folder is a usage error, at once.
        read_batch(input_path, [])
    check_writable(output_dir)
    prepare_tracking()
    resolved = resolve_model(model_spec, params.mlflow.registered_model_name)
    log.info("model: %s (%s)", resolved.label(), resolved.uri)
    model = load_model(resolved)
    batch = _read_with_progress(input_path, model.classes)
    for name, reason in batch.skipped:
        log.warning("skipped %s: %s", name, reason)
    if len(batch.names) == 0:
        raise PipelineError(
            f"{input_path}: none of its {len(batch.skipped)} file(s) is a readable PNG or JPEG "
            f"image (first: {batch.skipped[0][0]}: {batch.skipped[0][1]})"
        )
    prediction = Prediction(
        batch, predict_probabilities(model, batch.images, params), model.classes
    )
    reference = _drift_reference(resolved, model.classes)
    result = None
    if reference is not None:
        result = drift.compare(
            reference,
            batch.images,
            prediction.probabilities,
            params.predict.drift_psi,
            params.predict.drift_min_images,
        )
    summary = _summary(prediction, resolved, input_path, result)
    with _batch_run(params, summary, resolved, result) as run_id:
        summary["mlflow_run_id"] = run_id
        _write_outputs(output_dir, prediction, summary, result, params.predict.least_confident)
        _log_artifacts(output_dir)
    _print_summary(summary, output_dir)
    if fail_on_drift:
        if result is None:
            raise PipelineError(
                f"--fail-on-drift: {resolved.label()}'s training run has no "
                f"{drift.REFERENCE_FILE} (trained before drift checks existed?); retrain it"
            )
        if result.drifted:
            over = ", ".join(
                f"{name} {result.scores[name]:.3f}" for name in summary["drift"]["over_threshold"]
            )
            raise DriftDetected(
                f"drift: {input_path} differs from {resolved.label()}'s training data "
                f"(PSI over {result.threshold}: {over}); see {output_dir / OUTPUT_FILES['report']}"
            )
    return summary


def _read_with_progress(path: Path, classes: list[str]) -> Batch:
    from tqdm import tqdm

    total = len(image_files(path)) if path.is_dir() else None
    with tqdm(total=total, desc="read", unit="file", file=sys.stderr, disable=total is None) as bar:
        return read_batch(path, classes, bar.update)


def predict_probabilities(model: LoadedModel, images: np.ndarray, params: Params) -> np.ndarray:
    """The model's class probabilities (N x classes, float32) for uint8 ``images``, with a bar."""
    from tqdm import tqdm

    size = params.predict.batch_size
    chunks = []
    with tqdm(total=len(images), desc="predict", unit="img", file=sys.stderr) as bar:
        for start in range(0, len(images), size):
            chunk = images[start : start + size]
            chunks.append(np.asarray(model.keras_model.predict_on_batch(chunk), np.float32))
            bar.update(len(chunk))
    return np.concatenate(chunks)


def _drift_reference(resolved: ResolvedModel, classes: list[str]) -> drift.Distributions | None:
    import mlflow
    from mlflow.exceptions import MlflowException

    if resolved.run_id is None:
        log.warning("drift: no training run known for %s; not checked", resolved.label())
        return None
    try:
        data = mlflow.artifacts.load_dict(f"runs:/{resolved.run_id}/{drift.REFERENCE_FILE}")
        return drift.read_reference(data, classes)
    except (MlflowException, OSError, ValueError, KeyError, TypeError) as exc:
        log.warning(
            "drift: the training run %s has no usable %s (%s); not checked",
            resolved.run_id,
            drift.REFERENCE_FILE,
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        return None


def _summary(
    prediction: Prediction,
    resolved: ResolvedModel,
    input_path: Path,
    result: drift.DriftResult | None,
) -> dict[str, Any]:
    counts = np.bincount(prediction.predicted, minlength=len(prediction.classes))
    accuracy = prediction.accuracy()
    return {
        "model": {
            "uri": resolved.uri,
            "name": resolved.name,
            "version": resolved.version,
            "training_run_id": resolved.run_id,
        },
        "input": {
            "path": input_path.name,
            "kind": "folder" if input_path.is_dir() else "cifar batch file",
            "digest": prediction.batch.digest,
        },
        "images": len(prediction.batch.names),
        "skipped": [{"file": name, "reason": reason} for name, reason in prediction.batch.skipped],
        "mean_confidence": round(float(prediction.confidence.mean()), 6),
        "accuracy": None if accuracy is None else round(accuracy, 6),
        "class_counts": dict(zip(prediction.classes, map(int, counts), strict=True)),
        "drift": result.summary() if result is not None else {"verdict": "not checked"},
    }


def predictions_csv(prediction: Prediction) -> str:
    """The CSV text: one row per image read, then one per skipped file (its reason, no class)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    classes = prediction.classes
    order = np.argsort(-prediction.probabilities, axis=1)[:, :TOP_K]
    for index, name in enumerate(prediction.batch.names):
        top = ";".join(
            f"{classes[k]}:{prediction.probabilities[index, k]:.4f}" for k in order[index]
        )
        label = int(prediction.batch.labels[index])
        writer.writerow(
            [
                name,
                classes[order[index, 0]],
                f"{prediction.probabilities[index, order[index, 0]]:.6f}",
                top,
                classes[label] if label >= 0 else "",
                "",
            ]
        )
    for name, reason in prediction.batch.skipped:
        writer.writerow([name, "", "", "", "", reason])
    return out.getvalue()


def _write_outputs(
    folder: Path,
    prediction: Prediction,
    summary: dict[str, Any],
    result: drift.DriftResult | None,
    least_confident: int,
) -> None:
    from pipeline.predict.figures import plot_class_distribution, plot_least_confident

    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / OUTPUT_FILES["predictions"], predictions_csv(prediction))
    write_json(folder / OUTPUT_FILES["report_json"], summary)
    plot_class_distribution(summary["class_counts"], folder / OUTPUT_FILES["classes"])
    plot_least_confident(prediction, least_confident, folder / OUTPUT_FILES["least_confident"])
    drift_figure = folder / OUTPUT_FILES["drift"]
    if result is not None:
        drift.plot_drift(result, prediction.classes, drift_figure)
    else:
        drift_figure.unlink(missing_ok=True)  # a stale one would describe another batch
    write_text(folder / OUTPUT_FILES["report"], report_markdown(summary, result is not None))


def report_markdown(summary: dict[str, Any], has_drift_figure: bool) -> str:
    """The batch's report: model, counts, skipped files, class counts and the drift verdict."""
    model = summary["model"]
    lines = [
        "# Batch prediction",
        "",
        f"- Model: `{model['uri']}` (training run `{model['training_run_id']}`)",
        f"- Input: `{summary['input']['path']}` ({summary['input']['kind']}), "
        f"sha256 `{summary['input']['digest']}`",
        f"- Images predicted: {summary['images']}; skipped: {len(summary['skipped'])}",
        f"- Mean confidence: {summary['mean_confidence']:.4f}",
        f"- MLflow run: `{summary.get('mlflow_run_id')}`",
    ]
    if summary["accuracy"] is not None:
        lines.append(f"- Accuracy against the labels: {summary['accuracy']:.4f}")
    verdict = summary["drift"]
    lines += ["", "## Drift", "", f"Verdict: **{verdict['verdict']}**"]
    if "scores" in verdict:
        lines += [
            f"(PSI threshold {verdict['threshold']}; see docs/predict.md)",
            "",
            "| distribution | PSI |",
            "| --- | --- |",
            *(f"| {name} | {score:.4f} |" for name, score in verdict["scores"].items()),
        ]
    if has_drift_figure:
        lines += ["", f"![drift]({OUTPUT_FILES['drift']})"]
    lines += [
        "",
        "## Predicted classes",
        "",
        f"![class distribution]({OUTPUT_FILES['classes']})",
        "",
        f"![least confident]({OUTPUT_FILES['least_confident']})",
    ]
    if summary["skipped"]:
        lines += ["", "## Skipped files", "", "| file | reason |", "| --- | --- |"]
        lines += [
            f"| {item['file']} | {item['reason'].replace('|', '/')} |"
            for item in summary["skipped"]
        ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _batch_run(
    params: Params,
    summary: dict[str, Any],
    resolved: ResolvedModel,
    result: drift.DriftResult | None,
) -> Iterator[str]:
    """The batch-inference MLflow run, its params, tags and metrics logged; yields its id.

    The outputs are written inside it, so the report names its run; a failure marks it FAILED.
    """
    import mlflow

    from pipeline.tracking.runs import use_experiment

    experiment_id = use_experiment(params.predict.experiment_name)
    tags = {
        "run.kind": "batch-inference",
        "model.uri": resolved.uri,
        "drift.verdict": summary["drift"]["verdict"],
    }
    if resolved.name is not None:
        tags["model.name"] = resolved.name
    if resolved.run_id is not None:
        tags["model.training_run_id"] = resolved.run_id
    with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
        mlflow.log_params(
            {
                "model.version": resolved.version or resolved.uri,
                "input.digest": summary["input"]["digest"],
                "input.kind": summary["input"]["kind"],
            }
        )
        metrics = {
            "images": summary["images"],
            "skipped": len(summary["skipped"]),
            "mean_confidence": summary["mean_confidence"],
        }
        if summary["accuracy"] is not None:
            metrics["accuracy"] = summary["accuracy"]
        if result is not None:
            metrics |= {f"drift/psi_{name}": score for name, score in result.scores.items()}
            metrics["drift/detected"] = float(result.drifted)
        mlflow.log_metrics(metrics)
        yield run.info.run_id


def _log_artifacts(folder: Path) -> None:
    import mlflow

    for name in OUTPUT_FILES.values():
        if (folder / name).is_file():
            mlflow.log_artifact(str(folder / name))


def _print_summary(summary: dict[str, Any], folder: Path) -> None:
    accuracy = "" if summary["accuracy"] is None else f", accuracy {summary['accuracy']:.4f}"
    print(
        f"{summary['images']} images predicted, {len(summary['skipped'])} skipped, mean "
        f"confidence {summary['mean_confidence']:.4f}{accuracy}; drift: "
        f"{summary['drift']['verdict']}; {folder / OUTPUT_FILES['predictions']}"
    )
