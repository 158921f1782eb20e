"""Drift of a prediction batch against the training run's reference statistics.

The reference (``drift_reference.json``, logged by the train stage to its run; written and read
only here) holds three distributions:

- ``pixels``: per channel (R, G, B), the share of the training images' pixel values in each of
  16 equal-width bins of 0-255;
- ``classes``: the share of the validation images the model predicts as each class;
- ``confidence``: the share of the validation images whose top probability falls in each of 10
  equal-width bins of 0-1.

A batch is compared with each by the Population Stability Index,
``PSI = sum_i (b_i - r_i) * ln(b_i / r_i)`` over the bins (``r`` the reference's shares, ``b``
the batch's, both floored at 1e-4 so an empty bin counts as rare, not impossible). The usual
reading: under 0.1 no shift, 0.1-0.25 a moderate one, above 0.25 a major one. The batch drifts
when any of the five PSIs (three channels, classes, confidence) exceeds ``predict.drift_psi``;
below ``predict.drift_min_images`` images the verdict is "too few images", never "drift", since
a small batch's PSI is mostly sampling noise (about (bins - 1) / images).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.atomic import atomic_path

REFERENCE_FILE = "drift_reference.json"
FORMAT_VERSION = 1
PIXEL_BINS = 16
CONFIDENCE_BINS = 10
CHANNELS = ("red", "green", "blue")
# An empty bin's share: rare, not impossible (ln(0) would make any PSI infinite).
FLOOR = 1e-4
# Images per chunk when counting pixels: bounds the memory of the histogram's work.
_CHUNK = 2048


@dataclass(frozen=True)
class Distributions:
    """Shares per bin: ``pixels`` 3 x PIXEL_BINS, ``classes`` per class, ``confidence`` per bin."""

    pixels: np.ndarray
    classes: np.ndarray
    confidence: np.ndarray

    def to_json(self, images: int, classes: list[str]) -> dict[str, Any]:
        """The reference file's content for these distributions."""
        return {
            "format": FORMAT_VERSION,
            "statistic": "psi",
            "images": images,
            "class_names": classes,
            "pixel_bins": PIXEL_BINS,
            "confidence_bins": CONFIDENCE_BINS,
            "pixels": {name: row.tolist() for name, row in zip(CHANNELS, self.pixels, strict=True)},
            "classes": self.classes.tolist(),
            "confidence": self.confidence.tolist(),
        }


