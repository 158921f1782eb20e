"""The table ``make exps`` prints: DVC's own ``dvc exp show``, cut to what a user compares.

``dvc exp show --only-changed`` compares every row, the baseline commit's too, so a param set
the same way in every experiment (``-S preprocess.max_train_images=2000``, differing from the
committed ``null``) takes a column, and the params that do differ fell into ``…`` at 120 columns.
This asks DVC for the experiments (``--json``), keeps the params whose values differ between the
experiments of the baseline (but ``data.*``, ``mlflow.*`` and ``register.*``: where the data
comes from, what the runs are called and the registry's gate, none of which changes the model), and
prints ``dvc exp show`` with those and the three headline metrics, best test accuracy first,
without the workspace row (a copy of the applied experiment).

    python -m views.exps [any other dvc exp show option]
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
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


def show_command(params: list[str], extra: list[str]) -> list[str]:
    """The ``dvc exp show`` command that shows ``params`` and the headline metrics only."""
    keep = "^(" + "|".join(re.escape(name) for name in (*METRIC_COLUMNS, *params)) + ")$"
    return [
        dvc_executable(), "exp", "show", "--no-pager", "--hide-workspace",
        "--keep", keep, "--drop", ".*",
        "--sort-by", "accuracy", "--sort-order", "desc", *extra,
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Print the curated table; extra arguments go to both ``dvc exp show`` calls."""
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
    command = show_command(differing_params(json.loads(listed.stdout)), extra)
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
