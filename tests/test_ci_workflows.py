"""The GitHub workflows: actionlint-clean, and the triggers, guard and permissions CI relies on."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT, VENV_BIN

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
RETRAIN_PATHS = ["params.yaml", "dvc.yaml", "dvc.lock", "**/*.dvc", "stages/**", "pipeline/**"]
FORK_GUARD = (
    "github.event_name != 'pull_request' || "
    "github.event.pull_request.head.repo.full_name == github.repository"
)


def load(name: str) -> dict[str, Any]:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    workflow["on"] = workflow.pop(True)
    return workflow


def test_actionlint_is_clean() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "actionlint"), "-no-color", "test.yml", "retrain.yml"],
        cwd=WORKFLOWS, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The lint above can fail: a job on an unknown label and a bad expression are reported."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: [self-hosted, cuda]\n"
        "    steps:\n      - run: echo ${{ github.nope.nope }}\n"
    )
    result = subprocess.run(
        [str(VENV_BIN / "actionlint"), "-no-color", str(broken)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and 'label "cuda" is unknown' in result.stdout


@pytest.mark.parametrize("event", ["pull_request", "push"])
def test_retrain_triggers_on_pipeline_paths(event: str) -> None:
    trigger = load("retrain.yml")["on"][event]
    assert trigger["paths"] == RETRAIN_PATHS
    if event == "push":
        assert trigger["branches"] == ["main"]


def test_retrain_dispatch_takes_overrides() -> None:
    dispatch = load("retrain.yml")["on"]["workflow_dispatch"]
    assert dispatch["inputs"]["overrides"]["type"] == "string"


def test_retrain_job_is_guarded_least_privileged_and_serialised() -> None:
    workflow = load("retrain.yml")
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert "github.ref" in workflow["concurrency"]["group"]
    (job,) = workflow["jobs"].values()
    assert job["if"] == FORK_GUARD, "no pull request from a fork on the self-hosted runner"
    assert job["runs-on"] == ["self-hosted", "linux", "gpu"]
    steps = job["steps"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "make setup GPU=1" in runs and ".ci/retrain.py" in runs
    assert "--pull-request" in runs and "$GITHUB_STEP_SUMMARY" in runs
    for secret in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert job["env"][secret] == f"${{{{ secrets.{secret} }}}}"
    comment = next(s for s in steps if s.get("uses", "").startswith("actions/github-script@"))
    assert comment["if"] == "always() && github.event_name == 'pull_request'"
    assert "updateComment" in comment["with"]["script"], "one comment, updated on every push"


def test_every_action_is_pinned_to_a_version() -> None:
    for name in ("test.yml", "retrain.yml"):
        for job in load(name)["jobs"].values():
            for step in job["steps"]:
                if "uses" in step:
                    version = step["uses"].partition("@")[2]
                    assert version.startswith("v") and version[1:].split(".")[0].isdigit(), step


def test_tests_workflow_runs_ci_run_on_three_pythons() -> None:
    workflow = load("test.yml")
    assert set(workflow["on"]) == {"push", "pull_request"}
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    assert job["strategy"]["matrix"]["python-version"] == ["3.11", "3.12", "3.13"]
    assert any(step.get("run") == ".ci/run" for step in job["steps"])
    uv = next(s for s in job["steps"] if s.get("uses", "").startswith("astral-sh/setup-uv@"))
    assert uv["with"]["enable-cache"] is True
