"""``reports/history.csv``: one row per training epoch, written by train, read by evaluate.

Its columns are defined once, here, for both sides.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.atomic import atomic_path
from pipeline.core.errors import PipelineError

if TYPE_CHECKING:  # imported where read: training (write_history) must not need pandas
    import pandas as pd

# epoch counts from 1; seconds and images_per_s time the epoch's training pass.
COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "images_per_s")

EpochRow = dict[str, float]


def write_history(path: Path, rows: list[EpochRow]) -> None:
    """Atomically write ``rows`` as the history CSV; a key not in ``COLUMNS`` is refused.

    A new per-epoch metric (a Keras metric, a learning-rate log) must be added to ``COLUMNS``
    on purpose, rather than be dropped from the file without a word.
    """
    unknown = sorted({key for row in rows for key in row} - set(COLUMNS))
    if unknown:
        raise PipelineError(
            f"{path}: per-epoch values {unknown} have no history column; add them to COLUMNS "
            "in pipeline/artifacts/history.py (and to metric_names.EPOCH to log them to MLflow)"
        )
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def read_history(path: Path) -> pd.DataFrame:
    """The per-epoch training history the train stage wrote."""
    if not path.is_file():
        raise PipelineError(
            f"{path} not found: the model is not trained yet; run `dvc repro train`"
        )
    import pandas as pd  # only evaluate reads; the GPU machine's training has no pandas

    history = pd.read_csv(path)
    missing = [column for column in COLUMNS if column not in history.columns]
    if missing:
        raise PipelineError(f"{path}: missing columns {missing}; rerun `dvc repro train`")
    return history
