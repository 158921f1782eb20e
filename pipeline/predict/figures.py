"""The figures of a prediction batch: class distribution and the least confident images."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from pipeline.core.atomic import atomic_path

if TYPE_CHECKING:
    from pipeline.predict.batch import Prediction

DPI = 100


def plot_class_distribution(counts: dict[str, int], path: Path) -> None:
    """A bar per class: how many images of the batch the model put in it."""
    fig = Figure(figsize=(8, 4), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    names = list(counts)
    ax.bar(names, [counts[name] for name in names], color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set(title=f"Predicted class ({sum(counts.values())} images)", ylabel="images")
    _save(fig, path)


def plot_least_confident(prediction: Prediction, count: int, path: Path, columns: int = 6) -> None:
    """A grid of the ``count`` images with the lowest top probability, with name and guess."""
    order = np.argsort(prediction.confidence, kind="stable")[:count]
    rows = max(1, -(-len(order) // columns))
    fig = Figure(figsize=(2.2 * columns, 2.5 * rows), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    if len(order) == 0:
        axes[0].text(0.0, 0.5, "no images", fontsize=12)
    for ax, index in zip(axes, order, strict=False):
        name = prediction.batch.names[index]
        ax.imshow(prediction.batch.images[index], interpolation="nearest")
        guess = prediction.classes[prediction.predicted[index]]
        ax.set_title(f"{_short(name)}\n{guess} ({prediction.confidence[index]:.0%})", fontsize=9)
    fig.suptitle("Least confident predictions", fontsize=12)
    _save(fig, path)


def _short(name: str, width: int = 22) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3) :]


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.2)
