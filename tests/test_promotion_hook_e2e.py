"""A promotion on a real ``mlflow server`` (SQLite store) reaches the hook once; forgeries don't.

The tracking server, the receiver (``python -m deploy.promotion_hook serve``) and the webhook
(``... create``) are the real ones, on loopback ports; the action appends the promoted version to
a file. A secret is planted in the environment of all three and must appear in no output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from deploy.promotion_hook import (
    DELIVERY_ID_HEADER,
    SECRET_ENV,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
)
from tests import mlflow_fixtures as mf
from tests.conftest import QUIET_ENV, REPO_ROOT, VENV_BIN, free_port

pytestmark = pytest.mark.e2e
SECRET = "planted-hook-secret-7f3a9c2e51"
MODEL = "cifar10-cnn"
# The action: one line per run, the version MLflow promoted.
ACTION = "import os, sys; open(sys.argv[1], 'a').write(os.environ['CHAMPION_VERSION'] + '\\n')"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("hook")
    ports = {"mlflow": free_port(), "hook": free_port()}
    actions = root / "actions.txt"
    env = (
        os.environ
        | QUIET_ENV
        | {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
            SECRET_ENV: SECRET,
            # Loopback over plain HTTP: MLflow refuses both by default (https, public addresses).
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "PROMOTION_HOOK_COMMAND": f'{sys.executable} -c "{ACTION}" {actions}',
        }
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    commands = {
        "mlflow": [
            str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", mf.sqlite_uri(root),
            "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
            "--port", str(ports["mlflow"]), "--workers", "1",
        ],
        "hook": [
            sys.executable, "-m", "deploy.promotion_hook", "serve", "--port", str(ports["hook"]),
        ],
    }  # fmt: skip
    processes = {}
    try:
        for name, command in commands.items():
            # The receiver reads params.yaml (the registered model's name) from the project.
            processes[name] = mf.start_server(command, env, root / f"{name}.log", cwd=REPO_ROOT)
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for name, process in processes.items():
            mf.wait_for_http(f"{urls[name]}/health", process, root / f"{name}.log")
        yield {"root": root, "urls": urls, "env": env, "actions": actions}
    finally:
        for process in processes.values():
            mf.stop_server(process)


def wait_for_lines(path: Path, count: int, timeout_s: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.5)
    return path.read_text().splitlines() if path.exists() else []


def post(url: str, headers: dict[str, str], body: bytes) -> int:
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_promotion_runs_the_action_once_and_forgeries_run_nothing(stack: dict) -> None:
    import mlflow
    from mlflow import MlflowClient

    env, urls, actions = stack["env"], stack["urls"], stack["actions"]
    created = subprocess.run(
        [sys.executable, "-m", "deploy.promotion_hook", "create", "--url", urls["hook"] + "/"],
        cwd=REPO_ROOT, env=env | {"MLFLOW_TRACKING_URI": urls["mlflow"]},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "model_version_alias.created" in created.stdout

    mlflow.set_tracking_uri(urls["mlflow"])
    client = MlflowClient()
    client.create_registered_model(MODEL)
    experiment = client.create_experiment("hook")
    run = client.create_run(experiment)
    for _ in range(2):
        client.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias(MODEL, "challenger", "1")  # authentic, not watched
    client.set_registered_model_alias(MODEL, "champion", "2")
    assert wait_for_lines(actions, 1) == ["2"]
    time.sleep(3)  # a second delivery (a retry acted on twice) would land by now
    assert actions.read_text().splitlines() == ["2"]

    # Forged (wrong secret), replayed (an accepted delivery sent again) and stale deliveries.
    event = {"name": MODEL, "alias": "champion", "version": "1"}
    payload = {"entity": "model_version_alias", "action": "created", "timestamp": "t"}
    body = json.dumps(payload | {"data": event}).encode()
    now = str(int(time.time()))

    def headers(secret: str, delivery_id: str, stamp: str = now) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            DELIVERY_ID_HEADER: delivery_id,
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: signature(secret, delivery_id, stamp, body),
        }

    hook = urls["hook"] + "/"
    assert post(hook, headers("not-the-secret-at-all", "forged-1"), body) == 401
    stale = str(int(time.time()) - 3600)
    assert post(hook, headers(SECRET, "stale-1", stale), body) == 401
    assert post(hook, headers(SECRET, "fresh-1"), body) == 202
    assert post(hook, headers(SECRET, "fresh-1"), body) == 409
    assert wait_for_lines(actions, 2) == ["2", "1"]
    time.sleep(2)
    assert actions.read_text().splitlines() == ["2", "1"]

    # Nothing printed the secret: the create command, the receiver's log, the server's log.
    server_logs = [(stack["root"] / f"{name}.log").read_text() for name in ("hook", "mlflow")]
    logs = [created.stdout, created.stderr, *server_logs]
    assert all(SECRET not in text for text in logs)
    hook_log = (stack["root"] / "hook.log").read_text()
    assert "refused (401): bad signature" in hook_log and "replay" in hook_log


def test_the_manifest_follows_the_champion_on_the_server(stack: dict) -> None:
    # After the promotion test: version 2 is champion on this server.
    from tests.test_k8s_manifest import validate

    result = subprocess.run(
        [sys.executable, "-m", "deploy.k8s_manifest"],
        cwd=REPO_ROOT, env=stack["env"] | {"MLFLOW_TRACKING_URI": stack["urls"]["mlflow"]},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    deployment, service = yaml.safe_load_all(result.stdout)
    typed = validate(deployment)
    assert typed.spec.template.spec.containers[0].image == "cifar10-serve:v2"
    assert typed.metadata.labels["mlflow.model-version"] == "2"
    validate(service)
