"""The reference CIFAR-10 CNN ("Convolutional Neural Network in Keras"), in plain Keras 3.

With the default ``model.reference`` params it is exactly the reference: three blocks of
conv(same) -> conv(valid) -> max-pool -> dropout with 32, 64, 64 filters, then
dense 512 -> dropout -> dense 10 softmax: 276,138 trainable parameters.

The model takes raw uint8 pixels and rescales them itself, so a saved or served model needs no
preprocessing outside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field, model_validator

from pipeline.core.section import Section
from pipeline.core.shapes import IMAGE_SHAPE, IMAGE_SIZE, NUM_CLASSES

if TYPE_CHECKING:
    import keras


class Params(Section):
    """``model.reference``: this CNN's section of params.yaml (which says what each key does)."""

    conv_filters: list[Annotated[int, Field(ge=1, le=4096)]] = Field(min_length=1, max_length=3)
    kernel_size: int = Field(ge=1, le=5)
    dense_units: int = Field(ge=1, le=8192)
    dropout_conv: float = Field(ge=0.0, lt=1.0)
    dropout_dense: float = Field(ge=0.0, lt=1.0)
    augment: bool

    @model_validator(mode="after")
    def _image_survives_the_blocks(self) -> Params:
        # Checked here, before TensorFlow loads: Keras would fail deep in model building.
        side = IMAGE_SIZE
        for block in range(1, len(self.conv_filters) + 1):
            after_conv = side - (self.kernel_size - 1)  # the "valid" conv trims kernel_size - 1
            if after_conv < 2:
                raise ValueError(
                    f"kernel_size {self.kernel_size} with {len(self.conv_filters)} conv blocks"
                    f" shrinks the {IMAGE_SIZE}x{IMAGE_SIZE} image to nothing (block {block}"
                    f" gets {side}x{side}, too small to convolve and pool); use a smaller"
                    " model.reference.kernel_size or fewer model.reference.conv_filters"
                )
            side = after_conv // 2
        return self


def build(params: Params, seed: int | None = None) -> keras.Model:
    """Build the (uncompiled) CNN described by ``params``; ``seed`` fixes init and dropout."""
    # Here, not at the top: the schema imports this module, and a params error answers without
    # loading TensorFlow.
    import keras
    from keras import layers

    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    if params.augment:
        # Random layers are identity at inference: augmentation only ever touches training.
        x = layers.RandomFlip("horizontal", seed=seed, name="augment_flip")(x)
        x = layers.RandomTranslation(0.1, 0.1, seed=seed, name="augment_translate")(x)
    for block, filters in enumerate(params.conv_filters, start=1):
        x = layers.Conv2D(filters, params.kernel_size, padding="same", activation="relu",
                          name=f"block{block}_conv_same")(x)  # fmt: skip
        x = layers.Conv2D(filters, params.kernel_size, activation="relu",
                          name=f"block{block}_conv_valid")(x)  # fmt: skip
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        x = layers.Dropout(params.dropout_conv, seed=seed, name=f"block{block}_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(params.dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(params.dropout_dense, seed=seed, name="dense_dropout")(x)
    # float32 output even under mixed precision: softmax in float16 loses small probabilities.
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name="cifar10_cnn")
