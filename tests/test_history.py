"""reports/history.csv: the train stage's per-epoch rows, read back by evaluate."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.artifacts.history import COLUMNS, read_history, write_history
from pipeline.core.errors import PipelineError
from pipeline.tracking import metric_names

ROW = {
    "epoch": 1,
    "loss": 2.1,
    "accuracy": 0.2,
    "val_loss": 2.0,
    "val_accuracy": 0.25,
    "seconds": 3.0,
    "images_per_s": 100.0,
}


def test_rows_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    write_history(path, [ROW, {**ROW, "epoch": 2, "loss": 1.9}])
    history = read_history(path)
    assert list(history.columns) == list(COLUMNS)
    assert history["loss"].tolist() == [2.1, 1.9]


def test_a_metric_without_a_column_is_refused_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    with pytest.raises(PipelineError, match=r"\['top5_accuracy'\] have no history column"):
        write_history(path, [{**ROW, "top5_accuracy": 0.6}])
    assert not path.exists(), "nothing half-written"


def test_every_column_but_the_epoch_is_logged_to_mlflow() -> None:
    assert set(metric_names.EPOCH) == set(COLUMNS) - {"epoch"}
