"""The registry of model architectures: ``model.arch`` names one, ``model.<arch>`` holds its params.

Each module in this folder is one architecture, named by the module (``reference.py`` is
``model.arch: reference``), and holds both halves of it: ``Params``, its params section (a
:class:`~pipeline.core.section.Section`), and ``build(params, seed)``; optionally
``fit_to_data(model, params, train_x)`` for layers computed from the training images. The
registry is discovered from the folder, and the ``model`` section of the schema
(pipeline/core/params.py) is built from it, so adding an architecture is its module here plus
its ``model.<name>`` section in params.yaml: no list to extend, no test to edit.

Every builder returns an uncompiled Keras model with the same contract, so training,
checkpoints, MLflow, serving and Kubeflow need no change per architecture: input ``image`` of
raw uint8 pixels (N x 32 x 32 x 3, rescaled inside the model), output ``probs`` of float32 class
probabilities (N x 10), augmentation only in training, built-in Keras layers only (a served
model loads without this project's code).

No module here imports Keras at its top: the schema imports them to validate params, and a
params error must answer without loading TensorFlow (builders import Keras inside ``build``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.core.section import Section

# The reference first: params.yaml's default, and the order the schema lists them in. The rest
# follow in name order, as discovered.
FIRST = "reference"


@dataclass(frozen=True)
class Architecture:
    """One module of this folder: its name (``model.arch``), params section and builder."""

    name: str
    params: type[Section]
    build: Callable[[Any, int | None], Any]  # (its Params, seed) -> an uncompiled keras.Model
    # Optional (model, its Params, training images) -> None: layers computed from the data
    # before the first step (the fast net's whitening stem).
    fit_to_data: Callable[[Any, Any, Any], None] | None = None


def _discover() -> dict[str, Architecture]:
    found: dict[str, Architecture] = {}
    names = sorted(info.name for info in pkgutil.iter_modules(__path__))
    for name in sorted(names, key=lambda name: name != FIRST):
        module = importlib.import_module(f"{__name__}.{name}")
        params, build = getattr(module, "Params", None), getattr(module, "build", None)
        if not (isinstance(params, type) and issubclass(params, Section) and callable(build)):
            # A developer's mistake in a new module: say what the registry expects of it.
            raise TypeError(
                f"{module.__file__}: an architecture module defines `class Params(Section)`"
                " and `build(params, seed)`"
            )
        found[name] = Architecture(name, params, build, getattr(module, "fit_to_data", None))
    return found


# model.arch -> its architecture, discovered once, at import.
ARCHITECTURES: dict[str, Architecture] = _discover()
