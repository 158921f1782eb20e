"""The served model: raw uint8 images in, one probability column per class name out.

MLflow "models from code": this file is copied into every logged model and executed when the
model is loaded (``mlflow models serve``, ``mlflow.pyfunc.load_model``), so it imports nothing
from this project. The Keras model and the class names travel as the model's artifacts.

Input is refused, never cast, unless every value is a whole number from 0 to 255: pixels scaled
to 0..1 would otherwise be truncated to an all-black image and answered with a confident 200.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

# Artifact keys of the logged model.
KERAS_MODEL = "keras_model"
CLASSES = "classes"
EXPECTED = "uint8 pixels 0-255 expected"


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """Wraps the Keras CNN: checks the pixels, predicts, labels the columns with class names."""

    def load_context(self, context: Any) -> None:
        import keras  # the backend (TensorFlow or JAX) is the serving environment's

        self.model = keras.saving.load_model(context.artifacts[KERAS_MODEL], compile=False)
        with open(context.artifacts[CLASSES], encoding="utf-8") as handle:
            self.classes = json.load(handle)

    # No type hints: MLflow would try (and fail) to derive an input schema from them.
    def predict(self, context, model_input, params=None):
        import pandas as pd

        images = check_pixels(model_input, tuple(self.model.input_shape[1:]))
        probabilities = np.asarray(self.model.predict(images, verbose=0), dtype=np.float32)
        return pd.DataFrame(probabilities, columns=self.classes)


def check_pixels(model_input: Any, image_shape: tuple[int, ...]) -> np.ndarray:
    """``model_input`` as uint8 images of ``image_shape``, or a 400 that says what is expected."""
    try:
        values = np.asarray(model_input)
    except (TypeError, ValueError):
        _refuse("the input is not an array of images")
    if values.ndim != len(image_shape) + 1 or tuple(values.shape[1:]) != image_shape:
        _refuse(f"got shape {values.shape}, expected (N, {', '.join(map(str, image_shape))})")
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind not in "iuf":
        _refuse(f"got values of type {values.dtype}")
    if values.size and (
        not np.all(np.isfinite(values))
        or values.min() < 0
        or values.max() > 255
        or not np.array_equal(values, np.round(values))
    ):
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        _refuse(f"got values from {low:g} to {high:g}, not all whole numbers in 0-255")
    return values.astype(np.uint8)


def _refuse(detail: str) -> None:
    # MLflow's scoring server answers an MlflowException with this code as HTTP 400.
    raise MlflowException(f"{EXPECTED}: {detail}", error_code=INVALID_PARAMETER_VALUE)


mlflow.models.set_model(ImageClassifier())
