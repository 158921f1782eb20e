"""The table ``make exps`` prints: the experiments, best first, with what differs between them.

``dvc exp show --only-changed`` compares every row, the baseline commit's too, so a param set
the same way in every experiment (``-S preprocess.max_train_images=2000``, differing from the
committed ``null``) takes a column, and DVC folds the params that do differ into ``…``. This
asks DVC for the experiments (``--json``), keeps the params whose values differ between the
experiments (but ``data.*``, ``mlflow.*`` and ``register.*``: where the data comes from, what the
runs are called and the registry's gate, none of which changes the model), and prints its own
table: test accuracy, macro F1 and val loss at 4 significant digits, each param under its key
without the section where that is unambiguous, finished experiments best first and queued,
running or failed ones below. At the terminal's width (``COLUMNS``) it drops the last param
columns that do not fit and names them.

    python -m views.exps [any other dvc exp show option]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The experiment's name and the three figures a user compares first.
METRIC_COLUMNS = ("Experiment", "accuracy", "macro_f1", "val_loss")
# Where the data comes from (a local archive's path and md5), the MLflow names and the registry's
# gate: they change no model, and a few long names (register.allow_champion) push the params
# that do past 120 columns.
IGNORED_SECTIONS = ("data.", "mlflow.", "register.")


def flat_params(data: dict[str, Any]) -> dict[str, str]:
    """One revision's params as ``{"train.optimizer": '"adam"'}``, values as JSON text."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}{key}.", inner)
        else:
            flat[prefix.rstrip(".")] = json.dumps(value, sort_keys=True)

    for params_file in (data.get("params") or {}).values():
        walk("", params_file.get("data") or {})
    return flat


def revisions(shown: list[dict[str, Any]]) -> Iterator[tuple[bool, dict[str, Any]]]:
    """(is an experiment, its data) for every baseline and experiment ``dvc exp show`` lists.

    The workspace and failed or queued experiments (no data) are left out.
    """
    for baseline in shown:
        if baseline.get("rev") == "workspace":
            continue
        if baseline.get("data"):
            yield False, baseline["data"]
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                if rev.get("data"):
                    yield True, rev["data"]


def differing_params(shown: list[dict[str, Any]]) -> list[str]:
    """The params whose values differ between the experiments, sorted by name.

    With fewer than two experiments, those that differ from the baseline commit.
    """
    rows = list(revisions(shown))
    experiments = [data for is_experiment, data in rows if is_experiment]
    compared = experiments if len(experiments) >= 2 else [data for _, data in rows]
    params = [flat_params(data) for data in compared]
    names = sorted({name for flat in params for name in flat})
    return [
        name
        for name in names
        if not name.startswith(IGNORED_SECTIONS) and len({flat.get(name) for flat in params}) > 1
    ]


