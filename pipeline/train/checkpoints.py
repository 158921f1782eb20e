"""Per-epoch training checkpoints, so a killed train stage resumes instead of starting over.

They live outside every DVC output (DVC deletes a stage's outputs before rerunning it), in a
git-ignored folder keyed by a hash of the params and the input data. The state also records the
md5 of the training code (``pipeline.train.code_digest``): a checkpoint is only ever resumed by the
very training it came from, and one made by other code, or no longer readable, is discarded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pipeline.core.atomic import atomic_path, save_keras_atomically, write_json
from pipeline.core.errors import PipelineError
from pipeline.core.locks import exclusive_lock
from pipeline.train.code_digest import changed_files

log = logging.getLogger("pipeline")

# A second training of the same params and data gives up after this long: the holder may train
# for hours, and waiting on it silently would look like a hang.
LOCK_WAIT_S = 3.0


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


def load_best_weights(model: keras.Model, path: Path) -> None:
    """Set ``model``'s weights to those ``TrainingCheckpoint.save`` kept as the best."""
    with np.load(path) as saved:
        model.set_weights([saved[name] for name in sorted(saved.files)])


class TrainingCheckpoint:
    """The checkpoint folder of one training: ``state.json`` plus the files it names.

    Each epoch writes new, epoch-numbered model files first (each beside, then renamed) and the
    state that points at them last, so a kill or a full disk at any moment leaves either the old
    or the new state, both complete, and no half-written file.
    """

    def __init__(
        self,
        folder: Path,
        code: dict[str, str],
        runtime: dict[str, str] | None = None,
        expected_model: Callable[[], keras.Model] | None = None,
    ) -> None:
        """``code``: md5 per training source file; ``runtime``: what the weights depend on
        beyond params and code (``{"keras.backend": ..., "train.precision_policy": ...}``);
        ``expected_model``: builds the network this training trains, called only when there is
        a checkpoint to compare with it."""
        self.folder = folder
        self.code = code
        self.runtime = runtime or {}
        self.expected_model = expected_model
        self.state_path = folder / "state.json"
        # Set by load(): the MLflow run of a checkpoint it threw away.
        self.discarded_run_id: str | None = None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this checkpoint for one training; a second one fails naming the holder."""
        with exclusive_lock(
            self.folder.with_name(self.folder.name + ".lock"),
            f"the checkpoint {self.folder} (same params and data)",
            LOCK_WAIT_S,
            "another training of the same params is running: wait for it, or stop it",
        ):
            yield

    def load(self) -> ResumeState | None:
        """The saved state, or None if there is nothing to resume.

        A checkpoint made by other code, or one that cannot be read, is deleted with a one-line
        message saying why: the training then starts afresh, and ``discarded_run_id`` names the
        MLflow run it belonged to (if state.json still says), which will never be resumed.
        """
        self.discarded_run_id = None
        if not self.state_path.is_file():
            # Killed before its first state was written: nothing to resume, nothing to say.
            self.remove()
            return None
        try:
            state = self._read_state()
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            reason = f"state.json lacks {exc}" if isinstance(exc, KeyError) else str(exc)
            reason = " ".join(reason.split()) or type(exc).__name__
            log.warning(
                "discarding corrupt checkpoint %s (%s): starting afresh", self.folder, reason
            )
            self._discard()
            return None
        written = state.get("runtime") or {}
        if written != self.runtime:
            # Resuming JAX + bfloat16 weights under TensorFlow + float32 trains, but the run's
            # backend and precision tags would describe only the last epochs.
            log.warning(
                "discarding checkpoint %s: written with %s, this training uses %s: starting afresh",
                *(self.folder, _describe(written), _describe(self.runtime)),
            )
            self._discard()
            return None
        foreign = self._foreign_model(self.folder / state["model"])
        if foreign:
            # A valid Keras file of another network put in its place: resumed, it trained with
            # a loss of hundreds and every later run failed on its metrics (issue 31).
            log.warning(
                "discarding checkpoint %s: its model is not the network this training builds "
                "(%s): starting afresh",
                *(self.folder, foreign),
            )
            self._discard()
            return None
        changed = changed_files(state.get("code") or {}, self.code)
        if changed:
            shown = ", ".join(changed[:5]) + (", ..." if len(changed) > 5 else "")
            if not state.get("code"):
                shown = "it records no code version"
            log.warning(
                "discarding checkpoint %s: the training code changed since it was made (%s): "
                "starting afresh",
                *(self.folder, shown),
            )
            self._discard()
            return None
        best = state.get("best")
        return ResumeState(
            epochs_done=state["epochs_done"],
            run_id=state["run_id"],
            history=state["history"],
            model_path=self.folder / state["model"],
            best_path=self.folder / best if best else None,
            best_score=state.get("best_score"),
        )

    def _foreign_model(self, path: Path) -> str | None:
        """How the model at ``path`` differs from ``expected_model``'s, or None if it does not."""
        if self.expected_model is None:
            return None
        found, expected = keras.saving.load_model(path), self.expected_model()
        for what, of in (("input shape", _input_shape), ("weight shapes", _weight_shapes)):
            if of(found) != of(expected):
                return f"{what} {_brief(of(found))}, expected {_brief(of(expected))}"
        return None

    def _discard(self) -> None:
        """Delete the checkpoint, remembering the run it was for, when state.json says."""
        try:
            run_id = json.loads(self.state_path.read_text(encoding="utf-8")).get("run_id")
        except (OSError, ValueError, AttributeError):
            run_id = None
        self.discarded_run_id = run_id if isinstance(run_id, str) else None
        self.remove()

    def _read_state(self) -> dict[str, Any]:
        """state.json, checked down to the integrity of the files it names."""
        state = json.loads(self.state_path.read_text(encoding="utf-8"))
        if not isinstance(state["epochs_done"], int) or not isinstance(state["run_id"], str):
            raise TypeError("state.json: epochs_done or run_id has the wrong type")
        if not isinstance(state["history"], list) or len(state["history"]) != state["epochs_done"]:
            raise ValueError("state.json: history does not match epochs_done")
        for name in (state["model"], state.get("best")):
            if name is not None:
                _check_zip(self.folder / name)
        _check_loads(self.folder / state["model"])
        return state

    def save(
        self,
        model: keras.Model,
        epochs_done: int,
        run_id: str,
        history: list[dict[str, float]],
        best_score: float | None,
        is_best: bool,
    ) -> None:
        """Record the state after ``epochs_done`` epochs; ``is_best`` also keeps these weights.

        A failed write (full disk, read-only folder) removes what it began and raises a
        PipelineError; the previous state stays valid.
        """
        try:
            self._save(model, epochs_done, run_id, history, best_score, is_best)
        except OSError as exc:
            raise PipelineError(
                f"cannot write the checkpoint in {self.folder}: {exc.strerror or exc}"
            ) from None

    def _save(
        self,
        model: keras.Model,
        epochs_done: int,
        run_id: str,
        history: list[dict[str, float]],
        best_score: float | None,
        is_best: bool,
    ) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        previous = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        model_name = f"epoch-{epochs_done}.keras"
        best_name = previous.get("best")
        written: list[Path] = []
        try:
            save_keras_atomically(model, self.folder / model_name)  # with the optimizer state
            written.append(self.folder / model_name)
            if is_best:
                # npz through Python file I/O, not HDF5: h5py crashes (SIGSEGV) on a full disk.
                best_name = f"best-{epochs_done}.weights.npz"
                with atomic_path(self.folder / best_name) as tmp, open(tmp, "wb") as handle:
                    np.savez(handle, **{f"{i:05d}": w for i, w in enumerate(model.get_weights())})
                written.append(self.folder / best_name)
            write_json(
                self.state_path,
                {
                    "epochs_done": epochs_done,
                    "run_id": run_id,
                    "model": model_name,
                    "best": best_name,
                    "best_score": best_score,
                    "history": history,
                    "code": self.code,
                    "runtime": self.runtime,
                },
            )
        except OSError:
            # Files no state points at would only take up the full disk.
            for path in written:
                path.unlink(missing_ok=True)
            raise
        for stale in self.folder.iterdir():
            if stale.name not in {"state.json", model_name, best_name}:
                stale.unlink(missing_ok=True)

    def remove(self) -> None:
        """Delete the checkpoint: called once training has finished and its outputs are written."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _check_loads(path: Path) -> None:
    """Raise ValueError if Keras cannot load the checkpoint's model, a whole zip as it may be.

    A config naming a class this code no longer has ("Could not locate class") would otherwise
    fail every rerun until someone deleted the checkpoint by hand. Costs one extra load, once
    per resume.
    """
    try:
        keras.saving.load_model(path)
    except Exception as exc:  # Keras raises many types for a config it cannot rebuild
        message = " ".join(str(exc).split())[:300]
        raise ValueError(f"{path.name} cannot be loaded: {message}") from None


def _input_shape(model: keras.Model) -> list[object]:
    return list(model.input_shape)


def _weight_shapes(model: keras.Model) -> list[object]:
    return [tuple(weight.shape) for weight in model.weights]


def _brief(value: list[object]) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(runtime: dict[str, str]) -> str:
    """``keras.backend jax, train.precision_policy mixed_bfloat16``, or what is missing."""
    if not runtime:
        return "no recorded backend or precision"
    return ", ".join(f"{key} {value}" for key, value in sorted(runtime.items()))


def _check_zip(path: Path) -> None:
    """Raise if ``path`` is missing, truncated or fails a CRC (.keras and .npz are zips)."""
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise zipfile.BadZipFile(f"{path.name}: member {bad} fails its CRC")
