"""Carve a stratified, seeded validation split from the training images, then cap the rest.

Outputs keep the images in their original order (sorted source indices) rather than shuffled:
the training stage shuffles every epoch anyway, and a split in archive order can be traced back
to its records, so the same seed gives byte-identical files and any image can be checked
against the archive.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.errors import PipelineError


def allocate_stratified(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``counts``, summing to exactly ``total``.

    Largest-remainder (Hamilton) allocation: each class gets the floor of its exact quota, and the
    seats left over go to the largest fractional parts, ties to the lower class label. Integer
    arithmetic throughout, so balanced classes always get exactly ``total / classes`` each.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if not 0 <= total <= n:
        raise ValueError(f"cannot allocate {total} from {n} items")
    if n == 0:
        return np.zeros_like(counts)
    scaled = counts * total
    alloc, remainder = scaled // n, scaled % n
    leftover = total - int(alloc.sum())
    # Stable sort on -remainder: equal remainders keep label order, so the result is deterministic.
    winners = np.argsort(-remainder, kind="stable")[:leftover]
    alloc[winners] += 1
    return alloc


def split_indices(
    y: np.ndarray, val_size: int, max_train_images: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``y`` of the training and validation images, each sorted ascending.

    The validation split is carved first, so it does not depend on ``max_train_images``; the cap
    is then applied, also stratified, to what remains (None keeps everything).
    """
    y = np.asarray(y)
    n = len(y)
    if not 0 < val_size < n:
        raise PipelineError(
            f"preprocess.val_size: {val_size} must be smaller than the {n:,} training images"
            " it is carved from (and at least 1)"
        )
    rng = np.random.default_rng(seed)
    all_idx = np.arange(n)
    val_idx = _stratified_sample(all_idx, y, val_size, rng, "validation")
    train_idx = np.setdiff1d(all_idx, val_idx, assume_unique=True)
    if max_train_images is not None:
        if max_train_images > len(train_idx):
            raise PipelineError(
                f"preprocess.max_train_images: {max_train_images:,} is more than the"
                f" {len(train_idx):,} training images left after carving {val_size:,} for"
                " validation; lower it or set it to null"
            )
        train_idx = _stratified_sample(train_idx, y[train_idx], max_train_images, rng, "training")
    return train_idx, val_idx


def prepare_splits(
    x: np.ndarray, y: np.ndarray, val_size: int, max_train_images: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split training images ``x``/``y`` into (train_x, train_y, val_x, val_y).

    Stratified and deterministic for ``seed``; see ``split_indices`` for the order of operations.
    The test batch never goes through here: it is used as released.
    """
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} images but y has {len(y)} labels")
    train_idx, val_idx = split_indices(y, val_size, max_train_images, seed)
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def _stratified_sample(
    idx: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator, split: str
) -> np.ndarray:
    """Pick ``size`` of ``idx`` (whose labels are ``labels``), stratified by label; sorted."""
    classes, counts = np.unique(labels, return_counts=True)
    alloc = allocate_stratified(counts, size)
    empty = classes[alloc == 0]
    if empty.size:
        # A class absent from a split would make its metrics silently meaningless.
        raise PipelineError(
            f"the {split} split of {size:,} images would get no image of class {int(empty[0])}"
            f" ({int(counts[alloc == 0][0])} available); use a larger size"
        )
    picked = [
        rng.choice(idx[labels == label], size=int(k), replace=False)
        for label, k in zip(classes, alloc, strict=True)
    ]
    return np.sort(np.concatenate(picked))
