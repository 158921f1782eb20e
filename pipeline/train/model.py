"""Build the model that ``model.arch`` names, from its own params section ``model.<arch>``.

The one place the pipeline chooses a model: the builders are discovered in
``pipeline.train.architectures`` (one module each); everything else (training, checkpoints,
MLflow, serving, Kubeflow, benchmarks) only ever sees the Keras model this returns.
"""

from __future__ import annotations

import keras
import numpy as np

from pipeline.core.params import ModelParams
from pipeline.train.architectures import ARCHITECTURES


def build_model(
    params: ModelParams, seed: int | None = None, train_x: np.ndarray | None = None
) -> keras.Model:
    """Build the (uncompiled) ``params.arch`` model from ``params.<arch>``; ``seed`` fixes its
    random layers (dropout, augmentation). With ``train_x`` (a new training), layers that the
    architecture computes from the training images are set from them."""
    architecture = ARCHITECTURES[params.arch]
    model = architecture.build(params.selected, seed)
    if train_x is not None and architecture.fit_to_data is not None:
        architecture.fit_to_data(model, params.selected, train_x)
    return model


def model_summary(model: keras.Model) -> str:
    """The Keras layer table as plain text."""
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    return "\n".join(lines) + "\n"
