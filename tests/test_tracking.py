"""Where the MLflow store is, and what of its URI may be shown: no passwords, no machine paths."""

from __future__ import annotations

import base64
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import mlflow
import pytest

from pipeline.core import paths
from pipeline.core.errors import PipelineError
from pipeline.core.redact import add_secret, redact, relative_to_root, split_userinfo
from pipeline.tracking import metric_names
from pipeline.tracking import runs as tracking
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize(
    ("value", "logged"),
    [
        (0.18249999, 0.1825),  # float32 noise of a 10,000-image accuracy
        (0.0967367, 0.09674),  # a macro F1: 4 significant digits, not 4 decimals
        (0.048932171, 0.04893),  # loss/val
        (0.1, 0.1),
        (1234.567, 1235.0),  # images/s
        (2.0, 2.0),
    ],
)
def test_logged_metrics_have_4_significant_digits(value: float, logged: float) -> None:
    # MLflow's runs table shows stored values verbatim; digits past the 4th are noise.
    assert metric_names.logged_value(value) == logged


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://alice:s3cret@127.0.0.1:5000 is down", "http://alice:***@127.0.0.1:5000 is down"),
        ("postgresql+psycopg://u:p@ss@db:5432/mlflow", "postgresql+psycopg://u:***@db:5432/mlflow"),
        ("https://ghp_token@example.org/x", "https://***@example.org/x"),
        ("sqlite:////home/me/mlflow.db", "sqlite:////home/me/mlflow.db"),
        # Characters that should have been percent-encoded, and the ones that were.
        ("http://admin:it's-me@h:5000/x", "http://admin:***@h:5000/x"),
        (
            "MLflow at http://admin:pass word@h:5000 is down",
            "MLflow at http://admin:***@h:5000 is down",
        ),
        ("https://ci:pa/ss@h/remote failed", "https://ci:***@h/remote failed"),
        ("https://ci:pa%2Fss%20x%27y@h/remote", "https://ci:***@h/remote"),
        ("['https://u:p@h', 'https://h:5000/x']", "['https://u:***@h', 'https://h:5000/x']"),
        # Secrets in query strings.
        ("https://h/x?token=abc123&page=2", "https://h/x?token=***&page=2"),
        (
            "s3://b/k?X-Amz-Signature=f00&access_key=AKIA1",
            "s3://b/k?X-Amz-Signature=***&access_key=***",
        ),
        ("http://h/api?user=bob&password=pw1", "http://h/api?user=bob&password=***"),
        # No password: left as it is (a port, an address, a model alias).
        (
            "http://127.0.0.1:5000/#/experiments/1 is down; ask admin@example.org",
            "http://127.0.0.1:5000/#/experiments/1 is down; ask admin@example.org",
        ),
        ("models:/cifar10-cnn@champion", "models:/cifar10-cnn@champion"),
    ],
)
def test_redact_masks_every_password(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_a_registered_secret_is_masked_anywhere() -> None:
    secret = "planted-Secret/with space"
    assert secret in redact(f"oops: {secret}")
    add_secret(secret)
    assert redact(f"oops: {secret} and {quote(secret, safe='')}") == "oops: *** and ***"


@pytest.mark.parametrize(
    ("uri", "parts"),
    [
        ("http://127.0.0.1:5000", ("http://127.0.0.1:5000", None, None)),
        ("http://admin:pa%40ss@h:5000/p", ("http://h:5000/p", "admin", "pa@ss")),
        ("http://admin:p@ss/w'rd@h:5000", ("http://h:5000", "admin", "p@ss/w'rd")),
        ("http://admin:pa ss/w@h:5000/", ("http://h:5000/", "admin", "pa ss/w")),
        ("https://tok@h", ("https://h", "tok", None)),
    ],
)
def test_split_userinfo(uri: str, parts: tuple) -> None:
    assert split_userinfo(uri) == parts


def test_paths_under_the_project_become_relative() -> None:
    root = Path("/home/me/project")
    assert relative_to_root("/home/me/project/stages/train.py", root) == "stages/train.py"
    assert relative_to_root("file:///home/me/project", root) == "."
    assert relative_to_root("/home/me/project-2/x", root) == "/home/me/project-2/x"


def test_default_store_is_the_workspace_one_in_a_dvc_temp_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path / "project"
    workspace.mkdir()
    (workspace / "dvc.yaml").write_text("stages: {}\n")
    # What dvc 3 gives a stage of a queued or --temp experiment: the workspace in DVC_ROOT.
    monkeypatch.setenv("DVC_ROOT", str(workspace))
    assert tracking.tracking_uri() == f"sqlite:///{workspace / 'mlflow.db'}"
    assert tracking.shareable_uri(tracking.tracking_uri()) == "sqlite:///mlflow.db"
    # Without DVC_ROOT, a checkout under .dvc/tmp/exps/ still finds its workspace.
    monkeypatch.delenv("DVC_ROOT")
    monkeypatch.setattr(paths, "REPO_ROOT", workspace / ".dvc" / "tmp" / "exps" / "tmpab12cd")
    assert paths.workspace_root() == workspace
    monkeypatch.setattr(paths, "REPO_ROOT", REPO_ROOT)
    assert tracking.tracking_uri() == f"sqlite:///{REPO_ROOT / 'mlflow.db'}"
    # An explicit store always wins.
    monkeypatch.setenv("DVC_ROOT", str(workspace))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://u:pw@127.0.0.1:1")
    assert tracking.tracking_uri() == "http://u:pw@127.0.0.1:1"
    assert tracking.shareable_uri(tracking.tracking_uri()) == "http://u:***@127.0.0.1:1"


class _BasicAuthHealth(http.server.BaseHTTPRequestHandler):
    """/health answers 200 only with the expected basic-auth header, like a guarded server."""

    expected = "Basic " + base64.b64encode(b"alice:s3cret").decode()

    def do_GET(self) -> None:
        status = 200 if self.headers.get("Authorization") == self.expected else 401
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def guarded_server() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _BasicAuthHealth)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_server_check_sends_the_uri_credentials(
    guarded_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = mlflow.get_tracking_uri()
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:s3cret@127.0.0.1:{guarded_server}")
        # MLflow gets the bare URI, so its "View run ... at: URL" line shows no password.
        assert tracking.prepare_tracking() == f"http://127.0.0.1:{guarded_server}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:wrong@127.0.0.1:{guarded_server}")
        with pytest.raises(PipelineError) as caught:
            tracking.prepare_tracking()
        assert "wrong" not in str(caught.value)
        assert f"http://alice:***@127.0.0.1:{guarded_server} is unreachable" in str(caught.value)
    finally:
        mlflow.set_tracking_uri(previous)


def test_uri_credentials_go_to_mlflow_through_the_environment(
    guarded_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow prints its tracking URI (``View run ... at: URL``): it must get one without the
    password, and the credentials the way it reads them besides."""
    previous = mlflow.get_tracking_uri()
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    bare = f"http://127.0.0.1:{guarded_server}"
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:s3cret@127.0.0.1:{guarded_server}")
        assert tracking.prepare_tracking() == bare
        assert mlflow.get_tracking_uri() == bare
        # Child processes (dvc's stages, ci_report) inherit the bare URI too.
        assert os.environ["MLFLOW_TRACKING_URI"] == bare
        assert tracking.tracking_uri() == bare
        assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret"
        assert redact("traceback: s3cret") == "traceback: ***"
        # Again, with the credentials already in the environment: unchanged.
        assert tracking.prepare_tracking() == bare
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret"
    finally:
        mlflow.set_tracking_uri(previous)
