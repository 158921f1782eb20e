"""A training run's headline: the first line of its description.

MLflow shows a run's description (the ``mlflow.note.content`` tag) on its page; without one a
run page opened on 8 system metrics before test accuracy. The headline says what the run is:
``test accuracy 0.1825 · optimizer=adam, learning_rate=0.002`` once evaluated, the params that
differ from the committed params.yaml (git HEAD) otherwise. Where the data comes from, MLflow's
names and the registry's gate (``data.*``, ``mlflow.*``, ``register.*``) change no model and
are left out, as in ``make exps``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from pipeline.core.errors import ParamsError
from pipeline.core.params import Params, flatten_params, parse_params

DESCRIPTION_TAG = "mlflow.note.content"
IGNORED_SECTIONS = ("data.", "mlflow.", "register.")
SAME_AS_COMMIT = "the committed params"
# Outside git (a Kubeflow pod) nothing to compare with: the params are in the run's params.
UNKNOWN_CHANGES = "params as logged"


def committed_params(repo: Path) -> Params | None:
    """params.yaml as committed at HEAD in ``repo``; None outside git or if it does not load."""
    try:
        text = subprocess.run(
            ["git", "-C", str(repo), "show", "HEAD:params.yaml"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip
        return parse_params(text, "HEAD:params.yaml")
    except (OSError, subprocess.SubprocessError, ParamsError):
        return None


def changed_params(params: Params, committed: Params | None) -> dict[str, Any] | None:
    """The params (dotted names) whose values differ from ``committed``, in params.yaml order;
    None when there is no committed file to compare with."""
    if committed is None:
        return None
    before = flatten_params(committed)
    return {
        key: value
        for key, value in flatten_params(params).items()
        if not key.startswith(IGNORED_SECTIONS) and before.get(key) != value
    }


def describe_changes(changes: dict[str, Any] | None) -> str:
    """``optimizer=adam, learning_rate=0.002``: keys without their section where unambiguous."""
    if changes is None:
        return UNKNOWN_CHANGES
    if not changes:
        return SAME_AS_COMMIT
    last = [key.rsplit(".", 1)[-1] for key in changes]
    shown = []
    for key, short in zip(changes, last, strict=True):
        value = changes[key]
        text = value if isinstance(value, str) else json.dumps(value)
        shown.append(f"{short if last.count(short) == 1 else key}={text}")
    return ", ".join(shown)


def headline(changes: dict[str, Any] | None, test_accuracy: float | None = None) -> str:
    """The run description's first line: test accuracy (once known), then what was changed."""
    parts = [] if test_accuracy is None else [f"test accuracy {test_accuracy:.4f}"]
    return " · ".join([*parts, describe_changes(changes)])
