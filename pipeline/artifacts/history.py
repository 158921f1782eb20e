"""``reports/history.csv``: one row per training epoch, written by train, read by evaluate.

Its columns are defined once, here, for both sides.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from pipeline.core.atomic import atomic_path
from pipeline.core.errors import PipelineError

# epoch counts from 1; seconds and images_per_s time the epoch's training pass.
COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "images_per_s")

EpochRow = dict[str, float]


def write_history(path: Path, rows: list[EpochRow]) -> None:
    """Atomically write ``rows`` (extra keys ignored) as the history CSV."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_history(path: Path) -> pd.DataFrame:
    """The per-epoch training history the train stage wrote."""
    if not path.is_file():
        raise PipelineError(
            f"{path} not found: the model is not trained yet; run `dvc repro train`"
        )
    history = pd.read_csv(path)
    missing = [column for column in COLUMNS if column not in history.columns]
    if missing:
        raise PipelineError(f"{path}: missing columns {missing}; rerun `dvc repro train`")
    return history
