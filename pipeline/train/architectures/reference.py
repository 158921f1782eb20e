"""The reference CIFAR-10 CNN ("Convolutional Neural Network in Keras"), in plain Keras 3.

With the default ``model.reference`` params it is exactly the reference: three blocks of
conv(same) -> conv(valid) -> max-pool -> dropout with 32, 64, 64 filters, then
dense 512 -> dropout -> dense 10 softmax: 276,138 trainable parameters.

The model takes raw uint8 pixels and rescales them itself, so a saved or served model needs no
preprocessing outside it.
"""

from __future__ import annotations

import keras
from keras import layers

from pipeline.core.params import ReferenceParams
from pipeline.core.shapes import IMAGE_SHAPE, NUM_CLASSES


def build(params: ReferenceParams, seed: int | None = None) -> keras.Model:
    """Build the (uncompiled) CNN described by ``params``; ``seed`` fixes init and dropout."""
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
