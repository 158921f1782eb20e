"""cifar10_kfp/submit.py's --host parsing, without a cluster: a bad URL is one line, no password."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cifar10_kfp.submit import host_credentials
from pipeline.core.errors import ParamsError
from tests.conftest import REPO_ROOT

BAD_HOSTS = ["http://u:pw@localhost:8080x", "http://u:pw@[::1"]


@pytest.mark.parametrize("host", BAD_HOSTS)
def test_a_malformed_host_is_a_params_error_without_the_password(host: str) -> None:
    with pytest.raises(ParamsError) as caught:
        host_credentials(host)
    message = str(caught.value)
    assert message.startswith("--host http://u:***@") and "not a valid URL" in message
    assert "pw" not in message.replace("***", "")


@pytest.mark.parametrize("host", BAD_HOSTS)
def test_submit_with_a_malformed_host_prints_one_error_line(host: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cifar10_kfp.submit", "--host", host],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --host http://u:***@"), done.stderr
    assert "Traceback" not in done.stderr and ":pw@" not in done.stderr
