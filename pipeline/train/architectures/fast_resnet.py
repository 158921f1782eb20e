"""A small fast residual net for CIFAR-10, after the speed records (the Myrtle ResNet-9,
hlb-CIFAR10, airbench94), in plain Keras 3 layers (TensorFlow and JAX backends).

stem conv -> per width in ``widths`` a block: conv -> max-pool -> BatchNorm -> activation, then
``convs_per_block - 1`` x (conv -> BatchNorm -> activation), added back to the block's first
output when ``residual`` -> global max-pool -> dense (no bias) -> logits scaled by
``logit_scale`` -> softmax. The Myrtle ResNet-9 layer is 3 convs, residual; airbench94's is 2,
plain. Convs have no bias (BatchNorm follows), BatchNorm
has no learned scale and a low running-statistics momentum, as in airbench94.

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

# CIFAR-10's per-channel training-set mean and standard deviation (pixels scaled to 0-1):
# constants, so the model standardises its raw input without statistics from the data split.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class Params(Section):
    """``model.fast_resnet``: this net's section of params.yaml (which says what each key does)."""

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
