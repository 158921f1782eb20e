"""Figures (matplotlib, Agg) and the evaluation report as Markdown and self-contained HTML.

The report is built once as a list of sections of text, tables and images, then rendered twice:
Markdown links the PNGs beside it, HTML embeds them as base64 data URIs so it opens anywhere.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.core.atomic import atomic_path, write_text
from pipeline.evaluate.scoring import Evaluation

DPI = 100


@dataclass
class Section:
    """One heading of the report; blocks are str (paragraph), DataFrame (table) or Path (image)."""

    title: str
    blocks: list[str | pd.DataFrame | Path] = field(default_factory=list)


def plot_confusion_matrix(confusion: pd.DataFrame, path: Path) -> None:
    """Counts and row-normalised rates in every cell, coloured by rate, class names on both axes."""
    counts = confusion.to_numpy()
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = len(confusion)
    fig = Figure(figsize=(1.0 + 0.85 * size, 0.6 + 0.8 * size), dpi=DPI)
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for row in range(size):
        for col in range(size):
            # Empty cells in grey, so the eye goes to the counts that matter.
            colour = "white" if rates[row, col] > 0.5 else "black" if counts[row, col] else "0.6"
            text = f"{counts[row, col]}\n{rates[row, col]:.0%}"
            ax.text(col, row, text, ha="center", va="center", fontsize=9, color=colour)
    ax.set_xticks(range(size), confusion.columns, rotation=45, ha="right", fontsize=10)
    ax.set_yticks(range(size), confusion.index, fontsize=10)
    ax.set_xlabel("predicted class", fontsize=11)
    ax.set_ylabel("actual class", fontsize=11)
    ax.set_title("Confusion matrix (test set): count and share of the actual class", fontsize=12)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of actual class")
    _save(fig, path)


def plot_training_curves(history: pd.DataFrame, path: Path) -> None:
    """Loss and accuracy per epoch, training and validation."""
    fig = Figure(figsize=(11, 4), dpi=DPI, layout="constrained")
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        ax.plot(history["epoch"], history[metric], marker="o", label=f"train {metric}")
        ax.plot(
            history["epoch"], history[f"val_{metric}"], marker="o", label=f"validation {metric}"
        )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.set_title(f"{metric.capitalize()} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def plot_misclassified(
    x: np.ndarray, evaluation: Evaluation, indices: np.ndarray, path: Path, columns: int = 6
) -> None:
    """A grid of misclassified test images titled with the true and the predicted class."""
    rows = max(1, -(-len(indices) // columns))
    fig = Figure(figsize=(2.0 * columns, 2.3 * rows), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    if len(indices) == 0:
        axes[0].text(0.0, 0.5, "no misclassified test images", fontsize=12)
    names = evaluation.classes
    for ax, index in zip(axes, indices, strict=False):
        predicted = evaluation.y_pred[index]
        confidence = evaluation.probabilities[index, predicted]
        ax.imshow(x[index], interpolation="nearest")
        ax.set_title(
            f"true: {names[evaluation.y_true[index]]}\npred: {names[predicted]} ({confidence:.0%})",
            fontsize=10,
        )
    fig.suptitle("Most confidently misclassified test images", fontsize=12)
    _save(fig, path)


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        # bbox_inches="tight" grows the canvas to the labels, so nothing is cut off.
        fig.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.2)


def build_sections(
    evaluation: Evaluation,
    confused_pairs: pd.DataFrame,
    registry: dict[str, object],
    provenance: dict[str, str],
    figures: dict[str, Path],
) -> list[Section]:
    """The report's content: ``figures`` maps confusion, curves and misclassified to PNG paths."""
    summary = {
        "test images": str(len(evaluation.y_true)),
        "accuracy": f"{evaluation.accuracy:.4f}",
        **(
            {"accuracy, flip TTA": f"{evaluation.accuracy_flip_tta:.4f}"}
            if evaluation.accuracy_flip_tta is not None
            else {}
        ),
        **(
            {"accuracy, mirror + translate TTA": f"{evaluation.accuracy_translate_tta:.4f}"}
            if evaluation.accuracy_translate_tta is not None
            else {}
        ),
        "loss": f"{evaluation.loss:.4f}",
        **{f"macro {key}": f"{value:.4f}" for key, value in evaluation.macro.items()},
        **provenance,
    }
    per_class = evaluation.per_class.copy()
    per_class.loc["macro average"] = [*evaluation.macro.values(), per_class["support"].sum()]
    registry_table = {key: "" if value is None else str(value) for key, value in registry.items()}
    return [
        Section("Summary", [_key_values(summary)]),
        Section(
            "Model Registry",
            [
                f"Decision: {registry.get('decision')} ({registry.get('reason')}).",
                _key_values(registry_table),
            ],
        ),
        Section(
            "Confusion matrix",
            [
                figures["confusion"],
                "Test images by actual class (rows) and predicted class (columns).",
                evaluation.confusion,
            ],
        ),
        Section("Per-class metrics", [_formatted(per_class, {"support": "{:.0f}"})]),
        Section(
            "Most confused class pairs",
            [
                "Off-diagonal cells of the confusion matrix with the most test images; rate is the "
                "share of the actual class.",
                _formatted(confused_pairs, {"rate": "{:.1%}", "count": "{:d}"}),
            ],
        ),
        Section("Training curves", [figures["curves"]]),
        Section("Misclassified test images", [figures["misclassified"]]),
    ]


