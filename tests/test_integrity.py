"""Leftovers of killed stages are cleaned at the next start (issue 25, item 14)."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.params import PreprocessParams
from pipeline.data.preprocess import run_preprocess
from tests.cifar_archive import build_archive


def test_preprocess_removes_the_temp_files_of_a_killed_run(tmp_path: Path) -> None:
    archive = tmp_path / "cifar.tar.gz"
    build_archive(archive, per_batch=60, n_test=50)
    prepared, reports = tmp_path / "prepared", tmp_path / "reports"
    # What a kill -9 during the writes leaves: temp files beside the targets, never renamed.
    leftovers = [prepared / ".train.npz.k1ll3d.tmp", reports / ".data_preview.png.x9.tmp"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    unrelated = prepared / "notes.txt"
    unrelated.write_text("mine")
    run_preprocess(
        archive, prepared, reports, PreprocessParams(val_size=50, max_train_images=None, seed=0)
    )
    assert [path for path in leftovers if path.exists()] == []
    assert unrelated.read_text() == "mine"
    assert (prepared / "train.npz").is_file()
    assert not (prepared / ".preprocess.lock").exists()
