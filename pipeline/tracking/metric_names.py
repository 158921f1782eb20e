"""MLflow metric names, grouped with ``/`` so the MLflow UI draws one chart section per group.

Defined once, for the train stage (per-epoch and final metrics) and the evaluate stage (test
metrics). ``loss/train`` and ``loss/val`` share the ``loss`` section, and so on; the per-class
test figures get one section per statistic, ten bars each, apart from the headline ``test/``.
The DVC metrics files keep their own short, readable keys.
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
    """The metric of the kept epoch (or of the whole training) named ``name``."""
    return f"final/{name}"


def test(name: str) -> str:
    """A headline test-set metric: accuracy, loss, macro_f1, ..."""
    return f"test/{name}"


def test_per_class(statistic: str, class_name: str) -> str:
    """One class's precision, recall or f1 on the test set, e.g. ``test_f1/cat``."""
    return f"test_{statistic}/{class_name}"
