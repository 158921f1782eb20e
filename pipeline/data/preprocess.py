"""The preprocess stage: archive -> train/val/test arrays, class names, a summary and a preview.

Everything is computed in memory first and only then written, each file through a temp file that
is renamed into place once all of them are written: bad input, or a failed write, leaves no
outputs from this run behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import prepared
from pipeline.core import paths
from pipeline.core.atomic import atomic_path
from pipeline.core.errors import PipelineError
from pipeline.core.locks import exclusive_lock
from pipeline.core.params import DataChecksParams, PreprocessParams
from pipeline.data.checks import check_data, data_report, describe
from pipeline.data.cifar import read_cifar_archive
from pipeline.data.preview import render_preview_grid
from pipeline.data.splits import prepare_splits

log = logging.getLogger("pipeline")

# Preprocessing takes seconds: a second one at once waits this long for the first.
LOCK_WAIT_S = 120.0


def run_preprocess(
    archive: Path,
    prepared_dir: Path,
    reports_dir: Path,
    params: PreprocessParams,
    limits: DataChecksParams | None = None,
) -> dict[str, Any]:
    """Read ``archive``, split it and write the prepared arrays and reports; return the summary.

    Writes ``prepared_dir/{train,val,test}.npz`` (``x`` uint8 N x 32 x 32 x 3, ``y`` uint8 N),
    ``prepared_dir/classes.json``, ``reports_dir/data_summary.json`` and
    ``reports_dir/data_preview.png`` and ``reports_dir/data_checks.json``. Raises PipelineError,
    writing nothing, on bad input or data that breaches ``limits`` (None: report only).
    """
    with exclusive_lock(
        prepared_dir / ".preprocess.lock",
        f"the prepared data in {prepared_dir}",
        LOCK_WAIT_S,
        "another preprocess is writing it: wait for it, or stop it",
    ):
        # Holding the lock, every temp file of ours is a killed run's: nobody will rename it.
        _remove_stale_temp_files(prepared_dir, reports_dir)
        return _preprocess(archive, prepared_dir, reports_dir, params, limits)


def _remove_stale_temp_files(prepared_dir: Path, reports_dir: Path) -> None:
    """Delete the ``.<target>.*.tmp`` files a kill -9 left beside this stage's outputs."""
    targets = [prepared.split_path(prepared_dir, name) for name in prepared.SPLITS]
    targets += [
        prepared.classes_path(prepared_dir),
        reports_dir / "data_summary.json",
        reports_dir / "data_preview.png",
        reports_dir / paths.DATA_CHECKS_FILE,
    ]
    for target in targets:
        for stale in target.parent.glob(f".{target.name}.*.tmp"):
            log.info("removing %s, left by an interrupted preprocess", stale)
            stale.unlink(missing_ok=True)


def _preprocess(
    archive: Path,
    prepared_dir: Path,
    reports_dir: Path,
    params: PreprocessParams,
    limits: DataChecksParams | None,
) -> dict[str, Any]:
    data = read_cifar_archive(archive)
    train_x, train_y, val_x, val_y = prepare_splits(
        data.train_x, data.train_y, params.val_size, params.max_train_images, params.seed
    )
    arrays = {
        "train": (train_x, train_y),
        "val": (val_x, val_y),
        "test": (data.test_x, data.test_y),
    }
    summary = summarise({name: y for name, (_, y) in arrays.items()}, data.classes)
    check_every_class_present(summary, archive)
    checks = data_report(arrays, data.classes)
    log.info("data checks: %s", describe(checks))
    if limits is not None:
        check_data(checks, limits)  # before any write: a breach leaves nothing downstream
    preview = render_preview_grid(train_x, train_y, data.classes)
    _write_outputs(prepared_dir, reports_dir, arrays, data.classes, summary, preview, checks)
    for line in describe_splits(summary):
        log.info("%s", line)
    return summary


def summarise(labels: dict[str, np.ndarray], classes: Sequence[str]) -> dict[str, Any]:
    """Image counts per split.

    ``{"train": {"total": N, "per_class": {"airplane": n, ...}}, "val": ..., "test": ...}``
    """
    summary: dict[str, Any] = {}
    for split, y in labels.items():
        counts = np.bincount(y, minlength=len(classes))
        summary[split] = {
            "total": len(y),
            "per_class": {name: int(count) for name, count in zip(classes, counts, strict=True)},
        }
    return summary


def check_every_class_present(summary: dict[str, Any], archive: Path) -> None:
    """Warn about a train or val split without some class; refuse a test split without one.

    The test batch is used as released, so a class missing there means the archive is not the
    CIFAR-10 test batch, and every metric of that class would be undefined.
    """
    consequences = {
        "train": "the model cannot learn it",
        "val": "validation accuracy says nothing about it",
    }
    for split in prepared.SPLITS:
        absent = [name for name, count in summary[split]["per_class"].items() if count == 0]
        if not absent:
            continue
        which = "class " + ", ".join(repr(name) for name in absent)
        if split == "test":
            raise PipelineError(
                f"{archive}: the test batch has no image of {which}: its test metrics would be"
                " undefined; this is not the CIFAR-10 test batch"
            )
        log.warning(
            "warning: the %s split has no image of %s: %s", split, which, consequences[split]
        )


def describe_splits(summary: dict[str, Any]) -> list[str]:
    """The log lines for the splits: one, ``images: train 2000 (200 per class), ...``, when
    every class has the same count within each split; else one per split (describe_split)."""
    counts = {split: set(summary[split]["per_class"].values()) for split in prepared.SPLITS}
    if all(len(values) == 1 for values in counts.values()):
        parts = [
            f"{split} {summary[split]['total']} ({next(iter(counts[split]))} per class)"
            for split in prepared.SPLITS
        ]
        return [f"images: {', '.join(parts)}"]
    return [describe_split(split, summary[split]) for split in prepared.SPLITS]


def describe_split(name: str, counts: dict[str, Any]) -> str:
    """One log line for a split, e.g. ``val: 5000 images (airplane 500, automobile 500, ...)``."""
    per_class = ", ".join(f"{cls} {n}" for cls, n in counts["per_class"].items())
    return f"{name}: {counts['total']} images ({per_class})"


def _write_outputs(
    prepared_dir: Path,
    reports_dir: Path,
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    classes: Sequence[str],
    summary: dict[str, Any],
    preview: bytes,
    checks: dict[str, Any],
) -> None:
    """Write every output; the renames happen only after all temp files are complete."""
    try:
        with contextlib.ExitStack() as stack:

            def temp_for(target: Path) -> Path:
                return stack.enter_context(atomic_path(target))

            for name, (x, y) in arrays.items():
                prepared.save_split(temp_for(prepared.split_path(prepared_dir, name)), x, y)
            temp_for(prepared.classes_path(prepared_dir)).write_text(prepared.classes_json(classes))
            temp_for(reports_dir / paths.DATA_SUMMARY_FILE).write_text(_json(summary))
            temp_for(reports_dir / paths.DATA_PREVIEW_FILE).write_bytes(preview)
            temp_for(reports_dir / paths.DATA_CHECKS_FILE).write_text(_json(checks))
    except OSError as exc:
        raise PipelineError(f"cannot write the preprocess outputs: {exc}") from None


def _json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"
