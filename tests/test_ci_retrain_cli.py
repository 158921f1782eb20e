""".ci/retrain.py's command line, without a repo: what --help says and what the flags set."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / ".ci"))
import retrain


def test_no_push_help_does_not_say_default_true() -> None:
    shown = subprocess.run(
        [sys.executable, ".ci/retrain.py", "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    # The option's entry (not the usage line): from "  --no-push" to the next option.
    entry = shown[shown.index("\n  --no-push") :].split("\n  --report")[0]
    flag = " ".join(entry.split())
    assert "default: True" not in flag, flag
    assert "pushing is the default" in flag


def test_push_is_on_unless_no_push() -> None:
    assert retrain.build_parser().parse_args([]).push is True
    assert retrain.build_parser().parse_args(["--no-push"]).push is False


def test_dvc_unsaved_files_refusal_is_one_line_naming_files_and_way_out() -> None:
    # What `dvc repro` prints after `mlflow run . -e train` wrote the outputs outside DVC.
    output = "\n".join([
        "Running stage 'train':",
        "ERROR: failed to reproduce 'train': Can't remove the following unsaved files without "
        "confirmation. Use `--force` to force.",
        f"{retrain.REPO / 'models' / 'model.keras'}",
        f"{retrain.REPO / 'models' / 'run.json'}",
        "Having any troubles? Hit us up at https://dvc.org/support, we are always happy to help!",
    ])  # fmt: skip
    line = retrain.dvc_error(output, 255)
    assert "\n" not in line
    assert "models/model.keras, models/run.json" in line
    assert "mlflow run" in line and "delete them, or keep them with `dvc commit`" in line
