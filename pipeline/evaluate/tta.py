"""The test split's probabilities, one view or with test-time augmentation (TTA).

NumPy and the model's ``predict`` only (no pandas, scikit-learn or MLflow): the evaluate stage
and the benchmarks score with these, on a CPU or on a GPU machine with little more than JAX.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PREDICT_BATCH_SIZE = 256


def predict_probabilities(model: Any, x: np.ndarray) -> np.ndarray:
    """Softmax probabilities (N, classes) for raw uint8 images, as float32."""
    probabilities = model.predict(x, batch_size=PREDICT_BATCH_SIZE, verbose=0)
    return np.asarray(probabilities, dtype=np.float32)


def mirrored_probabilities(model: Any, x: np.ndarray) -> np.ndarray:
    """The model's probabilities for the images mirrored left-right: computed once, passed to
    both TTA scorings when both are on."""
    return predict_probabilities(model, _mirror(x))


def flip_tta_accuracy(
    model: Any,
    x: np.ndarray,
    y_true: np.ndarray,
    probabilities: np.ndarray,
    mirrored: np.ndarray | None = None,
) -> float:
    """Accuracy of flip test-time augmentation: each image's ``probabilities`` averaged with
    the model's on the image mirrored left-right (CIFAR-10's classes are mirror-symmetric);
    ``mirrored``: those, when already predicted."""
    if mirrored is None:
        mirrored = mirrored_probabilities(model, x)
    return float(np.mean((probabilities + mirrored).argmax(axis=1) == y_true))


def translate_tta_accuracy(
    model: Any,
    x: np.ndarray,
    y_true: np.ndarray,
    probabilities: np.ndarray,
    mirrored: np.ndarray | None = None,
) -> float:
    """Accuracy of airbench94's mirror-plus-translate test-time augmentation: half the mean of
    each image's and its mirror's ``probabilities``, half the mean of the same pair for the image
    shifted one pixel up-left and one pixel down-right (borders reflected), six views in all;
    ``mirrored`` as for :func:`flip_tta_accuracy`."""
    if mirrored is None:
        mirrored = mirrored_probabilities(model, x)
    pair = (probabilities + mirrored) / 2
    height, width = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    shifted_pairs = []
    for top, left in ((0, 0), (2, 2)):
        shifted = np.ascontiguousarray(padded[:, top : top + height, left : left + width])
        shifted_pairs.append(
            predict_probabilities(model, shifted) + predict_probabilities(model, _mirror(shifted))
        )
    combined = pair / 2 + (shifted_pairs[0] + shifted_pairs[1]) / 8
    return float(np.mean(combined.argmax(axis=1) == y_true))


def _mirror(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[:, :, ::-1, :])