def pixel_shares(images: np.ndarray) -> np.ndarray:
    """Per channel, the share of ``images``' (uint8 N x H x W x 3) pixel values in each bin."""
    counts = np.zeros((len(CHANNELS), PIXEL_BINS), np.int64)
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK]
        for channel in range(len(CHANNELS)):
            values = chunk[..., channel].ravel() // (256 // PIXEL_BINS)
            counts[channel] += np.bincount(values, minlength=PIXEL_BINS)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def prediction_shares(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(share per predicted class, share per confidence bin) of ``probabilities`` (N x classes)."""
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    n = max(len(probabilities), 1)
    classes = np.bincount(predicted, minlength=probabilities.shape[1]) / n
    bins = np.minimum((confidence * CONFIDENCE_BINS).astype(np.int64), CONFIDENCE_BINS - 1)
    return classes, np.bincount(bins, minlength=CONFIDENCE_BINS) / n


def reference_of(train_images: np.ndarray, val_probabilities: np.ndarray) -> Distributions:
    """The reference: pixels of the training images, predictions on the validation images."""
    classes, confidence = prediction_shares(val_probabilities)
    return Distributions(pixel_shares(train_images), classes, confidence)


def log_reference(
    train_images: np.ndarray, model: Any, val_images: np.ndarray, classes: list[str]
) -> None:
    """Compute the reference of ``model`` and log it to the active MLflow run."""
    import mlflow

    probabilities = np.asarray(model.predict(val_images, batch_size=512, verbose=0), np.float64)
    reference = reference_of(train_images, probabilities)
    mlflow.log_dict(reference.to_json(len(val_images), classes), REFERENCE_FILE)


def read_reference(data: dict[str, Any], classes: list[str]) -> Distributions:
    """The distributions of a reference file's content; ValueError if it does not fit."""
    if data.get("format") != FORMAT_VERSION or data.get("class_names") != classes:
        raise ValueError("another format, or other classes than the model's")
    pixels = np.asarray([data["pixels"][name] for name in CHANNELS], np.float64)
    reference = Distributions(
        pixels, np.asarray(data["classes"], np.float64), np.asarray(data["confidence"], np.float64)
    )
    if pixels.shape != (len(CHANNELS), PIXEL_BINS) or reference.confidence.shape != (
        CONFIDENCE_BINS,
    ):
        raise ValueError("unexpected bin counts")
    return reference


def psi(reference: np.ndarray, batch: np.ndarray) -> float:
    """The Population Stability Index of ``batch`` against ``reference`` (shares per bin)."""
    r = np.maximum(np.asarray(reference, np.float64), FLOOR)
    b = np.maximum(np.asarray(batch, np.float64), FLOOR)
    return float(np.sum((b - r) * np.log(b / r)))


@dataclass(frozen=True)
class DriftResult:
    """Each PSI by name, the threshold, and the verdict: "no drift", "drift" or "too few images"."""

    scores: dict[str, float]
    threshold: float
    verdict: str
    batch: Distributions
    reference: Distributions

    @property
    def drifted(self) -> bool:
        return self.verdict == "drift"

    def summary(self) -> dict[str, Any]:
        """The verdict and the scores, for the report and the MLflow run."""
        over = [name for name, score in self.scores.items() if score > self.threshold]
        return {
            "statistic": "psi",
            "threshold": self.threshold,
            "verdict": self.verdict,
            "scores": {name: round(score, 4) for name, score in self.scores.items()},
            "over_threshold": over,
        }


def compare(
    reference: Distributions,
    images: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    min_images: int,
) -> DriftResult:
    """The drift verdict of a batch (its images and the model's probabilities) against
    ``reference``."""
    classes, confidence = prediction_shares(probabilities)
    batch = Distributions(pixel_shares(images), classes, confidence)
    scores = {
        f"pixels_{name}": psi(reference.pixels[index], batch.pixels[index])
        for index, name in enumerate(CHANNELS)
    }
    scores["predicted_class"] = psi(reference.classes, batch.classes)
    scores["confidence"] = psi(reference.confidence, batch.confidence)
    if len(images) < min_images:
        verdict = "too few images"
    else:
        verdict = "drift" if max(scores.values()) > threshold else "no drift"
    return DriftResult(scores, threshold, verdict, batch, reference)


def plot_drift(result: DriftResult, class_names: list[str], path: Path) -> None:
    """Reference against batch: pixel shares per channel, predicted classes, confidence."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4), dpi=100, layout="constrained")
    axes = fig.subplots(1, 3)
    edges = np.arange(PIXEL_BINS) * (256 // PIXEL_BINS)
    for index, (name, colour) in enumerate(
        zip(CHANNELS, ("tab:red", "tab:green", "tab:blue"), strict=True)
    ):
        axes[0].plot(edges, result.reference.pixels[index], color=colour, linestyle="--")
        axes[0].plot(edges, result.batch.pixels[index], color=colour, label=name)
    axes[0].set(title="Pixel values (dashed: reference)", xlabel="value", ylabel="share")
    axes[0].legend()
    positions = np.arange(len(class_names))
    axes[1].bar(positions - 0.2, result.reference.classes, 0.4, label="reference (val)")
    axes[1].bar(positions + 0.2, result.batch.classes, 0.4, label="batch")
    axes[1].set_xticks(positions, class_names, rotation=45, ha="right")
    axes[1].set(title="Predicted class", ylabel="share")
    axes[1].legend()
    centres = (np.arange(CONFIDENCE_BINS) + 0.5) / CONFIDENCE_BINS
    axes[2].bar(centres - 0.02, result.reference.confidence, 0.04, label="reference (val)")
    axes[2].bar(centres + 0.02, result.batch.confidence, 0.04, label="batch")
    axes[2].set(title="Top-class probability", xlabel="probability", ylabel="share")
    axes[2].legend()
    worst = max(result.scores, key=result.scores.__getitem__)
    fig.suptitle(
        f"Drift: {result.verdict} (largest PSI {result.scores[worst]:.3f} on {worst}, "
        f"threshold {result.threshold})"
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
