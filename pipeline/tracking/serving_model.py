"""The served model: images in, one probability column per class name out.

MLflow "models from code": this file is copied into every logged model and executed when the
model is loaded (``mlflow models serve``, ``mlflow.pyfunc.load_model``), so it imports nothing
from this project. The Keras model and the class names travel as the model's artifacts.

Two input forms, checked by the same rules (image size, RGB, the batch cap):

- raw pixels, ``{"inputs": [[[[r, g, b], ...]]]}``: N x 32 x 32 x 3 whole numbers 0-255. Input is
  refused, never cast, unless every value is a whole number from 0 to 255: pixels scaled to 0..1
  would otherwise be truncated to an all-black image and answered with a confident 200.
- encoded images, ``{"inputs": ["<base64 PNG or JPEG>", ...]}``: one base64 string per image, as
  TF Serving and KServe's V2 protocol carry binary data; about a tenth of the JSON of the pixels,
  and decoding it costs far less than parsing 3,072 JSON numbers per image.

A request of more than ``CIFAR10_SERVE_MAX_IMAGES`` images (default 1024) is refused before any
decoding or prediction: a 5,000-image request once kept a worker computing for minutes after its
504. The variable is read once, when the model loads; a value that is not a whole number above 0
stops the load (and so the server) instead of silently becoming the default.
"""

from __future__ import annotations

import base64
import binascii
import io
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
EXPECTED_ENCODED = "base64 PNG or JPEG images expected"
MAX_IMAGES_ENV = "CIFAR10_SERVE_MAX_IMAGES"
DEFAULT_MAX_IMAGES = 1024
ENCODED_FORMATS = ("PNG", "JPEG")
# A 32 x 32 RGB PNG is at most ~3.2 kB (4 kB in base64); anything far larger is not one.
MAX_ENCODED_CHARS = 64 * 1024


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """Wraps the Keras model: checks the images, predicts, labels the columns with class names."""

    def load_context(self, context: Any) -> None:
        # First: a bad cap stops the load before the Keras model costs seconds to read.
        self.max_images = max_images()
        import keras  # the backend (TensorFlow or JAX) is the serving environment's

        self.model = keras.saving.load_model(context.artifacts[KERAS_MODEL], compile=False)
        self.image_shape = tuple(self.model.input_shape[1:])
        with open(context.artifacts[CLASSES], encoding="utf-8") as handle:
            self.classes = json.load(handle)

    # model_input's hint is np.ndarray, the one hint from which MLflow derives no input schema
    # (any other would make it cast or refuse input before check_pixels; none at all makes it
    # warn "Add type hints" at every log and load). Serving still hands in what it parsed.
    def predict(self, context, model_input: np.ndarray, params=None):
        import pandas as pd

        images = check_images(model_input, self.image_shape, self.max_images)
        # predict_on_batch: one call, no per-call data adapter and callbacks of predict(); the
        # cap keeps a batch small enough to go through in one piece.
        probabilities = np.asarray(self.model.predict_on_batch(images), dtype=np.float32)
        return pd.DataFrame(probabilities, columns=self.classes)


class ServingConfigError(ValueError):
    """A server setting that cannot be used: the server must not start with it."""


