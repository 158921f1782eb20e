"""``python -m deploy.serve`` (``make serve``): the settings it checks before any server starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deploy.serve import DEFAULT_WORKERS, main
from pipeline.tracking.serving_model import MAX_IMAGES_ENV
from tests.conftest import QUIET_ENV, REPO_ROOT

UNUSABLE = ["abc", "-1", "0"]


def error_line(value: str) -> str:
    return (
        f"error: {MAX_IMAGES_ENV}='{value}' is not a whole number of images above 0 "
        "(unset it for the default, 1024)"
    )


@pytest.mark.parametrize("unusable", UNUSABLE)
def test_an_unusable_image_cap_is_one_line_and_exit_2(
    unusable: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(MAX_IMAGES_ENV, unusable)
    # No --dry-run: were the value accepted, main() would exec the server in this process.
    with pytest.raises(SystemExit) as exited:
        main(["--port", "1"])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [error_line(unusable)] and captured.out == ""


def test_the_command_serves_the_champion_with_the_measured_workers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(MAX_IMAGES_ENV, "64")
    main(["--dry-run"])
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("serving with at most 64 images a request: ")
    assert "models serve -m models:/cifar10-cnn@champion --env-manager local" in line
    assert line.endswith(f"--host 127.0.0.1 --port 5001 --workers {DEFAULT_WORKERS}")


@pytest.mark.e2e
def test_a_fresh_process_prints_the_error_alone() -> None:
    # In a new interpreter MLflow prints advice while the served model's module is imported:
    # the launcher must keep it off the one line.
    env = os.environ | QUIET_ENV | {MAX_IMAGES_ENV: "abc"}
    result = subprocess.run(
        [sys.executable, "-m", "deploy.serve", "--port", "1"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [error_line("abc")] and result.stdout == ""
