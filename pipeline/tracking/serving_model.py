"""The served model: raw uint8 images in, one probability column per class name out.

MLflow "models from code": this file is copied into every logged model and executed when the
model is loaded (``mlflow models serve``, ``mlflow.pyfunc.load_model``), so it imports nothing
from this project. The Keras model and the class names travel as the model's artifacts.

Input is refused, never cast, unless every value is a whole number from 0 to 255: pixels scaled
to 0..1 would otherwise be truncated to an all-black image and answered with a confident 200.
A request of more than ``CIFAR10_SERVE_MAX_IMAGES`` images (default 1024) is refused before any
prediction: a 5,000-image request once kept a worker computing for minutes after its 504.
"""

from __future__ import annotations

import json
import os
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

# Artifact keys of the logged model.
KERAS_MODEL = "keras_model"
CLASSES = "classes"
EXPECTED = "uint8 pixels 0-255 expected"
MAX_IMAGES_ENV = "CIFAR10_SERVE_MAX_IMAGES"
DEFAULT_MAX_IMAGES = 1024


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """Wraps the Keras CNN: checks the pixels, predicts, labels the columns with class names."""

    def load_context(self, context: Any) -> None:
        import keras  # the backend (TensorFlow or JAX) is the serving environment's

        self.model = keras.saving.load_model(context.artifacts[KERAS_MODEL], compile=False)
        with open(context.artifacts[CLASSES], encoding="utf-8") as handle:
            self.classes = json.load(handle)

    # model_input's hint is np.ndarray, the one hint from which MLflow derives no input schema
    # (any other would make it cast or refuse input before check_pixels; none at all makes it
    # warn "Add type hints" at every log and load). Serving still hands in what it parsed.
    def predict(self, context, model_input: np.ndarray, params=None):
        import pandas as pd

        images = check_pixels(model_input, tuple(self.model.input_shape[1:]), max_images())
        probabilities = np.asarray(self.model.predict(images, verbose=0), dtype=np.float32)
        return pd.DataFrame(probabilities, columns=self.classes)


def max_images() -> int:
    """The most images one request may hold: ``$CIFAR10_SERVE_MAX_IMAGES``, else 1024."""
    value = os.environ.get(MAX_IMAGES_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_MAX_IMAGES


def check_pixels(
    model_input: Any, image_shape: tuple[int, ...], limit: int = DEFAULT_MAX_IMAGES
) -> np.ndarray:
    """``model_input`` as uint8 images of ``image_shape``, or a 400 that says what is expected."""
    try:
        values = np.asarray(model_input)
    except (TypeError, ValueError):
        _refuse("the input is not an array of images")
    if values.ndim and len(values) > limit:
        raise ServingRefusal(
            f"{len(values)} images in one request, more than the limit of {limit} "
            f"(set {MAX_IMAGES_ENV} on the server to change it); send smaller batches"
        )
    if values.ndim != len(image_shape) + 1 or tuple(values.shape[1:]) != image_shape:
        _refuse(f"got shape {values.shape}, expected (N, {', '.join(map(str, image_shape))})")
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind not in "iuf":
        _refuse(f"got values of type {values.dtype}")
    not_finite = int(np.count_nonzero(~np.isfinite(values)))
    if not_finite:
        # Named as such: the range of the other values (0 to 0) would hide what is wrong.
        _refuse(f"got {not_finite} NaN or infinite value(s)")
    if values.size and (
        values.min() < 0 or values.max() > 255 or not np.array_equal(values, np.round(values))
    ):
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        _refuse(f"got values from {low:g} to {high:g}, not all whole numbers in 0-255")
    return values.astype(np.uint8)


class ServingRefusal(MlflowException):
    """A refused request: HTTP 400 with this message alone.

    MLflow's scoring server rewrites the message of any MlflowException from ``predict`` to
    ``Failed to predict data '<the whole input>'. Error: ...``, echoing kilobytes of the request
    (and whatever it held) back before the reason. The message is fixed at construction instead.
    """

    def __init__(self, message: str) -> None:
        # MLflow's scoring server answers INVALID_PARAMETER_VALUE as HTTP 400.
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):
            self._message = value


def _refuse(detail: str) -> None:
    raise ServingRefusal(f"{EXPECTED}: {detail}")


mlflow.models.set_model(ImageClassifier())
