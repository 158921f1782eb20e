"""The prepared data set on disk: ``{train,val,test}.npz`` and ``classes.json``.

Written and read only here, so the preprocess stage (writer) and the train and evaluate stages
(readers) agree on file names, array keys, dtypes and shapes. Each npz holds ``x`` (uint8
N x 32 x 32 x 3, HWC RGB) and ``y`` (uint8 labels N); classes.json the class names in label order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.paths import CLASSES_FILE
from pipeline.core.shapes import IMAGE_SHAPE

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One split: images ``x`` (uint8 N x 32 x 32 x 3), labels ``y`` and the file they came from."""

    x: np.ndarray
    y: np.ndarray
    path: Path


def split_path(prepared_dir: Path, split: str) -> Path:
    """Where ``split`` (train, val or test) lives in ``prepared_dir``."""
    return prepared_dir / f"{split}.npz"


def classes_path(prepared_dir: Path) -> Path:
    """Where the class names live in ``prepared_dir``."""
    return prepared_dir / CLASSES_FILE


def save_split(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write one split to ``path`` (any name: the caller writes to a temp file, then renames)."""
    # Through a file handle: given a path without ".npz", np.savez would append the suffix.
    # Uncompressed, because the arrays are read on every training run and load faster this way.
    with path.open("wb") as handle:
        np.savez(handle, x=x, y=y)


def classes_json(classes: Sequence[str]) -> str:
    """The text of classes.json for ``classes``."""
    return json.dumps(list(classes), indent=2) + "\n"


def read_classes(prepared_dir: Path) -> list[str]:
    """The class names in label order."""
    path = classes_path(prepared_dir)
    _require(path)
    try:
        classes = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PipelineError(
            f"{path}: not valid JSON ({exc}); rerun `dvc repro preprocess`"
        ) from None
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        raise PipelineError(f"{path}: expected a list of class names; rerun `dvc repro preprocess`")
    return classes


def read_split(prepared_dir: Path, split: str, num_classes: int) -> Split:
    """Load one split and check its shape, dtype and labels against ``num_classes``."""
    path = split_path(prepared_dir, split)
    _require(path)
    with np.load(path) as data:
        x, y = data["x"], data["y"]
    if len(x) == 0 or len(x) != len(y) or x.shape[1:] != IMAGE_SHAPE or x.dtype != np.uint8:
        raise PipelineError(
            f"{path}: expected x uint8 (N,{','.join(map(str, IMAGE_SHAPE))}) and y (N,), "
            f"got x {x.dtype} {x.shape}, y {y.shape}; rerun `dvc repro preprocess`"
        )
    if y.max() >= num_classes:
        raise PipelineError(
            f"{path}: label {int(y.max())} has no name in {CLASSES_FILE}; "
            "rerun `dvc repro preprocess`"
        )
    return Split(x, y, path)


def _require(path: Path) -> None:
    if not path.is_file():
        raise PipelineError(f"{path} not found; run `dvc repro preprocess` first")
