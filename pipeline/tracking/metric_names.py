"""MLflow metric names, grouped with ``/`` so the MLflow UI draws one chart section per group.

Defined once, for the train stage (per-epoch metrics and the few figures of the whole training)
and the evaluate stage (test metrics). ``loss/train`` and ``loss/val`` share the ``loss``
section, and so on. The kept epoch's accuracy and loss are not repeated under another name (the
compare view would list each twice), and the per-class figures are no metrics at all (30 one-bar
charts): they are ``report/per_class.csv`` and the report's table. The DVC metrics files keep
their own short, readable keys.
"""

from __future__ import annotations

import numpy as np

# history.csv column -> MLflow metric, logged with step = epoch.
EPOCH = {
    "loss": "loss/train",
    "val_loss": "loss/val",
    "accuracy": "accuracy/train",
    "val_accuracy": "accuracy/val",
    "seconds": "speed/epoch_seconds",
    "images_per_s": "speed/images_per_s",
}
TEST_ACCURACY = "test/accuracy"


def final(name: str) -> str:
    """A figure of the whole training (kept epoch, seconds, mean speed) named ``name``."""
    return f"final/{name}"


def float32_value(value: float) -> float:
    """``value`` to the digits a float32 holds: 0.27300000190734863 -> 0.273.

    Keras hands float32 figures over as Python floats; their noise digits fill MLflow's columns.
    """
    return float(str(np.float32(value)))


def test(name: str) -> str:
    """A headline test-set metric: accuracy, loss, macro_f1, ..."""
    return f"test/{name}"
