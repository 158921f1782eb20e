"""Lineage tags from a real git checkout: dirt that DVC made is not dirt, real dirt still is."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.tracking.lineage import dvc_tags, git_tags

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A committed repo with params.yaml, dvc.lock and one code file."""
    files = {
        "params.yaml": "a: 1\n", "dvc.lock": "x\n", "code.py": "x = 1\n", "plot.png": "0",
        "dvc.yaml": "stages:\n  s:\n    cmd: c\n    plots:\n      - plot.png: {cache: false}\n",
    }  # fmt: skip
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    subprocess.run([*GIT, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*GIT, "commit", "-qm", "init"], cwd=tmp_path, check=True)
    return tmp_path


@pytest.fixture
def no_dvc_exp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)


def under_dvc_exp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_EXP_NAME", "quick-fox")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "b" * 40)


def test_clean_checkout_is_clean(checkout: Path, no_dvc_exp: None) -> None:
    tags = git_tags(checkout)
    assert tags["git.dirty"] == "false" and len(tags["git.commit"]) == 40
    assert "git.dirty_paths" not in tags


def test_dvc_lock_and_stage_outputs_are_never_dirt(checkout: Path, no_dvc_exp: None) -> None:
    (checkout / "dvc.lock").write_text("rewritten by dvc repro\n")
    (checkout / "plot.png").write_text("redrawn by a stage")
    assert git_tags(checkout)["git.dirty"] == "false"


def test_params_edit_is_dirt_by_hand_but_not_under_dvc_exp_run(
    checkout: Path, no_dvc_exp: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    (checkout / "params.yaml").write_text("a: 2\n")
    assert git_tags(checkout)["git.dirty"] == "true"
    under_dvc_exp(monkeypatch)  # dvc exp run -S a=2 writes params.yaml before the stages run
    assert git_tags(checkout)["git.dirty"] == "false"


def test_code_change_is_dirt_even_under_dvc_exp_run(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    under_dvc_exp(monkeypatch)
    (checkout / "params.yaml").write_text("a: 2\n")
    (checkout / "code.py").write_text("x = 2\n")
    tags = git_tags(checkout)
    # The first entry's status column starts with a space: the path must come through whole.
    assert (tags["git.dirty"], tags["git.dirty_paths"]) == ("true", "code.py")


def test_dvc_tags_name_the_experiment_and_its_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    under_dvc_exp(monkeypatch)
    assert dvc_tags() == {"dvc.experiment": "quick-fox", "dvc.baseline_rev": "b" * 40}
    monkeypatch.delenv("DVC_EXP_NAME")
    assert dvc_tags() == {}


def test_outside_git_is_unknown(tmp_path: Path, no_dvc_exp: None) -> None:
    assert git_tags(tmp_path) == {"git.commit": "unknown", "git.dirty": "unknown"}