def _key_values(values: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"value": list(values.values())}, index=pd.Index(values, name="item"))


def _formatted(frame: pd.DataFrame, formats: dict[str, str]) -> pd.DataFrame:
    """Floats as 4 decimals unless ``formats`` names the column; text stays as it is."""
    out = frame.astype(object)
    for column in frame.columns:
        if column in formats:
            out[column] = [formats[column].format(value) for value in frame[column]]
        elif pd.api.types.is_float_dtype(frame[column]):
            out[column] = [f"{value:.4f}" for value in frame[column]]
    return out


def write_report(sections: list[Section], markdown_path: Path, html_path: Path, title: str) -> None:
    """Render ``sections`` to Markdown (images linked beside it) and self-contained HTML."""
    write_text(markdown_path, render_markdown(sections, title, markdown_path.parent))
    write_text(html_path, render_html(sections, title))


def render_markdown(sections: list[Section], title: str, base: Path) -> str:
    """Markdown with image links relative to ``base``, the folder the file goes in."""
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, pd.DataFrame):
                lines += [_markdown_table(block), ""]
            elif isinstance(block, Path):
                lines += [f"![{block.stem.replace('_', ' ')}]({_relative(block, base)})", ""]
            else:
                lines += [block, ""]
    return "\n".join(lines)


def render_html(sections: list[Section], title: str) -> str:
    """One HTML file with inline CSS and every image embedded as a data URI."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, pd.DataFrame):
                # As in Markdown, an unnamed index is row numbers nobody needs; a named index
                # shows without its name, which would take a row of its own.
                table = block.to_html(border=0, index=bool(block.index.name), index_names=False)
                parts.append(table)
            elif isinstance(block, Path):
                data = base64.b64encode(block.read_bytes()).decode("ascii")
                alt = html.escape(block.stem.replace("_", " "))
                parts.append(f'<img alt="{alt}" src="data:image/png;base64,{data}">')
            else:
                parts.append(f"<p>{html.escape(block)}</p>")
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse;margin:0.5rem 0}"
    "th,td{padding:0.25rem 0.6rem;border-bottom:1px solid #ddd;text-align:right}"
    "th:first-child,td:first-child{text-align:left}img{max-width:100%}"
)


def _markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pandas through tabulate); a named index is a column."""
    frame = frame.reset_index() if frame.index.name else frame
    # tabulate leaves a "|" in a cell as it is, which would split the row: class names come
    # from the archive.
    escaped = frame.map(
        lambda value: value.replace("|", "\\|") if isinstance(value, str) else value
    )
    return escaped.to_markdown(index=False)


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix()
