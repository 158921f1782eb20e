"""Tracking for a team: ``make server`` (deploy/server.py) on a real PostgreSQL, with basic auth.

The suite starts PostgreSQL itself (deploy/postgres.py: initdb into a temp folder, run as an
unprivileged user when we are root) and one ``python -m deploy.server`` per module on a free
127.0.0.1 port; the pipeline's stages run against it as real subprocesses, and everything is
read back over the REST API with urllib, a client that shares no code with the pipeline.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deploy.postgres import Cluster, find_bin_dir, start_cluster
from tests import mlflow_fixtures as mf
from tests.conftest import QUIET_ENV, REPO_ROOT, free_port, run_stage, write_prepared
from tests.test_train import first_checkpoint_state

pytestmark = pytest.mark.e2e

EXPERIMENT = "cifar10-cnn"
MODEL = "cifar10-cnn"
EPOCH_METRICS = [
    "loss/train",
    "accuracy/train",
    "loss/val",
    "accuracy/val",
    "speed/epoch_seconds",
    "speed/images_per_s",
]
# Small but not tiny: this machine is shared, and a request may wait seconds for a CPU.
CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
USERS = {"trainer": "trainer-pass-0123456789", "reader": "reader-pass-0123456789"}


@dataclass
class Server:
    """One ``python -m deploy.server`` and what it was started with."""

    port: int
    env: dict[str, str]
    folder: Path
    process: subprocess.Popen | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_password(self) -> str:
        return (self.folder / "state" / "admin-password").read_text().strip()

    def start(self) -> None:
        log = self.folder / f"server-{len(self.logs)}.log"
        self.logs.append(log)
        self.process = mf.start_server([sys.executable, "-m", "deploy.server"], self.env, log)
        # Generous: with the machine busy, a worker takes a minute or two to import MLflow.
        mf.wait_for_http(f"{self.url}/health", self.process, log, timeout_s=420)

    def stop(self) -> None:
        if self.process is not None:
            mf.stop_server(self.process)
            self.process = None

    def log_text(self) -> str:
        return "".join(log.read_text(errors="replace") for log in self.logs)


def api(
    server: Server,
    endpoint: str,
    payload: dict | None = None,
    user: str | None = None,
    password: str | None = None,
    **query: str,
) -> tuple[int, Any]:
    """(HTTP status, decoded JSON or raw bytes) of GET ``endpoint?query`` (or POST ``payload``)."""
    data = None if payload is None else json.dumps(payload).encode()
    url = f"{server.url}{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    if user is not None and password is None:
        password = USERS.get(user, server.admin_password)
    return mf.http_call(url, data, user, password or "")


def admin_api(server: Server, endpoint: str, payload: dict | None = None, **query: str) -> Any:
    """The JSON answer of an admin's request, which must succeed."""
    status, body = api(server, endpoint, payload, user="admin", **query)
    assert status == 200, (endpoint, status, body)
    return body


def metric_steps(server: Server, run_id: str, metric: str) -> list[int]:
    """The steps of every logged value of ``metric`` in ``run_id``, sorted."""
    history = admin_api(
        server, "/api/2.0/mlflow/metrics/get-history", run_id=run_id, metric_key=metric
    )
    return sorted(m["step"] for m in history.get("metrics", []))


def model_versions(server: Server) -> list[dict]:
    """Every version of the registered model."""
    answer = admin_api(server, "/api/2.0/mlflow/model-versions/search", filter=f"name='{MODEL}'")
    return answer["model_versions"]


