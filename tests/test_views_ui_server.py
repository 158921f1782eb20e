"""``make ui`` (views/ui_server.py) with a real MLflow UI: the link comes once the server answers,
and Ctrl-C ends it with one line and no traceback, its workers stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import QUIET_ENV, REPO_ROOT, free_port
from views.ui_server import answers

pytestmark = pytest.mark.e2e


def test_link_once_answering_and_ctrl_c_is_one_line(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    port = free_port()
    env = {**os.environ, **QUIET_ENV, "MLFLOW_TRACKING_URI": store, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("CIFAR10_VERBOSE", None)
    ui = subprocess.Popen(
        [sys.executable, "-m", "views.ui_server", "--port", str(port),
         "--backend-store-uri", store],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        lines = []
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            line = ui.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C stops"):
                break
        assert lines and lines[-1] == "Ctrl-C stops the UI.", lines
        link = next(line.strip() for line in lines if line.strip().startswith("http://"))
        # Printed only once the server answers: it answers now.
        assert link.startswith(f"http://127.0.0.1:{port}/")
        assert answers(f"http://127.0.0.1:{port}/health")
        ui.send_signal(signal.SIGINT)
        rest = ui.communicate(timeout=60)[0]
    finally:
        if ui.poll() is None:
            ui.kill()
    assert ui.returncode == 0
    assert rest.strip().splitlines() == ["stopped the MLflow UI"], rest
    assert not answers(f"http://127.0.0.1:{port}/health"), "its workers are gone too"
