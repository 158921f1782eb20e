"""params.yaml is checked with the project's hardened reader before any make target runs DVC.

DVC parses params.yaml itself and expands YAML aliases: a billion-laughs file makes `dvc repro`,
`dvc status` and `dvc exp run` hang silently (issue 31). ``python -m stages.cli`` refuses it in
one line, and the make targets that run DVC call it first.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DVC_TARGETS = ("run", "exp", "exps", "plots")


def alias_bomb() -> str:
    """A params file whose aliases would expand to 10**9 values."""
    lines = [f"a: &a [{', '.join(['1'] * 10)}]"]
    previous = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]")
        previous = name
    return "\n".join(lines) + "\n"


def check(params: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stages.cli", "--params", str(params)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_an_alias_bomb_is_one_error_line_in_seconds(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(alias_bomb())
    started = time.monotonic()
    done = check(params)
    assert time.monotonic() - started < 30, "refused without expanding it"
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "alias bomb" in line


def test_the_committed_params_pass(tmp_path: Path) -> None:
    done = check(REPO_ROOT / "params.yaml")
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.parametrize("target", DVC_TARGETS)
def test_make_targets_check_params_before_dvc(target: str) -> None:
    # -n prints the recipes without running them; setup's own are left out by its stamp or not.
    shown = subprocess.run(
        ["make", "-n", target], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    checks = [i for i, line in enumerate(shown) if "-m stages.cli --params params.yaml" in line]
    runs_dvc = ("dvc ", "views.exps", "stages.exp_run")  # exp_run execs `dvc exp run`
    dvc = [i for i, line in enumerate(shown) if any(word in line for word in runs_dvc)]
    assert checks and dvc and checks[0] < dvc[0], shown