def max_images() -> int:
    """The most images one request may hold: ``$CIFAR10_SERVE_MAX_IMAGES``, else 1024.

    Raises ``ServingConfigError`` for a value that is not a whole number above 0 (``abc``,
    ``-1``, ``0``): such a value once silently became 1024.
    """
    value = os.environ.get(MAX_IMAGES_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_IMAGES
    if not value.isdigit() or int(value) < 1:
        raise ServingConfigError(
            f"{MAX_IMAGES_ENV}={value!r} is not a whole number of images above 0 "
            f"(unset it for the default, {DEFAULT_MAX_IMAGES})"
        )
    return int(value)


def check_images(
    model_input: Any, image_shape: tuple[int, ...], limit: int = DEFAULT_MAX_IMAGES
) -> np.ndarray:
    """Either input form as uint8 images of ``image_shape``, or a 400 that says what is expected.

    A one-dimensional array of strings is the encoded form; anything else must be pixels.
    """
    try:
        values = np.asarray(model_input)
    except (TypeError, ValueError):
        _refuse("the input is not an array of images")
    if values.ndim == 1 and values.dtype.kind in "US":
        return decode_images(values, image_shape, limit)
    return check_pixels(values, image_shape, limit)


def check_pixels(
    model_input: Any, image_shape: tuple[int, ...], limit: int = DEFAULT_MAX_IMAGES
) -> np.ndarray:
    """``model_input`` as uint8 images of ``image_shape``, or a 400 that says what is expected."""
    try:
        values = np.asarray(model_input)
    except (TypeError, ValueError):
        _refuse("the input is not an array of images")
    _check_count(values, limit)
    if values.ndim != len(image_shape) + 1 or tuple(values.shape[1:]) != image_shape:
        _refuse(f"got shape {values.shape}, expected (N, {', '.join(map(str, image_shape))})")
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind not in "iuf":
        _refuse(f"got values of type {values.dtype}")
    if values.size == 0:
        return values.astype(np.uint8)
    # One pass each over the batch: integers (what JSON numbers without a point parse to) need
    # no finiteness or whole-number test; min and max are all they can fail.
    low, high = values.min(), values.max()
    whole = values.dtype.kind in "iu" or bool(np.all(np.equal(np.mod(values, 1), 0)))
    if not (whole and low >= 0 and high <= 255):  # NaN compares False: refused here too
        not_finite = int(np.count_nonzero(~np.isfinite(values)))
        if not_finite:
            # Named as such: the range of the other values (0 to 0) would hide what is wrong.
            _refuse(f"got {not_finite} NaN or infinite value(s)")
        low, high = float(values.min()), float(values.max())
        _refuse(f"got values from {low:g} to {high:g}, not all whole numbers in 0-255")
    return values.astype(np.uint8)


def decode_images(
    encoded: np.ndarray, image_shape: tuple[int, ...], limit: int = DEFAULT_MAX_IMAGES
) -> np.ndarray:
    """Base64 PNG/JPEG strings as uint8 images of ``image_shape`` (RGB), or a 400.

    The count is checked before anything is decoded; each image's size and mode are read from
    its header before its pixels are.
    """
    from PIL import Image, UnidentifiedImageError

    _check_count(encoded, limit)
    height, width, channels = image_shape
    if channels != 3:
        _refuse_encoded(f"this model takes {channels} channels, not RGB")
    images = np.empty((len(encoded), *image_shape), dtype=np.uint8)
    for index, text in enumerate(encoded.tolist()):
        if len(text) > MAX_ENCODED_CHARS:
            _refuse_encoded(f"image {index} is {len(text)} characters, over {MAX_ENCODED_CHARS}")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            _refuse_encoded(f"image {index} is not valid base64")
        try:
            with Image.open(io.BytesIO(data), formats=ENCODED_FORMATS) as image:
                if image.size != (width, height) or image.mode != "RGB":
                    _refuse_encoded(
                        f"image {index} is {image.size[0]}x{image.size[1]} {image.mode}, "
                        f"expected {width}x{height} RGB"
                    )
                images[index] = np.asarray(image)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            if isinstance(error, ServingRefusal):
                raise
            _refuse_encoded(f"image {index} is not a readable PNG or JPEG")
    return images


def _check_count(values: np.ndarray, limit: int) -> None:
    if values.ndim and len(values) > limit:
        raise ServingRefusal(
            f"{len(values)} images in one request, more than the limit of {limit} "
            f"(set {MAX_IMAGES_ENV} on the server to change it); send smaller batches"
        )


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


def _refuse_encoded(detail: str) -> None:
    raise ServingRefusal(f"{EXPECTED_ENCODED}: {detail}")


mlflow.models.set_model(ImageClassifier())
