"""Per-epoch training checkpoints, so a killed train stage resumes instead of starting over.

They live outside every DVC output (DVC deletes a stage's outputs before rerunning it), in a
git-ignored folder keyed by a hash of the params and the input data: a checkpoint is only
ever resumed by the very training it came from.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from pipeline.atomic import write_json


@dataclass
class ResumeState:
    """What a previous, interrupted training left behind."""

    epochs_done: int
    run_id: str
    history: list[dict[str, float]]
    model_path: Path
    best_path: Path | None = None
    best_score: float | None = None


def checkpoint_key(params: dict[str, Any], data_md5: str) -> str:
    """A short hash of the training params and input data: the checkpoint's folder name."""
    blob = json.dumps({"params": params, "data": data_md5}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class TrainingCheckpoint:
    """The checkpoint folder of one training: ``state.json`` plus the files it names.

    Each epoch writes new, epoch-numbered model files first and the state that points at them
    last, so a kill at any moment leaves either the old or the new state, both complete.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.state_path = folder / "state.json"

    def load(self) -> ResumeState | None:
        """The saved state, or None if there is nothing (complete) to resume."""
        if not self.state_path.is_file():
            return None
        state = json.loads(self.state_path.read_text())
        model_path = self.folder / state["model"]
        if not model_path.is_file():
            return None
        best = state.get("best")
        return ResumeState(
            epochs_done=state["epochs_done"],
            run_id=state["run_id"],
            history=state["history"],
            model_path=model_path,
            best_path=self.folder / best if best else None,
            best_score=state.get("best_score"),
        )

    def save(
        self,
        model: keras.Model,
        epochs_done: int,
        run_id: str,
        history: list[dict[str, float]],
        best_score: float | None,
        is_best: bool,
    ) -> None:
        """Record the state after ``epochs_done`` epochs; ``is_best`` also keeps these weights."""
        self.folder.mkdir(parents=True, exist_ok=True)
        previous = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        model_name = f"epoch-{epochs_done}.keras"
        model.save(self.folder / model_name)  # includes the optimizer state
        best_name = previous.get("best")
        if is_best:
            best_name = f"best-{epochs_done}.weights.h5"
            model.save_weights(self.folder / best_name)
        write_json(
            self.state_path,
            {
                "epochs_done": epochs_done,
                "run_id": run_id,
                "model": model_name,
                "best": best_name,
                "best_score": best_score,
                "history": history,
            },
        )
        for stale in self.folder.iterdir():
            if stale.name not in {"state.json", model_name, best_name}:
                stale.unlink(missing_ok=True)

    def remove(self) -> None:
        """Delete the checkpoint: called once training has finished and its outputs are written."""
        shutil.rmtree(self.folder, ignore_errors=True)
