"""Small things a new user met (issue 31, rough edge 7): the serving example's request body is
not left as an untracked file, and ``deploy.users --help`` names NEW_USER_PASSWORD."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_the_serving_example_request_is_ignored_by_git() -> None:
    # README: `... > request.json` at the repository root, then curl -d @request.json.
    done = subprocess.run(
        ["git", "check-ignore", "-q", "request.json"], cwd=REPO_ROOT, timeout=30, check=False
    )
    assert done.returncode == 0, "request.json would show as untracked"


def test_users_help_says_where_the_new_password_comes_from() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "deploy.users", "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "NEW_USER_PASSWORD" in " ".join(shown.split())
