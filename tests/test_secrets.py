"""No secret is ever printed: a password planted in the tracking URI, the Kubeflow host and the DVC
remote URL appears in no console output, log, report, tag, param or artifact.

Everything here is real: HTTP servers on 127.0.0.1 that play the Kubeflow Pipelines API and a DVC
remote (guarded by basic auth, or refusing writes), ``mlflow server`` with its basic-auth app,
and the pipeline's own command lines as subprocesses.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import QUIET_ENV, REPO_ROOT

# Characters that break naive URL handling: "@", "/", "'", "#"... (percent-encoded in URLs).
SECRET = "Pl@nted/S3cret'#x"
SECRET_URL = "Pl%40nted%2FS3cret%27%23x"
ENCODED = [SECRET, SECRET_URL, base64.b64encode(f"ci:{SECRET}".encode()).decode()]
PACKAGE = REPO_ROOT / "cifar10_kfp" / "cifar10_pipeline.yaml"


def basic(user: str, password: str) -> str:
    """The Authorization header of HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def assert_no_secret(text: str, where: str) -> None:
    """Neither the secret nor any encoding of it in ``text``."""
    for form in ENCODED:
        assert form not in text, f"the planted secret ({form!r}) appears in {where}:\n{text}"


@dataclass
class Recorder:
    """What a fake server saw: (method, path, Authorization header) per request."""

    requests: list[tuple[str, str, str | None]] = field(default_factory=list)


class FakeKfp(http.server.BaseHTTPRequestHandler):
    """Just enough of the KFP v2beta1 API for ``kfp.Client.create_run_from_pipeline_package``,
    behind basic auth (user ``ci``, the planted password), as a cluster behind a proxy is."""

    recorder: Recorder

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> None:
        auth = self.headers.get("Authorization")
        self.recorder.requests.append((self.command, self.path, auth))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if auth != basic("ci", SECRET):
            self._answer(401, {"error": "unauthorized", "code": 16})
        elif self.path.startswith("/apis/v2beta1/healthz"):
            self._answer(200, {"multi_user": False})
        elif self.path.startswith("/apis/v2beta1/experiments"):
            experiment = {"experiment_id": "exp-1", "display_name": "cifar10-cnn"}
            self._answer(200, {"experiments": [experiment], "total_size": 1})
        elif self.command == "POST" and self.path.startswith("/apis/v2beta1/runs"):
            self._answer(200, {"run_id": "run-1", "experiment_id": "exp-1", "state": "PENDING"})
        else:
            self._answer(404, {"error": f"not played here: {self.path}"})

    do_GET = do_POST = _route

    def log_message(self, *args: object) -> None:
        pass


class ReadOnlyRemote(http.server.BaseHTTPRequestHandler):
    """A DVC HTTP remote behind basic auth (user ``ci``, the planted password) that serves
    nothing and refuses every write, as a read-only mirror or a bucket without write rights."""

    recorder: Recorder

    def _route(self) -> None:
        auth = self.headers.get("Authorization")
        self.recorder.requests.append((self.command, self.path, auth))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if auth != basic("ci", SECRET):
            status = 401
        elif self.command in ("GET", "HEAD"):
            status = 404
        else:
            status = 405
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="remote"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = do_PUT = _route

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def loopback(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[tuple[int, Recorder]]:
    """Serve ``handler`` on a free 127.0.0.1 port; yield (port, what it saw)."""
    recorder = Recorder()
    bound = type(handler.__name__, (handler,), {"recorder": recorder})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), bound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], recorder
    finally:
        server.shutdown()
        server.server_close()


