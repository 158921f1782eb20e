"""One JAX fit through ``pipeline.train.fit.fit``, for tests/test_jax_compiles.py.

    python -m tests.jax_fit_worker PREPARED_DIR OUT_DIR [key=value ...]

Trains with params.yaml plus the overrides on the prepared splits, logging every XLA
compilation, and writes to OUT_DIR: ``result.json`` (how often each step compiled, the history
rows) and ``weights.npz`` (the trained weights).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"

import jax
import numpy as np

from pipeline.core.params import load_params
from pipeline.train import backend
from pipeline.train.checkpoints import TrainingCheckpoint
from pipeline.train.fit import fit, load_prepared
from tests.conftest import REPO_ROOT


class CompileCounter(logging.Handler):
    """Counts JAX's "Compiling jit(NAME) ..." records (jax_log_compiles) by NAME."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Compiling jit("):
            name = message[len("Compiling jit(") :].split(")", 1)[0]
            self.counts[name] = self.counts.get(name, 0) + 1


def main(prepared: str, out: str, *overrides: str) -> None:
    counter = CompileCounter()
    logging.getLogger("jax").addHandler(counter)
    logging.getLogger("jax").setLevel(logging.DEBUG)
    logging.getLogger("pipeline").addHandler(logging.StreamHandler(sys.stderr))
    logging.getLogger("pipeline").setLevel(logging.INFO)
    jax.config.update("jax_log_compiles", True)
    params = load_params(REPO_ROOT / "params.yaml", list(overrides))
    # As the train stage does: the same seed, the same initial weights in every case.
    backend.configure_determinism(params.train.seed, params.train.deterministic)
    history: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = fit(
            load_prepared(Path(prepared)),
            params.model,
            params.train,
            TrainingCheckpoint(Path(tmp), {}),
            "padding",
            None,
            history.append,
        )
    out_dir = Path(out)
    np.savez(out_dir / "weights.npz", *[np.asarray(w) for w in model.get_weights()])
    result = {"compiles": counter.counts, "history": history}
    (out_dir / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
