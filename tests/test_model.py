"""The reference CNN ("Convolutional Neural Network in Keras"), built from params.yaml."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.train.model import build_model
from tests.conftest import configured_param_count, repo_params

# Builds Keras models: imports TensorFlow, which `make check` leaves out.
pytestmark = pytest.mark.keras

REFERENCE_SHAPES = [
    (32, 32, 32), (30, 30, 32), (15, 15, 32),
    (15, 15, 64), (13, 13, 64), (6, 6, 64),
    (6, 6, 64), (4, 4, 64), (2, 2, 64),
    (256,), (512,), (10,),
]  # fmt: skip


def shape_changing_outputs(model: keras.Model) -> list[tuple[int, ...]]:
    """Output shapes of the conv, pool, flatten and dense layers, in order."""
    kinds = (
        keras.layers.Conv2D,
        keras.layers.MaxPooling2D,
        keras.layers.Flatten,
        keras.layers.Dense,
    )
    return [tuple(layer.output.shape[1:]) for layer in model.layers if isinstance(layer, kinds)]


def test_default_model_is_the_reference_architecture() -> None:
    model = build_model(repo_params().model)
    assert shape_changing_outputs(model) == REFERENCE_SHAPES
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    # The one place the reference's parameter count is asserted.
    assert trainable == 276_138
    assert model.count_params() == trainable  # rescaling adds nothing
    assert model.inputs[0].dtype == "uint8"


def test_model_rescales_raw_uint8_pixels_itself() -> None:
    model = build_model(repo_params().model)
    rescale = keras.Model(model.inputs, model.get_layer("rescale").output)
    pixels = np.array([[[[0, 128, 255]] * 32] * 32], dtype=np.uint8)
    out = np.asarray(rescale(pixels))
    np.testing.assert_allclose(out[0, 0, 0], [0.0, 128 / 255, 1.0], rtol=1e-6)


def test_augmentation_changes_training_inputs_only() -> None:
    model = build_model(repo_params("model.reference.augment=true").model, seed=1)
    assert model.count_params() == configured_param_count()  # augmentation adds no weights
    augmented = keras.Model(model.inputs, model.get_layer("augment_translate").output)
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    scaled = images.astype("float32") / 255
    np.testing.assert_allclose(np.asarray(augmented(images, training=False)), scaled, rtol=1e-6)
    assert not np.allclose(np.asarray(augmented(images, training=True)), scaled)
