"""The data report of the preprocess stage: what is wrong with the data before any training.

Written and read only here (``reports/data_checks.json``, a DVC metrics file, so ``dvc exp show``
and ``make exps`` show it). For the prepared splits it counts:

- ``duplicates_train``: training images identical (every pixel) to an earlier training image;
- ``overlap_val_train`` / ``overlap_test_train``: validation / test images identical to a training
  image (a leak: the score on them measures memory, not generalisation);
- ``constant_<split>``: blank images, a single colour over every pixel;
- ``labels_out_of_range``: labels without a class name. The archive reader already refuses any
  (pipeline/data/cifar.py), so a prepared set always reports 0; the count is kept for the record.

Identity is by content hash (SHA-1 of the 3,072 pixel bytes): exact copies only. Near-duplicates
(CIFAR-10's test set holds some re-crops of training images) are not found this way.
Each count is compared, as a share of its split, with a ``checks`` threshold of params.yaml;
a breach stops the stage with one line before anything is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.params import DataChecksParams


def image_hashes(images: np.ndarray) -> list[bytes]:
    """The SHA-1 digest of each image's pixel bytes."""
    return [hashlib.sha1(image.tobytes(), usedforsecurity=False).digest() for image in images]


def constant_images(images: np.ndarray) -> np.ndarray:
    """Indices of the images that are one colour over every pixel."""
    flat = images.reshape(len(images), -1, images.shape[-1])
    return np.flatnonzero(np.all(flat == flat[:, :1, :], axis=(1, 2)))


def data_report(
    splits: dict[str, tuple[np.ndarray, np.ndarray]], classes: Sequence[str]
) -> dict[str, Any]:
    """The counts described in the module docstring, for ``{split: (x, y)}`` (train, val, test)."""
    train_hashes = image_hashes(splits["train"][0])
    seen: set[bytes] = set()
    duplicates = 0
    for digest in train_hashes:
        duplicates += digest in seen
        seen.add(digest)
    report: dict[str, Any] = {
        "images": {name: len(y) for name, (_, y) in splits.items()},
        "duplicates_train": duplicates,
    }
    for name in ("val", "test"):
        report[f"overlap_{name}_train"] = sum(
            digest in seen for digest in image_hashes(splits[name][0])
        )
    for name, (x, _) in splits.items():
        report[f"constant_{name}"] = len(constant_images(x))
    report["labels_out_of_range"] = int(
        sum(int(np.count_nonzero(y >= len(classes))) for _, y in splits.values())
    )
    return report


def breaches(report: dict[str, Any], limits: DataChecksParams) -> list[str]:
    """What in ``report`` exceeds ``limits``, one phrase per breach (empty: the data passes)."""
    images = report["images"]
    rules = [
        ("duplicates_train", "train", limits.max_duplicate_share, "max_duplicate_share"),
        ("overlap_val_train", "val", limits.max_overlap_share, "max_overlap_share"),
        ("overlap_test_train", "test", limits.max_overlap_share, "max_overlap_share"),
        *(
            (f"constant_{split}", split, limits.max_constant_share, "max_constant_share")
            for split in ("train", "val", "test")
        ),
    ]
    found = []
    for key, split, limit, name in rules:
        share = report[key] / max(images[split], 1)
        if share > limit:
            found.append(
                f"{key} {report[key]} of {images[split]} {split} images ({share:.2%}) > "
                f"checks.{name} {limit:.2%}"
            )
    if report["labels_out_of_range"]:
        found.append(f"labels_out_of_range {report['labels_out_of_range']}")
    return found


def check_data(report: dict[str, Any], limits: DataChecksParams) -> None:
    """Raise one PipelineError line naming every breach of ``limits``."""
    found = breaches(report, limits)
    if found:
        raise PipelineError(
            "data checks failed: " + "; ".join(found) + " (raise the thresholds in params.yaml "
            "only if the data is right)"
        )


# The training run's tag that carries the report in one line, for the evaluate report.
SUMMARY_TAG = "data.checks"


def describe(report: dict[str, Any]) -> str:
    """The report in one line: "0 duplicates in train; 0 val and 0 test images also in ..."."""
    constant = sum(report[f"constant_{split}"] for split in ("train", "val", "test"))
    return (
        f"{report['duplicates_train']} duplicates in train; {report['overlap_val_train']} val and "
        f"{report['overlap_test_train']} test images also in train; {constant} blank images; "
        f"{report['labels_out_of_range']} labels out of range"
    )


def log_data_checks(path: Path) -> None:
    """Log the data report at ``path`` to the active MLflow run: the file, each count as a
    ``data/<name>`` metric and the one-line summary tag. Nothing when there is no report (a
    prepared set from before the checks existed)."""
    import mlflow

    if not path.is_file():
        return
    report = json.loads(path.read_text(encoding="utf-8"))
    mlflow.log_artifact(str(path))
    mlflow.log_metrics(
        {f"data/{key}": float(value) for key, value in report.items() if key != "images"}
    )
    mlflow.set_tag(SUMMARY_TAG, describe(report))
