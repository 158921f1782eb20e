"""A small fast residual net for CIFAR-10, after the speed records (the Myrtle ResNet-9,
hlb-CIFAR10, airbench94), in plain Keras 3 layers (TensorFlow and JAX backends).

stem (a conv, or a frozen patch-whitening conv) -> per width in ``widths`` a block: conv ->
max-pool -> BatchNorm -> activation, then
``convs_per_block - 1`` x (conv -> BatchNorm -> activation), added back to the block's first
output when ``residual`` -> global max-pool -> dense (no bias) -> logits scaled by
``logit_scale`` -> softmax. The Myrtle ResNet-9 layer is 3 convs, residual; airbench94's is 2,
plain. Convs have no bias (BatchNorm follows), BatchNorm
has no learned scale and a low running-statistics momentum, as in airbench94.

``stem: whiten`` is airbench94's first layer: a 2x2 convolution whose 24 filters are the
eigenvectors of the training images' 2x2-patch covariance, scaled by 1/sqrt(eigenvalue), and
their negatives. It is computed from the training split by :func:`fit_to_data` before the first
step and never trained, so the first trained layer sees decorrelated inputs of unit variance.

Same contract as every architecture (see ``pipeline.train.architectures``): raw uint8 pixels in,
rescaled and standardised inside the model; float32 probabilities out; flip and translate
augmentation are Keras random layers, so they run on the training device and are identity at
inference. The recipe that makes it fast (Nesterov SGD, label smoothing, weight decay, one-cycle
schedule, big batches) is in ``train.*`` and profiles/fast-resnet.yaml.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from pipeline.core.section import Section
from pipeline.core.shapes import IMAGE_SHAPE, IMAGE_SIZE, NUM_CLASSES

if TYPE_CHECKING:
    import keras
    import numpy as np

# CIFAR-10's per-channel training-set mean and standard deviation (pixels scaled to 0-1):
# constants, so the model standardises its raw input without statistics from the data split.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# airbench94's whitening: 2x2 patches (12 values) -> 12 eigenvectors and their negatives; the
# first 5,000 training images estimate the covariance; eps keeps near-zero eigenvalues finite.
WHITEN_PATCH, WHITEN_IMAGES, WHITEN_EPS = 2, 5000, 5e-4
WHITEN_LAYER = "stem_whiten"


class Params(Section):
    """``model.fast_resnet``: this net's section of params.yaml (which says what each key does)."""

    stem: Literal["conv", "whiten"]
    stem_width: int = Field(ge=1, le=1024)
    widths: list[Annotated[int, Field(ge=1, le=4096)]] = Field(min_length=1, max_length=5)
    convs_per_block: int = Field(ge=1, le=4)
    residual: bool
    activation: Literal["relu", "gelu"]
    batchnorm_momentum: float = Field(ge=0.0, lt=1.0)
    logit_scale: float = Field(gt=0.0, le=10.0)
    augment: bool
    translate_pixels: int = Field(ge=0, le=8)


def build(params: Params, seed: int | None = None) -> keras.Model:
    """Build the (uncompiled) net described by ``params``; ``seed`` fixes the augmentation."""
    # Here, not at the top: the schema imports this module, and a params error answers without
    # loading TensorFlow.
    import keras
    from keras import layers

    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    if params.augment:
        # Random layers are identity at inference: augmentation only ever touches training.
        x = layers.RandomFlip("horizontal", seed=seed, name="augment_flip")(x)
        if params.translate_pixels:
            shift = params.translate_pixels / IMAGE_SIZE
            # Whole-pixel shifts with reflected borders, as the records do (no bilinear blur).
            x = layers.RandomTranslation(
                shift, shift, fill_mode="reflect", interpolation="nearest", seed=seed,
                name="augment_translate",
            )(x)  # fmt: skip
    x = layers.Normalization(
        mean=list(CIFAR10_MEAN), variance=[s * s for s in CIFAR10_STD], name="standardize"
    )(x)
    if params.stem == "whiten":
        patch_values = WHITEN_PATCH * WHITEN_PATCH * len(CIFAR10_MEAN)
        # Frozen: fit_to_data sets the kernel once; its BatchNorm's offset is the trained bias.
        x = layers.Conv2D(
            2 * patch_values, WHITEN_PATCH, padding="valid", use_bias=False, trainable=False,
            name=WHITEN_LAYER,
        )(x)  # fmt: skip
        x = _bn_act(x, params, "stem")
    else:
        x = _conv_bn_act(x, params.stem_width, params, "stem")
    for block, width in enumerate(params.widths, start=1):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        x = _bn_act(x, params, f"block{block}")
        y = x
        for conv in range(2, params.convs_per_block + 1):
            y = _conv_bn_act(y, width, params, f"block{block}_conv{conv}")
        # The rest of the block as a residual branch (ResNet-9), or plain (airbench94).
        x = (
            layers.Add(name=f"block{block}_residual")([x, y])
            if params.residual and y is not x
            else y
        )
    x = layers.GlobalMaxPooling2D(name="global_pool")(x)
    x = layers.Dense(NUM_CLASSES, use_bias=False, name="logits")(x)
    # Small logits early in training (airbench's 1/9): a calmer start at high learning rates.
    x = layers.Rescaling(params.logit_scale, name="logit_scale")(x)
    # float32 output even under mixed precision: softmax in 16 bits loses small probabilities.
    outputs = layers.Activation("softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name="cifar10_fast_resnet")


def fit_to_data(model: keras.Model, params: Params, train_x: np.ndarray) -> None:
    """Set the whitening stem's kernel from the training images (``stem: whiten``; else no-op).

    Deterministic: the first ``WHITEN_IMAGES`` images of the split, float64 covariance.
    """
    if params.stem != "whiten":
        return
    import numpy as np

    images = train_x[:WHITEN_IMAGES].astype(np.float32) / 255
    images = (images - np.float32(CIFAR10_MEAN)) / np.float32(CIFAR10_STD)  # as "standardize"
    size, channels = WHITEN_PATCH, images.shape[-1]
    values = size * size * channels
    covariance = np.zeros((values, values))
    for start in range(0, len(images), 500):  # chunks: all patches at once would be ~0.5 GB
        windows = np.lib.stride_tricks.sliding_window_view(
            images[start : start + 500], (size, size), axis=(1, 2)
        )  # (n, h', w', channels, size, size)
        patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, values).astype(np.float64)
        covariance += patches.T @ patches
    patch_count = len(images) * (images.shape[1] - size + 1) * (images.shape[2] - size + 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance / patch_count)
    order = np.argsort(eigenvalues)[::-1]  # strongest direction first
    scaled = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + WHITEN_EPS)
    # Columns follow the patch's (row, column, channel) order: Conv2D's kernel layout.
    kernel = np.concatenate([scaled, -scaled], axis=1).reshape(size, size, channels, 2 * values)
    model.get_layer(WHITEN_LAYER).set_weights([kernel.astype(np.float32)])


def _conv_bn_act(x: keras.KerasTensor, width: int, params: Params, name: str) -> keras.KerasTensor:
    from keras import layers

    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    return _bn_act(x, params, name)


def _bn_act(x: keras.KerasTensor, params: Params, name: str) -> keras.KerasTensor:
    from keras import layers

    x = layers.BatchNormalization(
        momentum=params.batchnorm_momentum, scale=False, name=f"{name}_bn"
    )(x)
    return layers.Activation(params.activation, name=f"{name}_{params.activation}")(x)
