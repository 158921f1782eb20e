"""The registry of model architectures: ``model.arch`` names one, ``model.<arch>`` holds its params.

Every builder takes its own params section and a seed, and returns an uncompiled Keras model
with the same contract, so training, checkpoints, MLflow, serving and Kubeflow need no change
per architecture: input ``image`` of raw uint8 pixels (N x 32 x 32 x 3, rescaled inside the
model), output ``probs`` of float32 class probabilities (N x 10), augmentation only in training,
built-in Keras layers only (a served model loads without this project's code).

Adding an architecture: a module here with ``build(params, seed)``, one line in
``ARCHITECTURES``, its params section in pipeline/core/params.py (a class and a ``ModelParams``
field) and its defaults in params.yaml.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from pipeline.train.architectures import fast_resnet, reference

Builder = Callable[[Any, "int | None"], keras.Model]

# model.arch -> builder; the names are the ModelParams sections of pipeline/core/params.py.
ARCHITECTURES: dict[str, Builder] = {
    "reference": reference.build,
    "fast_resnet": fast_resnet.build,
}
