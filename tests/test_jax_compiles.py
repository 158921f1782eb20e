"""What JAX compiles when the pipeline trains: each step once per batch shape.

train.pad_last_batch pads the last short batch with zero-weight images, so the train and test
steps compile for one shape, and training is what it was without padding. A model with
RandomTranslation (the fast net) is compiled at all: Keras would run it op by op.

Each case is a fresh JAX process (tests/jax_fit_worker.py), on 100 training and 50 validation
images in batches of 32: last batches of 4 and 18.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import QUIET_ENV, REPO_ROOT, write_prepared

pytestmark = [pytest.mark.keras, pytest.mark.e2e]

# Dropout off: a padded batch draws its dropout masks for 32 rows, not 4, so with dropout the
# same training differs in which units drop, not in what it computes.
REFERENCE = (
    "model.reference.conv_filters=[4]", "model.reference.dense_units=8",
    "model.reference.dropout_conv=0.0", "model.reference.dropout_dense=0.0",
    "train.epochs=2", "train.batch_size=32", "train.optimizer=sgd", "train.learning_rate=0.05",
    "train.mixed_precision=off",
)  # fmt: skip


def train_on_jax(tmp_path: Path, name: str, *overrides: str) -> tuple[dict, list[np.ndarray]]:
    """Run the worker; (its result.json, its trained weights)."""
    prepared = tmp_path / "prepared"
    if not prepared.exists():
        write_prepared(prepared, {"train": 100, "val": 50})
    out = tmp_path / name
    out.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "tests.jax_fit_worker", str(prepared), str(out), *overrides],
        cwd=REPO_ROOT, env={**os.environ, **QUIET_ENV, "KERAS_BACKEND": "jax"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    result["stderr"] = done.stderr
    with np.load(out / "weights.npz") as weights:
        return result, [weights[key] for key in sorted(weights.files, key=lambda k: int(k[4:]))]


def test_padding_compiles_each_step_once_and_trains_the_same(tmp_path: Path) -> None:
    padded, padded_weights = train_on_jax(tmp_path, "padded", *REFERENCE)
    short, short_weights = train_on_jax(tmp_path, "short", *REFERENCE, "train.pad_last_batch=false")
    assert "last batches padded to 32 images" in padded["stderr"]
    # Without padding the short last batches compile a second train step and test step.
    assert (short["compiles"]["train_step"], short["compiles"]["test_step"]) == (2, 2)
    assert (padded["compiles"]["train_step"], padded["compiles"]["test_step"]) == (1, 1)
    # The padding weighs nothing: the same weights, the same validation figures.
    for after_padded, after_short in zip(padded_weights, short_weights, strict=True):
        np.testing.assert_allclose(after_padded, after_short, rtol=1e-5, atol=1e-6)
    for key in ("accuracy", "val_accuracy"):
        assert [row[key] for row in padded["history"]] == pytest.approx(
            [row[key] for row in short["history"]], rel=1e-5
        ), key
    # Keras averages an epoch's batch losses weighted by batch size, so the reported mean loss
    # counts a padded batch as 32 images (here 4 of 100 training images weigh 32 of 128: 0.7%
    # off measured; 200 of 45,000 in batches of 256 would weigh 0.1% too much). The weights
    # above are what trains.
    for key in ("loss", "val_loss"):
        assert [row[key] for row in padded["history"]] == pytest.approx(
            [row[key] for row in short["history"]], rel=2e-2
        ), key


def test_the_fast_net_is_compiled_but_not_padded(tmp_path: Path) -> None:
    # Its RandomTranslation would have Keras run it uncompiled; BatchNorm's batch statistics
    # would count padding images, so its short batch stays (and compiles a second step).
    result, _ = train_on_jax(
        tmp_path, "batchnorm", "model.arch=fast_resnet", "model.fast_resnet.stem_width=4",
        "model.fast_resnet.widths=[4]", "train.epochs=1", "train.batch_size=32",
    )  # fmt: skip
    assert "XLA/JIT on" in result["stderr"]
    assert "not padding the last batch: the model has BatchNorm" in result["stderr"]
    assert result["compiles"].get("train_step") == 2, result["compiles"]
