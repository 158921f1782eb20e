"""Test-set evaluation: load what the train stage left, predict, and turn predictions into tables.

Everything here works on numpy arrays and pandas DataFrames; figures and reports live in
``pipeline.evaluate.report``, the Model Registry in ``pipeline.evaluate.registry``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from pipeline.artifacts import prepared
from pipeline.core.errors import PipelineError
from pipeline.tracking import metric_names

# Keras clips probabilities to this before the log, so our loss matches model.evaluate().
PROBABILITY_EPSILON = 1e-7


@dataclass(frozen=True)
class Evaluation:
    """Predictions on the test split and every figure derived from them."""

    classes: list[str]
    y_true: np.ndarray
    probabilities: np.ndarray
    y_pred: np.ndarray
    accuracy: float
    loss: float
    per_class: pd.DataFrame  # index: class name; columns: precision, recall, f1, support
    macro: dict[str, float]  # precision, recall, f1
    confusion: pd.DataFrame  # counts; index: actual class, columns: predicted class
    # With evaluate.flip_tta: accuracy of the mean of each image's and its mirror's predictions.
    accuracy_flip_tta: float | None = None
    # With evaluate.translate_tta: accuracy of mirror-plus-translate (see pipeline.evaluate.tta).
    accuracy_translate_tta: float | None = None


def load_test_split(prepared_dir: Path) -> tuple[prepared.Split, list[str]]:
    """Return the test split (uint8 NHWC images, labels) and the class names."""
    classes = prepared.read_classes(prepared_dir)
    return prepared.read_split(prepared_dir, "test", len(classes)), classes


def check_classes(prepared: list[str], trained: list[str]) -> None:
    """Fail if the model was trained on other class names (or order) than the test split uses."""
    if prepared != trained:
        raise PipelineError(
            f"the test split's classes.json {prepared} differs from the classes the model was "
            f"trained on (run.json) {trained}; rerun `dvc repro train`"
        )


def load_trained_model(path: Path, num_classes: int) -> Any:
    """Load the Keras model and check it outputs one probability per class."""
    import keras  # deferred: importing TensorFlow costs seconds that input checks should not pay

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged or foreign file
        raise PipelineError(
            f"{path}: cannot load the model ({exc}); rerun `dvc repro train`"
        ) from None
    outputs = model.output_shape
    if not isinstance(outputs, tuple) or outputs[-1] != num_classes:
        raise PipelineError(
            f"{path}: the model outputs shape {outputs}, expected (None, {num_classes}) for "
            f"{num_classes} classes; rerun `dvc repro train`"
        )
    return model


def evaluate_predictions(
    y_true: np.ndarray, probabilities: np.ndarray, classes: list[str]
) -> Evaluation:
    """Accuracy, loss, per-class and macro precision/recall/F1 and the confusion matrix."""
    labels = list(range(len(classes)))
    y_pred = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    per_class = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support},
        index=pd.Index(classes, name="class"),
    )
    counts = confusion_matrix(y_true, y_pred, labels=labels)
    return Evaluation(
        classes=list(classes),
        y_true=y_true,
        probabilities=probabilities,
        y_pred=y_pred,
        accuracy=float(np.mean(y_pred == y_true)),
        loss=sparse_categorical_crossentropy(y_true, probabilities),
        per_class=per_class,
        macro={name: float(per_class[name].mean()) for name in ("precision", "recall", "f1")},
        confusion=pd.DataFrame(
            counts,
            index=pd.Index(classes, name="actual"),
            columns=pd.Index(classes, name="predicted"),
        ),
    )


def sparse_categorical_crossentropy(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean cross-entropy of the true class, the loss Keras trains with."""
    true_probability = probabilities[np.arange(len(y_true)), y_true]
    clipped = np.clip(true_probability.astype(np.float64), PROBABILITY_EPSILON, 1.0)
    return float(-np.mean(np.log(clipped)))


def metrics_dict(evaluation: Evaluation) -> dict[str, Any]:
    """The content of ``metrics.json``: the few headline figures ``dvc exp show`` compares.

    Accuracy first (``dvc exp show`` keeps the order); the per-class figures would add 40
    columns, so they go to ``per_class.csv`` (a DVC plot) instead.
    """
    flip_tta, translate_tta = evaluation.accuracy_flip_tta, evaluation.accuracy_translate_tta
    return {
        "accuracy": _round(evaluation.accuracy),
        **({"accuracy_flip_tta": _round(flip_tta)} if flip_tta is not None else {}),
        **({"accuracy_translate_tta": _round(translate_tta)} if translate_tta is not None else {}),
        "loss": _round(evaluation.loss),
        "macro_f1": _round(evaluation.macro["f1"]),
        "test_images": len(evaluation.y_true),
    }


def per_class_frame(evaluation: Evaluation) -> pd.DataFrame:
    """``per_class.csv``: one row per class, precision, recall, F1 and support (test images)."""
    frame = evaluation.per_class.round(6).reset_index()
    frame["support"] = frame["support"].astype(int)
    return frame


def mlflow_metrics(evaluation: Evaluation) -> dict[str, float]:
    """The headline test metrics to log, named by ``pipeline.tracking.metric_names``.

    Per class figures are no metrics: 30 one-bar charts crowded the run and compare pages; they
    are in ``per_class.csv`` (logged with the report) and the report's table.
    """
    metrics = {
        metric_names.TEST_ACCURACY: evaluation.accuracy,
        metric_names.test("loss"): evaluation.loss,
    }
    metrics |= {metric_names.test(f"macro_{key}"): value for key, value in evaluation.macro.items()}
    if evaluation.accuracy_flip_tta is not None:
        metrics[metric_names.test("accuracy_flip_tta")] = evaluation.accuracy_flip_tta
    if evaluation.accuracy_translate_tta is not None:
        metrics[metric_names.test("accuracy_translate_tta")] = evaluation.accuracy_translate_tta
    return {key: metric_names.logged_value(value) for key, value in metrics.items()}


def predictions_frame(evaluation: Evaluation) -> pd.DataFrame:
    """Per test image: actual and predicted class names and the predicted class's probability.

    DVC's confusion template counts these rows.
    """
    names = np.asarray(evaluation.classes, dtype=object)
    rows = np.arange(len(evaluation.y_pred))
    return pd.DataFrame(
        {
            "actual": names[evaluation.y_true],
            "predicted": names[evaluation.y_pred],
            "confidence": evaluation.probabilities[rows, evaluation.y_pred].round(6),
        }
    )


def most_confused_pairs(confusion: pd.DataFrame, top: int = 5) -> pd.DataFrame:
    """The ``top`` off-diagonal (actual, predicted) cells by count, largest first."""
    pairs = confusion.stack().rename("count").reset_index()
    pairs = pairs[(pairs["actual"] != pairs["predicted"]) & (pairs["count"] > 0)]
    rates = pairs["count"] / pairs["actual"].map(confusion.sum(axis=1))
    pairs = pairs.assign(rate=rates.to_numpy())
    # Stable sort: ties keep class order, so the report is the same on every run.
    return (
        pairs.sort_values("count", ascending=False, kind="stable").head(top).reset_index(drop=True)
    )


def most_confident_mistakes(evaluation: Evaluation, limit: int = 24) -> np.ndarray:
    """Indices of misclassified images, the most confidently wrong first."""
    wrong = np.flatnonzero(evaluation.y_pred != evaluation.y_true)
    confidence = evaluation.probabilities[wrong, evaluation.y_pred[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:limit]


def _round(value: float) -> float:
    # The digits MLflow holds for the same figure: one value, whichever store is read.
    return metric_names.logged_value(value)
