"""Build the model that ``model.arch`` names, from its own params section ``model.<arch>``.

The one place the pipeline chooses a model: the builders are discovered in
``pipeline.train.architectures`` (one module each); everything else (training, checkpoints,
MLflow, serving, Kubeflow, benchmarks) only ever sees the Keras model this returns.
"""

from __future__ import annotations

import keras

from pipeline.core.params import ModelParams
from pipeline.train.architectures import ARCHITECTURES


def build_model(params: ModelParams, seed: int | None = None) -> keras.Model:
    """Build the (uncompiled) ``params.arch`` model from ``params.<arch>``; ``seed`` fixes its
    random layers (dropout, augmentation)."""
    return ARCHITECTURES[params.arch].build(params.selected, seed)


def model_summary(model: keras.Model) -> str:
    """The Keras layer table as plain text."""
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    return "\n".join(lines) + "\n"