@pytest.fixture(scope="module")
def postgres() -> Cluster:
    # A failure, not a skip: .ci/run installs PostgreSQL 15 where it is missing.
    if find_bin_dir() is None:
        pytest.fail("PostgreSQL binaries (initdb, postgres) not found: apt-get install "
                    "postgresql-15 (.ci/run does) or set PG_BIN")  # fmt: skip
    cluster = start_cluster(None, free_port(), durable=False)
    try:
        cluster.create_database("mlflow")
        cluster.create_database("mlflow_auth")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server(postgres: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Server:
    folder = tmp_path_factory.mktemp("server")
    env = {
        **os.environ,
        **QUIET_ENV,
        "PGPASSWORD": postgres.password,
        "MLFLOW_BACKEND_STORE_URI": postgres.uri("mlflow"),
        "SERVER_DIR": str(folder / "state"),
        "MLFLOW_ARTIFACTS_DESTINATION": (folder / "artifacts").as_uri(),
        "WORKERS": "2",
    }
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        env.pop(name, None)
    port = free_port()
    instance = Server(port, {**env, "PORT": str(port)}, folder)
    try:
        instance.start()
        with admin_auth_client(instance) as auth:
            for user, password in USERS.items():
                auth.create_user(user, password)
        yield instance
    finally:
        instance.stop()


@contextlib.contextmanager
def admin_auth_client(server: Server) -> Iterator[Any]:
    """MLflow's basic-auth client signed in as the admin, as the README uses it."""
    from mlflow.server import get_app_client

    # The client reads the credentials from the environment at each call.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        patch.setenv("MLFLOW_TRACKING_PASSWORD", server.admin_password)
        yield get_app_client("basic-auth", tracking_uri=server.url)


def client_env(server: Server, user: str = "trainer") -> dict[str, str]:
    return {
        **CLIENT_ENV,
        "MLFLOW_TRACKING_URI": server.url,
        "MLFLOW_TRACKING_USERNAME": user,
        "MLFLOW_TRACKING_PASSWORD": USERS[user],
    }


def stage_args(workdir: Path, prepared: Path, stage: str, *sets: str) -> list[str]:
    args = ["--prepared-dir", str(prepared), "--models-dir", str(workdir / "models"),
            "--reports-dir", str(workdir / "reports")]  # fmt: skip
    if stage == "train":
        args += ["--checkpoints-dir", str(workdir / "checkpoints"),
                 "--archive", str(workdir / "no-archive.tar.gz"),
                 "--set", "train.batch_size=50"]  # fmt: skip
    for item in sets:
        args += ["--set", item]
    return args


def run_together(commands: list[list[str]], env: dict[str, str], timeout: float = 900) -> list:
    """Start every command at once; (returncode, stdout, stderr) of each once all have ended."""
    processes = [
        subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **QUIET_ENV, **env},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]  # fmt: skip
    outputs = [process.communicate(timeout=timeout) for process in processes]
    return [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs, strict=True)]


