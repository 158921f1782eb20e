"""``make plots``' templates (plots/) filled by DVC's own renderer for six experiments: the page
fits 1440 px, the matrices carry their values and the curves' colours are told apart.

Drawn in headless Chromium for docs/images/dvc-plots-offline.png; here the filled Vega-Lite specs.
"""

from __future__ import annotations

import itertools

from dvc_render.vega import OPTIONAL_ANCHOR_RANGES, VegaRenderer

from tests.conftest import REPO_ROOT

REVS = [f"experiment-{i}" for i in range(6)]
SCREEN_PX = 1440
# Room beside each matrix for its class-name axis and the gaps, and for the one colour legend.
AXIS_PX, LEGEND_PX = 110, 80


def confusion_spec() -> dict:
    rows = [
        {"rev": rev, "actual": str(actual), "predicted": str((actual + shift) % 10)}
        for rev in REVS for shift in range(3) for actual in range(10)
    ]  # fmt: skip
    renderer = VegaRenderer(
        rows, "reports/predictions.csv",
        template=str(REPO_ROOT / "plots" / "confusion_all_classes.json"),
        x="predicted", y="actual", title="Confusion matrix", x_label="p", y_label="a",
    )  # fmt: skip
    return renderer.get_filled_template()


def curve_colours() -> list[str]:
    rows = [{"rev": rev, "epoch": epoch, "loss": 1 / epoch} for rev in REVS for epoch in (1, 2)]
    renderer = VegaRenderer(
        rows, "Loss per epoch", template=str(REPO_ROOT / "plots" / "epochs.json"), x="epoch",
        y="loss",
    )  # fmt: skip
    return renderer.get_filled_template()["encoding"]["color"]["scale"]["range"]


def test_confusion_matrices_wrap_three_a_row_within_the_screen() -> None:
    spec = confusion_spec()
    # A wrapped facet: six matrices in two rows of three, not six side by side (2,112 px).
    assert spec["facet"]["field"] == "rev" and spec["columns"] == 3
    width = spec["columns"] * (spec["spec"]["width"] + AXIS_PX) + LEGEND_PX
    assert width <= SCREEN_PX


def test_every_cell_shows_its_count() -> None:
    (text,) = [
        layer for layer in confusion_spec()["spec"]["layer"] if "text" in str(layer.get("mark"))
    ]
    # Always, not behind DVC's "showValues" checkbox (off by default).
    assert text["encoding"]["text"] == {"field": "xy_count", "type": "quantitative"}


def redmean_distance(a: str, b: str) -> float:
    """A cheap perceptual colour distance (the "redmean" weighting of RGB)."""
    (r1, g1, b1), (r2, g2, b2) = (tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in (a, b))
    mean_red = (r1 + r2) / 2
    return (
        (2 + mean_red / 256) * (r1 - r2) ** 2
        + 4 * (g1 - g2) ** 2
        + (2 + (255 - mean_red) / 256) * (b1 - b2) ** 2
    ) ** 0.5


def closest_pair(colours: list[str]) -> float:
    return min(redmean_distance(a, b) for a, b in itertools.combinations(colours, 2))


def test_curve_colours_are_told_apart() -> None:
    colours = curve_colours()
    assert len(set(colours)) >= len(REVS)
    # DVC's own palette has two oranges (#f46837, #ed8936): this check fails on it.
    assert closest_pair(OPTIONAL_ANCHOR_RANGES["color"]) < 100  # type: ignore[arg-type]
    assert closest_pair(colours) >= 100
