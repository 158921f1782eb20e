"""MLflow metric names, grouped with ``/`` so the MLflow UI draws one chart section per group.

Defined once, for the train stage (per-epoch metrics and the few figures of the whole training)
and the evaluate stage (test metrics). ``loss/train`` and ``loss/val`` share the ``loss``
section, and so on. The kept epoch's accuracy and loss are not repeated under another name (the
compare view would list each twice), and the per-class figures are no metrics at all (30 one-bar
charts): they are ``report/per_class.csv`` and the report's table. The DVC metrics files keep
their own short, readable keys.
"""

from __future__ import annotations

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


def logged_value(value: float) -> float:
    """``value`` as the pipeline logs and reports it: 4 significant digits, 0.18249999 -> 0.1825.

    MLflow's runs table shows stored values verbatim (its view state has no number format), so
    the digits stored are the digits shown. Past the 4th they are noise: on 10,000 test images
    accuracy moves in steps of 1e-4 and its standard error is about 0.004. Rounding here, for
    every metric the train and evaluate stages log (and the DVC metrics files written from the
    same figures), keeps ``0.1`` beside ``0.1825`` rather than ``0.0967367`` or float32 noise.
    """
    return float(f"{float(value):.4g}")


def test(name: str) -> str:
    """A headline test-set metric: accuracy, loss, macro_f1, ..."""
    return f"test/{name}"
