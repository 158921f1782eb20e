"""The team stack for real: deploy/compose.yaml brought up by Compose, a tiny training against it.

Compose v1 (Debian's ``docker-compose`` 1.29, the compose a Debian machine has) runs
deploy/compose.yaml with tests/compose/compose.override.yaml, which swaps in images built here on
the local Debian base (tests/docker_fixtures.py), so no image registry is needed: PostgreSQL from
Debian's ``postgresql-15``, moto's S3 server in place of MinIO, and deploy/mlflow.Dockerfile as
shipped. Its passwords are generated for this run and travel in an ``--env-file`` (mode 600), as
users keep theirs in deploy/.env. The pipeline's stages then run on this machine as a user made
by ``deploy.users``, through the server's proxied artifact store into the S3 bucket.

Everything is torn down at the end (``down --volumes``; the daemon, if ours, stopped by its PID),
also on failure. Measured on 2 cores: see docs/team-server.md.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cifar_archive import build_archive
from tests.conftest import QUIET_ENV, REPO_ROOT, free_port, run_stage, train_args
from tests.docker_fixtures import COMPOSE_V1, DOCKER_CLI, Docker, log, python_base_image, uv_image
from tests.mlflow_fixtures import http_call

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.docker,
    pytest.mark.timeout(1800),
]

COMPOSE_FILES = ("deploy/compose.yaml", "tests/compose/compose.override.yaml")
SERVICES = ("postgres", "minio", "mlflow")
PROJECT_PREFIX = "cifar10-stack-test-"
BUCKET = "mlflow-artifacts"
EXPERIMENT = "cifar10-cnn"
# The MLmodel file of a logged model in the bucket: <experiment id>/models/<model id>/artifacts/.
LOGGED_MODEL = re.compile(r"^\d+/models/(m-[0-9a-f]+)/artifacts/MLmodel$")
TRAINER = "trainer"
# Small but patient: on 2 busy cores a request may wait seconds for a CPU.
CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}


@dataclass
class Stack:
    """One compose project of deploy/compose.yaml, and the secrets it was started with."""

    docker: Docker
    project: str
    env_file: Path
    env: dict[str, str]
    settings: dict[str, str]
    port: int
    up_seconds: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def secrets(self) -> list[str]:
        """Every password of the run: none may show in a log or an image."""
        names = ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "MLFLOW_ADMIN_PASSWORD")
        return [self.settings[name] for name in (*names, "MLFLOW_FLASK_SECRET_KEY")] + [
            self.settings["TRAINER_PASSWORD"]
        ]

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``docker-compose -p PROJECT -f ... --env-file ... ARGS``, as the docs write it."""
        files = [arg for name in COMPOSE_FILES for arg in ("--file", name)]
        command = [str(COMPOSE_V1), "--project-name", self.project, *files]
        return subprocess.run(
            [*command, "--env-file", str(self.env_file), *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def images(self) -> list[str]:
        """The images the project's containers run."""
        containers = self.compose("ps", "--quiet").stdout.split()
        inspect = self.docker("inspect", "--format", "{{.Config.Image}}", *containers)
        return sorted(set(inspect.stdout.split()))

    def redact(self, text: str) -> str:
        """``text`` with every password of the run replaced by ``***``."""
        for value in self.secrets:
            text = text.replace(value, "***")
        return text

    def raw_logs(self) -> str:
        """What every service printed (unredacted: for the no-secret check only)."""
        result = self.compose("logs", "--no-color", "--timestamps", timeout=120)
        return result.stdout + result.stderr

    def logs(self) -> str:
        """The services' logs as a failure message shows them: redacted, the last lines."""
        return self.redact(self.raw_logs())[-6000:]


def write_env_file(path: Path, settings: dict[str, str]) -> Path:
    """deploy/.env's twin for this run: created with mode 600 before anything is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"{name}={value}\n" for name, value in settings.items())
    return path


def http(stack: Stack, path: str, user: str | None = None, password: str = "") -> tuple[int, Any]:
    """(status, decoded JSON or bytes) of GET ``path`` on the server, with basic auth if a user."""
    return http_call(f"{stack.url}{path}", user=user, password=password, timeout=60)


def as_admin(stack: Stack, path: str) -> Any:
    """The JSON answer of an admin's GET, which must succeed."""
    status, body = http(stack, path, "admin", stack.settings["MLFLOW_ADMIN_PASSWORD"])
    assert status == 200, (path, status, body)
    return body


def wait_until_healthy(stack: Stack, timeout_s: float = 420) -> None:
    """Until the server answers /health on the published port (bounded; fails with the logs)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{stack.url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(2)
    pytest.fail(f"the MLflow server did not answer within {timeout_s:.0f} s:\n{stack.logs()}")


def remove_leftover_stacks(docker: Docker) -> None:
    """Containers, volumes and networks of a test stack whose run was killed before ``down``:
    with ``restart: unless-stopped`` its containers would come back with the daemon."""
    label = "com.docker.compose.project"
    for kind, key in (("container", "ID"), ("volume", "Name"), ("network", "ID")):
        listing = docker(
            kind, "ls", *(["--all"] if kind == "container" else []),
            "--filter", f"label={label}", "--format", f'{{{{.{key}}}}} {{{{.Label "{label}"}}}}',
        ).stdout  # fmt: skip
        names = [line.split()[0] for line in listing.splitlines() if PROJECT_PREFIX in line]
        if names:
            log(f"removing {len(names)} {kind}(s) of an earlier, killed test stack")
            docker(kind, "rm", *(["--force"] if kind == "container" else []), *names)


@pytest.fixture(scope="module")
def stack(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack up (``up -d --build``) and healthy; ``down --volumes`` afterwards, always."""
    folder = tmp_path_factory.mktemp("compose")
    settings = {
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "MINIO_ROOT_USER": "mlflow",
        "MINIO_ROOT_PASSWORD": secrets.token_urlsafe(24),
        "MLFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(24),
        "MLFLOW_FLASK_SECRET_KEY": secrets.token_urlsafe(24),
        "MLFLOW_PUBLISH": f"127.0.0.1:{free_port()}",
        # Two workers, not four: this machine has two cores.
        "MLFLOW_WORKERS": "2",
    }
    remove_leftover_stacks(docker)
    env_file = write_env_file(folder / "stack.env", settings)
    settings["TRAINER_PASSWORD"] = secrets.token_urlsafe(24)
    env = {
        **docker.env,
        # Compose 1.29 builds through the `docker` it finds on PATH: Debian's, whose BuildKit is
        # built in (a newer CLI without the buildx plugin, as in /usr/local/bin here, fails).
        "PATH": f"{DOCKER_CLI.parent}:{os.environ['PATH']}",
        "TEST_PYTHON_IMAGE": python_base_image(docker),
        "TEST_UV_IMAGE": uv_image(docker),
    }
    instance = Stack(
        docker=docker,
        project=f"{PROJECT_PREFIX}{uuid.uuid4().hex[:8]}",
        env_file=env_file,
        env=env,
        settings=settings,
        port=int(settings["MLFLOW_PUBLISH"].rsplit(":", 1)[1]),
    )
    try:
        started = time.monotonic()
        result = instance.compose("up", "--detach", "--build", timeout=1500)
        assert result.returncode == 0, instance.redact(
            result.stdout[-4000:] + result.stderr[-4000:]
        )
        wait_until_healthy(instance)
        instance.up_seconds = time.monotonic() - started
        log(f"stack {instance.project} up (build included) in {instance.up_seconds:.0f} s")
        for image in instance.images():
            size = docker("image", "inspect", "--format", "{{.Size}}", image).stdout
            log(f"{image}: {int(size) / 1e9:.2f} GB")
        yield instance
    finally:
        down = instance.compose("down", "--volumes", "--remove-orphans", "--timeout", "20")
        if down.returncode != 0:
            log(f"compose down failed: {instance.redact(down.stderr[-2000:])}")


@pytest.fixture(scope="module")
def trained(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A user made by ``deploy.users``; preprocess (300-image archive), train (1 epoch) and
    evaluate run as that user against the stack."""
    folder = tmp_path_factory.mktemp("pipeline")
    admin = {
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": stack.settings["MLFLOW_ADMIN_PASSWORD"],
        "NEW_USER_PASSWORD": stack.settings["TRAINER_PASSWORD"],
        **CLIENT_ENV,
    }
    users = subprocess.run(
        [str(REPO_ROOT / ".venv/bin/python"), "-m", "deploy.users", stack.url, TRAINER, "--edit"],
        cwd=REPO_ROOT,
        env={**os.environ, **QUIET_ENV, **admin},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert users.returncode == 0, stack.redact(users.stdout + users.stderr) + stack.logs()
    archive = folder / "cifar-10-binary.tar.gz"
    build_archive(archive, per_batch=50, n_test=50)
    prepared = folder / "prepared"
    outputs = [users.stdout + users.stderr]
    preprocess = run_stage(
        "preprocess", "--archive", archive, "--prepared-dir", prepared,
        "--reports-dir", folder / "reports", "--set", "preprocess.val_size=50",
    )  # fmt: skip
    assert preprocess.returncode == 0, preprocess.stderr[-3000:]
    client = {
        "MLFLOW_TRACKING_URI": stack.url,
        "MLFLOW_TRACKING_USERNAME": TRAINER,
        "MLFLOW_TRACKING_PASSWORD": stack.settings["TRAINER_PASSWORD"],
        **CLIENT_ENV,
    }
    for stage, args in (
        ("train", train_args(folder, prepared, "train.epochs=1")),
        ("evaluate", [
            "--prepared-dir", str(prepared), "--models-dir", str(folder / "models"),
            "--reports-dir", str(folder / "reports"), "--set", "register.min_accuracy=0",
        ]),
    ):  # fmt: skip
        result = run_stage(stage, *args, env=client, timeout=900)
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == 0, (
            f"{stage} failed:\n{stack.redact(result.stderr[-3000:])}\n{stack.logs()}"
        )
    run_id = json.loads((folder / "models" / "run.json").read_text())["run_id"]
    return {"run_id": run_id, "folder": folder, "output": "".join(outputs)}


def bucket_keys(stack: Stack) -> list[str]:
    """Every key in the artifact bucket, listed from inside the server's container (the S3
    server publishes no port), with boto3 and the server's own S3 settings."""
    code = (
        "import boto3, os\n"
        "s3 = boto3.client('s3', endpoint_url=os.environ['MLFLOW_S3_ENDPOINT_URL'])\n"
        f"for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{BUCKET}'):\n"
        "    for item in page.get('Contents', []):\n"
        "        print(item['Key'])\n"
    )
    result = stack.compose("exec", "-T", "mlflow", "python", "-c", code, timeout=120)
    assert result.returncode == 0, stack.redact(result.stderr[-3000:])
    return result.stdout.split()


def test_requests_without_credentials_get_401(stack: Stack) -> None:
    """Basic auth guards the API and the artifacts: 401 without a password or with a wrong one."""
    for path in ("/api/2.0/mlflow/experiments/search?max_results=1", "/api/2.0/mlflow/users/get"):
        assert http(stack, path)[0] == 401, path
    assert (
        http(stack, "/api/2.0/mlflow/experiments/search?max_results=1", "admin", "wrong")[0] == 401
    )
    assert "experiments" in as_admin(stack, "/api/2.0/mlflow/experiments/search?max_results=1")


def test_training_lands_in_postgres_and_its_artifacts_in_the_bucket(
    stack: Stack, trained: dict[str, Any]
) -> None:
    """The run is in the server's store, logged by the trainer; the artifacts went through the
    server (``mlflow-artifacts:``) into the S3 bucket, under the run's id."""
    run_id = trained["run_id"]
    run = as_admin(stack, f"/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]
    assert run["info"]["status"] == "FINISHED"
    tags = {tag["key"]: tag["value"] for tag in run["data"]["tags"]}
    assert tags["mlflow.user"] == TRAINER
    params = {param["key"]: param["value"] for param in run["data"]["params"]}
    assert params["train.epochs"] == "1"
    metrics = {metric["key"] for metric in run["data"]["metrics"]}
    assert "test/accuracy" in metrics
    experiment = as_admin(
        stack, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}"
    )["experiment"]
    assert experiment["artifact_location"].startswith("mlflow-artifacts:")
    keys = bucket_keys(stack)
    names = {Path(key).name for key in keys if f"/{run_id}/artifacts/" in key}
    assert {"confusion_matrix.png", "metrics.json"} <= names, keys[:50]
    versions = as_admin(stack, "/api/2.0/mlflow/model-versions/search")["model_versions"]
    assert [v["run_id"] for v in versions] == [run_id]
    # MLflow 3 keeps a logged model beside the runs: <experiment>/models/<model id>/artifacts;
    # the registered version's source names that model.
    models = [m.group(1) for key in keys if (m := LOGGED_MODEL.search(key))]
    mlmodels = [key for key in keys if key.endswith("MLmodel")]
    assert len(models) == 1 and models[0] in versions[0]["source"], (versions, mlmodels)
    status, png = http(
        stack, f"/get-artifact?run_uuid={run_id}&path=report/confusion_matrix.png",
        TRAINER, stack.settings["TRAINER_PASSWORD"],
    )  # fmt: skip
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_password_in_logs_outputs_or_images(stack: Stack, trained: dict[str, Any]) -> None:
    """The generated passwords appear nowhere: not in any service's log, the stages' output,
    the reports, nor in the three images (their history and config)."""
    texts = {"compose logs": stack.raw_logs(), "stage output": trained["output"]}
    for path in (trained["folder"] / "reports").rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    images = stack.images()
    assert len(images) == len(SERVICES), images
    for image in images:
        history = stack.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image)
        inspect = stack.docker("image", "inspect", image)
        texts[image] = history.stdout + inspect.stdout
    for service in SERVICES:
        assert f"{service}_1" in texts["compose logs"], f"no log of {service}"
    for name, text in texts.items():
        for value in stack.secrets:
            assert value not in text, f"a password appears in {name}"