def dvc_executable() -> str:
    """The dvc of this interpreter's environment (the project's .venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.exists() else shutil.which("dvc") or "dvc"


@dataclass
class Row:
    """One experiment of the table: its label, state, metrics and params."""

    label: str
    state: str  # "success", "queued", "running" or "failed"
    metrics: dict[str, float]
    params: dict[str, str]


def flat_metrics(data: dict[str, Any]) -> dict[str, float]:
    """One revision's metrics by their last key (``accuracy``, ``macro_f1``, ``val_loss``)."""
    found: dict[str, float] = {}
    for metrics_file in (data.get("metrics") or {}).values():
        for key, value in (metrics_file.get("data") or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                found.setdefault(key, float(value))
    return found


def experiment_rows(shown: list[dict[str, Any]]) -> list[Row]:
    """Every experiment ``dvc exp show --json`` lists, finished best first, then the others.

    Queued, running and failed experiments have no test accuracy yet: they go below the
    finished ones rather than above the best (DVC sorts a missing value first).
    """
    rows = []
    for baseline in shown:
        if baseline.get("rev") == "workspace":
            continue
        for experiment in baseline.get("experiments") or []:
            state = (experiment.get("executor") or {}).get("state") or "success"
            for rev in experiment.get("revs") or []:
                data = rev.get("data") or {}
                name = rev.get("name") or experiment.get("name") or ""
                short = str(rev.get("rev") or data.get("rev") or "")[:7]
                label = f"{short} [{name}]" if name and short else name or short
                rev_state = state if data or state != "success" else "failed"
                rows.append(Row(label, rev_state, flat_metrics(data), flat_params(data)))
    finished = [row for row in rows if METRIC_COLUMNS[1] in row.metrics]
    others = [row for row in rows if METRIC_COLUMNS[1] not in row.metrics]
    finished.sort(key=lambda row: (-row.metrics[METRIC_COLUMNS[1]], row.label))
    return finished + others


def short_headers(params: list[str]) -> dict[str, str]:
    """Each param's header: its key without the section, unless two params share that key."""
    last = [name.rsplit(".", 1)[-1] for name in params]
    return {
        name: key if last.count(key) == 1 else name for name, key in zip(params, last, strict=True)
    }


def significant(value: float) -> str:
    """``value`` at 4 significant digits, trailing zeros kept: 0.1 is ``0.1000``."""
    return f"{value:#.4g}".rstrip(".")


def shown_value(text: str) -> str:
    """A param's JSON text as a cell: strings unquoted, null as ``null``."""
    value = json.loads(text)
    return value if isinstance(value, str) else text


def render(rows: list[Row], params: list[str], width: int) -> list[str]:
    """The table's lines, at most ``width`` wide: param columns that do not fit are dropped,
    last first, and a closing line names them."""
    headers = short_headers(params)
    metric_names = METRIC_COLUMNS[1:]

    def cells(row: Row, kept: list[str]) -> list[str]:
        figures = [
            significant(row.metrics[name]) if name in row.metrics else "-" for name in metric_names
        ]
        if row.state != "success" and METRIC_COLUMNS[1] not in row.metrics:
            figures[0] = row.state
        shown = [shown_value(row.params[name]) if name in row.params else "-" for name in kept]
        return [row.label, *figures, *shown]

    def lines(kept: list[str]) -> list[str]:
        table = [[METRIC_COLUMNS[0], *metric_names, *(headers[name] for name in kept)]]
        table += [cells(row, kept) for row in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        numeric = range(1, 1 + len(metric_names))
        out = []
        for line in table:
            padded = [
                cell.rjust(w) if i in numeric else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            ]
            out.append("  ".join(padded).rstrip())
        return out

    kept = list(params)
    table = lines(kept)
    while kept and max(map(len, table)) > width:
        kept.pop()
        table = lines(kept)
    dropped = [headers[name] for name in params if name not in kept]
    if dropped:
        note = (
            f"(not shown, to fit {width} columns: {', '.join(dropped)}; "
            "a wider terminal or COLUMNS=120 shows them)"
        )
        table += textwrap.wrap(note, width)
    return table


def main(argv: list[str] | None = None) -> int:
    """Print the table; extra arguments go to ``dvc exp show --json``."""
    extra = list(sys.argv[1:] if argv is None else argv)
    command = [dvc_executable(), "exp", "show", "--json", *extra]
    try:
        listed = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        print("error: dvc not found: run `make exps`, or put .venv/bin on PATH", file=sys.stderr)
        return 1
    if listed.returncode != 0:
        message = (listed.stderr.strip().splitlines() or ["dvc exp show failed"])[-1]
        print(f"error: {message}", file=sys.stderr)
        return 1
    shown = json.loads(listed.stdout)
    rows = experiment_rows(shown)
    if not rows:
        print("no experiments yet: `make exp` or `dvc exp run` makes one")
        return 0
    width = shutil.get_terminal_size((120, 24)).columns
    print("\n".join(render(rows, differing_params(shown), width)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