def submit(host: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m cifar10_kfp.submit --host HOST ARGS`` from the repo."""
    return subprocess.run(
        [sys.executable, "-m", "cifar10_kfp.submit", "--host", host, "--package", str(PACKAGE),
         *args],
        cwd=REPO_ROOT, env={**os.environ, **QUIET_ENV}, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.e2e
@pytest.mark.parametrize("password", [SECRET_URL, SECRET], ids=["percent-encoded", "raw"])
def test_submit_sends_host_credentials_as_basic_auth_and_never_prints_them(password: str) -> None:
    with loopback(FakeKfp) as (port, seen):
        result = submit(f"http://ci:{password}@127.0.0.1:{port}", "--set", "train.epochs=2")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"run run-1: http://127.0.0.1:{port}/#/runs/details/run-1" in result.stdout
    assert_no_secret(output, "submit's output")
    assert ("POST", "/apis/v2beta1/runs", basic("ci", SECRET)) in seen.requests
    assert all(auth == basic("ci", SECRET) for _, _, auth in seen.requests), seen.requests


@pytest.mark.e2e
def test_submit_with_a_wrong_password_is_one_masked_line() -> None:
    with loopback(FakeKfp) as (port, _):
        result = submit(f"http://ci:wrong-{SECRET_URL}@127.0.0.1:{port}")
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot submit to Kubeflow Pipelines at http://127.0.0.1:{port}")
    assert "401" in line or "Unauthorized" in line, line
    assert_no_secret(result.stdout + result.stderr, "submit's output")


def test_server_on_all_interfaces_warns_of_plain_http_and_allowed_hosts(tmp_path: Path) -> None:
    from deploy import server

    base = {"MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg://m@db:5432/mlflow"}
    local = server.read_config({**base, "SERVER_DIR": str(tmp_path)})
    assert server.exposure_warnings(local) == []
    wide = server.read_config({**base, "SERVER_DIR": str(tmp_path), "HOST": "0.0.0.0"})
    plain, hosts = server.exposure_warnings(wide)
    assert plain.startswith("warning: listening on 0.0.0.0:5000 with plain HTTP")
    assert "TLS" in plain
    assert "'403 Invalid Host header'" in hosts and "ALLOWED_HOSTS=" in hosts
    named = server.read_config(
        {**base, "SERVER_DIR": str(tmp_path), "HOST": "0.0.0.0", "ALLOWED_HOSTS": "mlflow.lan"}
    )
    assert [line[:30] for line in server.exposure_warnings(named)] == [plain[:30]]


def grep_tree(folder: Path, where: str, sources: Path | None = None) -> int:
    """Assert no form of the secret is in any file under ``folder``; return how many were read.

    Files identical to their namesake under ``sources`` (the project's own files, copied; this
    module among them, which holds the secret) are skipped.
    """
    count = 0
    for path in folder.rglob("*"):
        if sources is not None:
            original = sources / path.relative_to(folder)
            if original.is_file() and path.is_file() and original.read_bytes() == path.read_bytes():
                continue
        if path.is_file() and not path.is_symlink():
            assert_no_secret(path.read_bytes().decode("latin-1"), f"{where}: {path}")
            count += 1
    return count


@pytest.mark.e2e
def test_planted_secret_appears_nowhere(tmp_path: Path) -> None:
    """Done-when of issue 25: one tiny run end to end (dvc repro against a password-protected
    ``mlflow server``), a CI retrain against a remote that refuses writes and a Kubeflow submit,
    the same password planted in all three; then everything they printed, wrote and logged."""
    import hashlib
    import shutil

    import mlflow

    from tests import mlflow_fixtures as mf
    from tests.cifar_archive import build_archive
    from tests.conftest import free_port
    from tests.test_pipeline_dvc import Repo, project_files

    server_dir = tmp_path / "server"
    server_dir.mkdir()
    (server_dir / "basic_auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{server_dir / 'auth.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    server_env = {
        **os.environ, **QUIET_ENV,
        "MLFLOW_AUTH_CONFIG_PATH": str(server_dir / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": SECRET,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "not-the-planted-one-0123456789",
    }  # fmt: skip
    log = server_dir / "server.log"
    process = mf.start_server(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--app-name", "basic-auth",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{server_dir / 'mlflow.db'}",
         "--serve-artifacts", "--artifacts-destination", (server_dir / "artifacts").as_uri()],
        server_env, log,
    )  # fmt: skip
    outputs: dict[str, str] = {}
    try:
        mf.wait_for_http(f"http://127.0.0.1:{port}/health", process, log, timeout_s=420)
        work = Repo(tmp_path / "work")
        for name in project_files():
            (work.root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, work.root / name)
        archive = tmp_path / "cifar-10-binary.tar.gz"
        build_archive(archive, per_batch=60, n_test=50)
        work.set_params(
            data__url=str(archive), data__md5=hashlib.md5(archive.read_bytes()).hexdigest(),
            preprocess__val_size=50, preprocess__max_train_images=200, train__epochs=1,
            train__batch_size=50, register__min_accuracy=0.0,
        )  # fmt: skip
        work.run("git", "init", "-q", "-b", "main")
        work.run("git", "add", "-A")
        work.run("git", "commit", "-qm", "the project, tiny")
        work.env["MLFLOW_TRACKING_URI"] = f"http://admin:{SECRET_URL}@127.0.0.1:{port}"
        repro = work.run("dvc", "repro", check=False)
        outputs["dvc repro"] = repro.stdout + repro.stderr
        assert repro.returncode == 0, outputs["dvc repro"]
        # MLflow's own line names the run by the bare URI.
        assert f"at: http://127.0.0.1:{port}/#/experiments/" in outputs["dvc repro"]

        with loopback(ReadOnlyRemote) as (remote_port, _):
            ci = work.run(
                sys.executable, ".ci/retrain.py", "--remote-url",
                f"http://ci:{SECRET_URL}@127.0.0.1:{remote_port}/remote", check=False,
            )  # fmt: skip
        outputs["retrain"] = ci.stdout + ci.stderr
        assert ci.returncode == 1 and "refuses writes" in ci.stderr, outputs["retrain"]

        with loopback(FakeKfp) as (kfp_port, _):
            submitted = submit(f"http://ci:{SECRET_URL}@127.0.0.1:{kfp_port}")
        outputs["submit"] = submitted.stdout + submitted.stderr
        assert submitted.returncode == 0, outputs["submit"]

        for name, text in outputs.items():
            assert_no_secret(text, f"the output of {name}")
        assert grep_tree(work.root, "the work dir", sources=REPO_ROOT) > 20

        # The store, read back over the API as the admin (credentials beside the URI).
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            patch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
            client = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
            experiment = client.get_experiment_by_name("cifar10-cnn")
            runs = client.search_runs([experiment.experiment_id])
            assert runs
            for run in runs:
                assert_no_secret(json.dumps(run.to_dictionary(), default=str), "a run")
                folder = tmp_path / "downloaded" / run.info.run_id
                folder.mkdir(parents=True)
                mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id, dst_path=str(folder),
                    tracking_uri=f"http://127.0.0.1:{port}",
                )  # fmt: skip
                assert grep_tree(folder, "the run's artifacts") > 3
            for version in client.search_model_versions("name='cifar10-cnn'"):
                assert_no_secret(json.dumps(dict(version), default=str), "a model version")
        assert_no_secret(log.read_text(errors="replace"), "the server's log")
    finally:
        mf.stop_server(process)
