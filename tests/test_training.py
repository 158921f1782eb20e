"""pipeline.train.fit in process: optimizer and learning-rate wiring, train.restore_best.

Small models on tiny data, no MLflow: these check that params reach Keras, not the stage.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.core.params import Params
from pipeline.train import backend
from pipeline.train.checkpoints import TrainingCheckpoint
from pipeline.train.fit import fit, load_prepared, new_model
from pipeline.train.train import final_metrics
from tests.conftest import repo_params, write_prepared

# Builds Keras models: imports TensorFlow, which `make check` leaves out.
pytestmark = pytest.mark.keras

SMALL_MODEL = ["model.reference.conv_filters=[4]", "model.reference.dense_units=8"]


def params(*overrides: str) -> Params:
    """params.yaml with ``overrides`` applied, through the same schema as the stages."""
    return repo_params(*SMALL_MODEL, *overrides)


@pytest.mark.parametrize(
    ("name", "optimizer_class"),
    [("rmsprop", keras.optimizers.RMSprop), ("adam", keras.optimizers.Adam),
     ("sgd", keras.optimizers.SGD)],
)  # fmt: skip
def test_optimizer_and_learning_rate_come_from_params(name: str, optimizer_class: type) -> None:
    chosen = params(f"train.optimizer={name}", "train.learning_rate=0.0123")
    model = new_model(chosen.model, chosen.train)
    assert type(model.optimizer) is optimizer_class
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0123)


@pytest.mark.e2e
def test_learning_rate_changes_the_training_step(tmp_path: Path) -> None:
    """The same seed and data, two learning rates: the first step moves the weights differently."""
    data = load_prepared(write_prepared(tmp_path / "data", {"train": 20, "val": 10}))
    moved = []
    for rate in ("0.001", "0.1"):
        chosen = params("train.optimizer=sgd", f"train.learning_rate={rate}")
        keras.utils.set_random_seed(0)  # the same initial weights for both rates
        model = new_model(chosen.model, chosen.train)
        before = [np.asarray(w) for w in model.trainable_weights]
        model.train_on_batch(data.train_x[:20], data.train_y[:20])
        after = [np.asarray(w) for w in model.trainable_weights]
        moved.append(sum(float(np.abs(a - b).sum()) for a, b in zip(after, before, strict=True)))
    # Plain SGD: the step is the learning rate times the gradient, so 100x the rate ~ 100x.
    assert moved[1] / moved[0] == pytest.approx(100, rel=0.05)


def _fit(tmp_path: Path, restore_best: bool) -> tuple[keras.Model, list[dict], Path]:
    # Seeded and deterministic, this tiny model's val accuracy peaks at epoch 3 of 5 (checked
    # below as a precondition), so keeping the best epoch and keeping the last ones differ.
    prepared = write_prepared(tmp_path / "data", {"train": 200, "val": 60})
    chosen = params(
        "train.epochs=5", "train.batch_size=50", "train.learning_rate=0.01",
        "train.optimizer=adam", f"train.restore_best={str(restore_best).lower()}",
    )  # fmt: skip
    data = load_prepared(prepared)
    # Seeded as the train stage does, so earlier tests in this process change nothing.
    backend.configure_determinism(chosen.train.seed, chosen.train.deterministic)
    checkpoint = TrainingCheckpoint(tmp_path / "checkpoint", {})  # never resumed: no code check
    model, history = fit(data, chosen.model, chosen.train, checkpoint, "run", None, lambda _: None)
    return model, history, prepared


def _val_accuracy(model: keras.Model, prepared: Path) -> float:
    with np.load(prepared / "val.npz") as val:
        predicted = np.asarray(model.predict(val["x"], verbose=0)).argmax(axis=1)
        return float(np.mean(predicted == val["y"]))


@pytest.mark.e2e
@pytest.mark.parametrize("restore_best", [True, False])
def test_restore_best_keeps_the_best_validation_epoch(tmp_path: Path, restore_best: bool) -> None:
    model, history, prepared = _fit(tmp_path, restore_best)
    scores = [row["val_accuracy"] for row in history]
    best = int(np.argmax(scores))
    assert scores[best] > scores[-1], f"precondition: the last epoch must not be best: {scores}"
    kept = scores[best] if restore_best else scores[-1]
    assert _val_accuracy(model, prepared) == pytest.approx(kept, abs=1e-6)
    final = final_metrics(history, restore_best)
    assert final["val_accuracy"] == kept
    assert final["epoch"] == (best + 1 if restore_best else len(history))
