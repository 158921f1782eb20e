"""A PNG grid of example images per class, to eyeball that decoding and labels are right.

Images are enlarged by whole-pixel repetition and placed on the canvas unresampled, so the PNG
shows the exact pixels, sharp, rather than an interpolated blur.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.core.shapes import IMAGE_SIZE

SCALE = 3  # each source pixel becomes SCALE x SCALE screen pixels
GAP = 4  # screen pixels between tiles
LABEL_WIDTH = 120  # screen pixels left of the grid for the class names
MARGIN = 8  # screen pixels around the grid
DPI = 100
BACKGROUND = 255  # white


def render_preview_grid(
    x: np.ndarray, y: np.ndarray, classes: Sequence[str], per_class: int = 8
) -> bytes:
    """PNG bytes of a grid: one row per class (named on the left), its first ``per_class`` images.

    A class with fewer images leaves the rest of its row blank.
    """
    mosaic = build_mosaic(x, y, len(classes), per_class)
    height, width = mosaic.shape[:2]
    fig_w, fig_h = LABEL_WIDTH + width + MARGIN, height + 2 * MARGIN
    fig = Figure(figsize=(fig_w / DPI, fig_h / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    # figimage copies pixels 1:1 (no resampling); yo counts from the bottom of the canvas.
    fig.figimage(mosaic, xo=LABEL_WIDTH, yo=MARGIN, origin="upper")
    tile = IMAGE_SIZE * SCALE
    for row, name in enumerate(classes):
        centre = MARGIN + height - (row * (tile + GAP) + tile / 2)
        fig.text(
            (LABEL_WIDTH - 10) / fig_w, centre / fig_h, name, ha="right", va="center", fontsize=11
        )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def build_mosaic(x: np.ndarray, y: np.ndarray, num_classes: int, per_class: int) -> np.ndarray:
    """The grid as one uint8 RGB array, already enlarged ``SCALE`` times with gaps between tiles.

    Row ``c`` holds the first ``per_class`` images labelled ``c``, in their order in ``x``.
    """
    tile = IMAGE_SIZE * SCALE
    height = num_classes * tile + (num_classes - 1) * GAP
    width = per_class * tile + (per_class - 1) * GAP
    mosaic = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    for row in range(num_classes):
        for col, index in enumerate(np.flatnonzero(y == row)[:per_class]):
            top, left = row * (tile + GAP), col * (tile + GAP)
            mosaic[top : top + tile, left : left + tile] = _enlarge(x[index])
    return mosaic


def _enlarge(image: np.ndarray) -> np.ndarray:
    # Nearest-neighbour: repeat each pixel, so edges stay crisp.
    return image.repeat(SCALE, axis=0).repeat(SCALE, axis=1)