def stage_command(stage: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", f"stages.{stage}", *args]


@pytest.fixture(scope="module")
def two_pipelines(
    server: Server, prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Two tiny pipelines (train, then evaluate) run at the same time as user ``trainer``."""
    root = tmp_path_factory.mktemp("pipelines")
    workdirs = [root / "a", root / "b"]
    env = client_env(server)
    trains = run_together(
        [stage_command("train", stage_args(w, prepared_dir, "train", "train.epochs=2",
                                           f"train.seed={seed}"))
         for w, seed in zip(workdirs, (1, 2), strict=True)],
        env,
    )  # fmt: skip
    for returncode, _, stderr in trains:
        assert returncode == 0, stderr
    # min_accuracy 0: tiny data cannot reach the real gate, and the champion must still move.
    evaluates = run_together(
        [stage_command("evaluate", stage_args(w, prepared_dir, "evaluate",
                                              "register.min_accuracy=0"))
         for w in workdirs],
        env,
    )  # fmt: skip
    for returncode, _, stderr in evaluates:
        assert returncode == 0, stderr
    run_ids = [json.loads((w / "models" / "run.json").read_text())["run_id"] for w in workdirs]
    return {"workdirs": workdirs, "run_ids": run_ids, "outputs": trains + evaluates}


def test_bad_settings_stop_the_server_script_with_one_line(tmp_path: Path) -> None:
    base = {**os.environ, **QUIET_ENV, "SERVER_DIR": str(tmp_path), "DATABASE_WAIT_SECONDS": "0"}
    base.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    cases = [
        ({"MLFLOW_BACKEND_STORE_URI": ""}, "MLFLOW_BACKEND_STORE_URI must name the PostgreSQL"),
        ({"MLFLOW_BACKEND_STORE_URI": "sqlite:///x.db"}, "got sqlite:///x.db"),
        ({"MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg://u:topsecret@127.0.0.1:1/db",
          "MLFLOW_AUTH_ADMIN_PASSWORD": "password1234"}, "well-known default"),
        ({"MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg://u:topsecret@127.0.0.1:1/db",
          "MLFLOW_AUTH_ADMIN_PASSWORD": "short"}, "at least 12 characters"),
        # Nobody listens on port 1: the database step fails, without showing the password.
        ({"MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg://u:topsecret@127.0.0.1:1/db"},
         "error: cannot prepare the stores"),
    ]  # fmt: skip
    for extra, message in cases:
        result = subprocess.run(
            [sys.executable, "-m", "deploy.server"], cwd=REPO_ROOT, env={**base, **extra},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode in (1, 2), (extra, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert message in lines[0]
        assert "topsecret" not in result.stdout + result.stderr


def test_auth_keeps_out_whoever_has_no_account(server: Server) -> None:
    path = "/api/2.0/mlflow/experiments/search"
    assert api(server, path, max_results="1")[0] == 401
    assert api(server, path, user="admin", password="not-the-password", max_results="1")[0] == 401
    assert api(server, path, user="admin", password="password1234", max_results="1")[0] == 401
    assert api(server, path, user="nobody-here", password="x" * 12, max_results="1")[0] == 401
    assert api(server, path, user="admin", max_results="1")[0] == 200
    assert api(server, path, user="reader", max_results="1")[0] == 200
    # The generated admin password: long, private to its owner, and in no log.
    secret = server.folder / "state" / "admin-password"
    assert len(server.admin_password) >= 24
    assert secret.stat().st_mode & 0o077 == 0
    assert server.admin_password not in server.log_text()


RACERS = 8


def log_at_once(run_ids: list[str], dataset: Any) -> list[BaseException]:
    """``log_datasets`` of ``dataset`` to each run, from one thread per run released together."""
    from pipeline.tracking.datasets import log_datasets

    start = threading.Barrier(len(run_ids))
    errors: list[BaseException] = []

    def log(run_id: str) -> None:
        try:
            start.wait(timeout=60)
            log_datasets(run_id, [dataset])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=log, args=(run_id,)) for run_id in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def test_runs_logging_the_same_new_dataset_at_once_all_keep_it(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow checks for a dataset, then inserts it: two runs at once both insert, one fails."""
    import mlflow

    from pipeline.artifacts.prepared import read_split
    from pipeline.tracking.datasets import split_dataset

    for name, value in client_env(server).items():
        monkeypatch.setenv(name, value)
    # log_datasets uses the process's tracking URI, which an earlier test may have set.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(server.url)
    try:
        client = mlflow.MlflowClient()
        experiment = client.create_experiment("dataset-race")
        runs = [client.create_run(experiment).info.run_id for _ in range(RACERS)]
        folder = server.folder / "race-data"
        digests = []
        for round_ in range(6):
            # A new dataset each round (its digest is its npz file's md5), seen by every run at
            # once.
            path = write_prepared(folder / str(round_), {"train": 4, "val": 1, "test": 1}, round_)
            dataset = split_dataset("train", read_split(path, "train", 10), "https://example.org/x")
            digests.append(dataset.dataset.digest)
            errors = log_at_once(runs, dataset)
            assert not errors, f"round {round_}: {errors[0]}"
    finally:
        mlflow.set_tracking_uri(previous)
    for run_id in runs:
        inputs = client.get_run(run_id).inputs.dataset_inputs
        assert sorted(i.dataset.digest for i in inputs) == sorted(digests), run_id


def experiment_id(server: Server) -> str:
    answer = admin_api(
        server, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=EXPERIMENT
    )
    return answer["experiment"]["experiment_id"]


def get_run(server: Server, run_id: str) -> dict:
    return admin_api(server, "/api/2.0/mlflow/runs/get", run_id=run_id)["run"]


def aliases(server: Server) -> dict[str, str]:
    model = admin_api(server, "/api/2.0/mlflow/registered-models/get", name=MODEL)
    return {a["alias"]: a["version"] for a in model["registered_model"].get("aliases", [])}


def as_dict(items: list[dict]) -> dict[str, Any]:
    """MLflow's [{"key": k, "value": v}, ...] as {k: v}."""
    return {item["key"]: item["value"] for item in items}


def test_pipeline_end_to_end_read_back_by_another_client(
    server: Server, two_pipelines: dict[str, Any]
) -> None:
    experiment = admin_api(
        server, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=EXPERIMENT
    )["experiment"]
    # Proxied artifacts: clients hand files to the server, which stores them itself.
    assert experiment["artifact_location"].startswith("mlflow-artifacts:")
    for run_id in two_pipelines["run_ids"]:
        run = get_run(server, run_id)
        assert run["info"]["status"] == "FINISHED"
        assert run["info"]["experiment_id"] == experiment["experiment_id"]
        assert as_dict(run["data"]["params"])["train.epochs"] == "2"
        assert 0.0 <= as_dict(run["data"]["metrics"])["test/accuracy"] <= 1.0
        assert as_dict(run["data"]["tags"])["mlflow.user"] == "trainer"
        for metric in EPOCH_METRICS:
            assert metric_steps(server, run_id, metric) == [1, 2], metric
        listing = admin_api(server, "/api/2.0/mlflow/artifacts/list", run_id=run_id, path="report")
        files = {Path(f["path"]).name for f in listing["files"]}
        assert {"report.html", "report.md", "confusion_matrix.png", "metrics.json"} <= files
        status, png = api(
            server, "/get-artifact", user="reader", run_uuid=run_id,
            path="report/confusion_matrix.png",
        )  # fmt: skip
        assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    stored = list((server.folder / "artifacts").rglob("confusion_matrix.png"))
    assert len(stored) == 2, "artifacts land in the server's --artifacts-destination"
    assert "champion" in aliases(server)
    assert {v["run_id"] for v in model_versions(server)} == set(two_pipelines["run_ids"])


def test_credentials_never_reach_logs_tags_or_reports(
    server: Server, two_pipelines: dict[str, Any]
) -> None:
    secrets = [*USERS.values(), server.admin_password, server.env["PGPASSWORD"]]
    texts = {
        "stage output": "".join(out + err for _, out, err in two_pipelines["outputs"]),
        "server log": server.log_text(),
        "model versions": json.dumps(model_versions(server)),
    }
    for workdir in two_pipelines["workdirs"]:
        for path in [*(workdir / "reports").rglob("*"), workdir / "models" / "run.json"]:
            if path.is_file():
                texts[str(path)] = path.read_bytes().decode("latin-1")
    for run_id in two_pipelines["run_ids"]:
        texts[f"run {run_id}"] = json.dumps(get_run(server, run_id))
    assert len(texts) > 10
    for name, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a password appears in {name}"


def test_two_trainings_at_once_leave_a_consistent_registry(
    server: Server, two_pipelines: dict[str, Any]
) -> None:
    versions = model_versions(server)
    numbers = sorted(int(v["version"]) for v in versions)
    assert numbers == [1, 2], "one version per training, no gaps"
    current = aliases(server)
    # v1 was promoted (first champion); v2 either beat it (promoted: no challenger left) or not
    # (kept: the challenger).
    assert current in ({"champion": "2"}, {"champion": "1", "challenger": "2"}), current
    for version in versions:
        tags = as_dict(version["tags"])
        run = get_run(server, version["run_id"])
        assert float(tags["test_accuracy"]) == pytest.approx(
            as_dict(run["data"]["metrics"])["test/accuracy"]
        )
        # The data's md5 is in the description now, with the rest of the lineage (4 tags left).
        prepared_md5 = as_dict(run["data"]["tags"])["data.prepared_md5"]
        assert f"prepared data md5 `{prepared_md5}`" in version["description"]
        assert tags["registry.decision"] in {"promoted", "kept"}
    # One champion, and one that a promotion decision put there.
    (champion,) = [v for v in versions if v["version"] == current["champion"]]
    assert as_dict(champion["tags"])["registry.decision"] == "promoted"


def test_read_only_user_cannot_create_runs_or_move_an_alias(
    server: Server, two_pipelines: dict[str, Any]
) -> None:
    status, body = api(
        server, "/api/2.0/mlflow/runs/create", {"experiment_id": experiment_id(server)},
        user="reader",
    )  # fmt: skip
    assert status == 403, body
    before = aliases(server)
    other = "1" if before["champion"] == "2" else "2"
    status, body = api(
        server, "/api/2.0/mlflow/registered-models/alias",
        {"name": MODEL, "alias": "champion", "version": other}, user="reader",
    )  # fmt: skip
    assert status == 403, body
    assert aliases(server) == before
    assert api(server, "/api/2.0/mlflow/registered-models/get", user="reader", name=MODEL)[0] == 200

    # The README's way to let a colleague log into the shared experiment: grant EDIT.
    with admin_auth_client(server) as auth:
        auth.grant_user_permission("reader", "experiment", experiment_id(server), "EDIT")
        auth.grant_user_permission("reader", "registered_model", MODEL, "EDIT")
        try:
            status, body = api(
                server, "/api/2.0/mlflow/runs/create", {"experiment_id": experiment_id(server)},
                user="reader",
            )  # fmt: skip
            assert status == 200, body
            status, body = api(
                server, "/api/2.0/mlflow/registered-models/alias",
                {"name": MODEL, "alias": "champion", "version": before["champion"]},
                user="reader",
            )  # fmt: skip
            assert status == 200, body
        finally:
            auth.revoke_user_permission("reader", "experiment", experiment_id(server))
            auth.revoke_user_permission("reader", "registered_model", MODEL)
    assert aliases(server) == before


def test_server_stopped_mid_training_then_rerun_resumes_the_same_run(
    server: Server, tmp_path: Path
) -> None:
    # Enough images that an epoch takes seconds: the server dies while epochs remain.
    prepared = write_prepared(tmp_path / "prepared", {"train": 1000, "val": 50, "test": 10})
    workdir = tmp_path / "work"
    args = stage_args(workdir, prepared, "train", "train.epochs=4")
    env = {
        **os.environ,
        **QUIET_ENV,
        **client_env(server),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    }
    training = subprocess.Popen(
        stage_command("train", args), cwd=REPO_ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        state = first_checkpoint_state(training, workdir, timeout_s=600)
        assert state is not None, "no checkpoint before the training ended"
        # A crash, not a shutdown: the whole server process group dies at once.
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)
        server.process = None
        _, stderr = training.communicate(timeout=600)
    finally:
        training.kill()
    assert training.returncode == 1, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert errors[0].startswith(f"error: MLflow tracking at {server.url} failed after epoch ")
    assert "rerunning the train stage resumes it" in errors[0]
    failed = json.loads(next((workdir / "checkpoints").glob("*/state.json")).read_text())
    done, run_id = failed["epochs_done"], failed["run_id"]
    assert 1 <= done < 4

    server.start()
    for metric in EPOCH_METRICS:
        assert set(range(1, done + 1)) <= set(metric_steps(server, run_id, metric)), metric

    rerun = run_stage("train", *args, env=client_env(server), timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming after epoch {done} of 4" in rerun.stderr
    assert json.loads((workdir / "models" / "run.json").read_text())["run_id"] == run_id
    assert get_run(server, run_id)["info"]["status"] == "FINISHED"
    for metric in EPOCH_METRICS:
        assert sorted(set(metric_steps(server, run_id, metric))) == [1, 2, 3, 4], metric


def test_users_command_gives_edit_on_a_fresh_server_and_can_be_rerun(server: Server) -> None:
    # The README's user set-up once failed on a server nobody had trained on (no experiment to
    # grant on) and could not be run twice (the user existed): names of its own keep it fresh.
    names = ["--experiment", "users-fresh-experiment", "--model", "users-fresh-model"]
    env = {**os.environ, **QUIET_ENV, **CLIENT_ENV, "MLFLOW_TRACKING_USERNAME": "admin",
           "MLFLOW_TRACKING_PASSWORD": server.admin_password,
           "NEW_USER_PASSWORD": "ci-pass-0123456789"}  # fmt: skip
    command = [sys.executable, "-m", "deploy.users", server.url, "ci-user", "--edit", *names]
    outputs = []
    for _ in range(2):
        result = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    assert "created user ci-user" in outputs[0] and "exists (password unchanged)" in outputs[1]
    for output in outputs:
        assert server.admin_password not in output and "ci-pass-0123456789" not in output
    with admin_auth_client(server) as auth:
        experiment = admin_api(
            server, "/api/2.0/mlflow/experiments/get-by-name",
            experiment_name="users-fresh-experiment",
        )["experiment"]  # fmt: skip
        granted = auth.get_user_permission("ci-user", "experiment", experiment["experiment_id"])
        assert granted.permission == "EDIT"
        granted = auth.get_user_permission("ci-user", "registered_model", "users-fresh-model")
        assert granted.permission == "EDIT"
    # And the new account really may log: a run in the experiment, as ci-user.
    status, _ = api(
        server, "/api/2.0/mlflow/runs/create",
        {"experiment_id": experiment["experiment_id"]},
        user="ci-user", password="ci-pass-0123456789",
    )  # fmt: skip
    assert status == 200
