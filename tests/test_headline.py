"""A training run's headline (pipeline/tracking/headline.py): test accuracy, then what changed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipeline.tracking.headline import changed_params, committed_params, headline
from tests.conftest import REPO_ROOT, repo_params

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]


def test_headline_leads_with_accuracy_then_the_changed_params() -> None:
    committed = repo_params()
    params = repo_params(
        "train.optimizer=adam", "train.learning_rate=0.002", "data.md5=null", "mlflow.sweep=x"
    )
    changes = changed_params(params, committed)
    assert changes == {"train.optimizer": "adam", "train.learning_rate": 0.002}
    line = headline(changes, 0.18251)
    assert line.startswith("test accuracy 0.1825 · ")
    assert "optimizer=adam" in line and "learning_rate=0.002" in line
    assert "md5" not in line and "sweep" not in line, "data.* and mlflow.* change no model"
    assert headline(changed_params(committed, committed)) == "the committed params"
    assert (
        headline(changed_params(committed, None), 0.5) == "test accuracy 0.5000 · params as logged"
    )


def test_committed_params_come_from_git_head(tmp_path: Path) -> None:
    assert committed_params(tmp_path) is None, "outside git: nothing to compare with"
    (tmp_path / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
    for cmd in (["init", "-q"], ["add", "params.yaml"], ["commit", "-qm", "p"]):
        subprocess.run([*GIT, *cmd], cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "params.yaml").write_text("edited: after the commit\n")
    assert committed_params(tmp_path) == repo_params()
