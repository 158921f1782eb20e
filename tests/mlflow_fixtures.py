"""Build what the train stage leaves behind, for real, in a temp folder and a temp MLflow store.

A tiny CNN (pipeline.train.model.build_model) is fitted for a few epochs on synthetic images whose
class sets their mean colour, so it reaches a real, imperfect accuracy in about two seconds.
It is logged to a real MLflow run with the train stage's own
pipeline.tracking.serving.log_served_model
and lineage tags, and the project folder gets the files of the train stage's contract.
Also here: subprocess helpers to run a stage or a server and stop it by its process group.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.core.checksums import file_md5
from tests.cifar_archive import CLASSES
from tests.conftest import REPO_ROOT, repo_params, run_stage

EXPERIMENT = "cifar10-cnn"
LINEAGE = {
    "git.commit": "0123abc",
    "git.dirty": "false",
    "data.raw_md5": "r" * 32,
    "data.prepared_md5": "p" * 32,
}
# Noise this strong against ten well-spread mean colours leaves a few classes confused.
NOISE_SIGMA = 80.0


def sqlite_uri(folder: Path) -> str:
    """A tracking URI for a fresh SQLite store in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n,32,32,3) images whose mean colour depends on the class, and uint8 labels."""
    colours = np.random.default_rng(1234).integers(30, 226, size=(len(CLASSES), 3))
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(CLASSES)
    rng.shuffle(y)
    x = colours[y][:, None, None, :] + rng.normal(0.0, NOISE_SIGMA, size=(n, 32, 32, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.uint8)


def train_tiny_model(num_classes: int = 10, epochs: int = 4, seed: int = 0) -> tuple[Any, list]:
    """A compiled, briefly fitted small CNN and its history rows (the history.csv columns)."""
    import keras

    from pipeline.train.model import build_model

    keras.utils.set_random_seed(seed)
    small = repo_params(
        "model.reference.conv_filters=[8]",
        "model.reference.dense_units=16",
        "model.reference.dropout_conv=0.0",
        "model.reference.dropout_dense=0.0",
        "model.reference.augment=false",
    )
    model = build_model(small.model)
    if num_classes != model.output_shape[-1]:
        # A model that does not fit the 10-class contract, for the bad-input tests.
        head = keras.layers.Dense(num_classes, activation="softmax", name="wrong_probs")
        model = keras.Model(model.input, head(model.layers[-2].output))
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    x, y = synthetic_images(300, seed + 1)
    vx, vy = synthetic_images(100, seed + 2)
    y, vy = y % num_classes, vy % num_classes
    fit = model.fit(x, y, epochs=epochs, batch_size=32, validation_data=(vx, vy), verbose=0)
    history = [
        {
            "epoch": epoch + 1,
            **{key: values[epoch] for key, values in fit.history.items()},
            "seconds": 0.5,
            "images_per_s": 600.0,
        }
        for epoch in range(epochs)
    ]
    return model, history


def log_training_run(tracking_uri: str, model: Any, tags: dict[str, str] | None = None) -> dict:
    """Log ``model`` to a new FINISHED run as the train stage does; return its run.json."""
    import mlflow

    from pipeline.tracking.serving import log_served_model

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        store = Path(tracking_uri.removeprefix("sqlite:///")).parent
        experiment_id = client.create_experiment(EXPERIMENT, (store / "artifacts").as_uri())
    else:
        experiment_id = experiment.experiment_id
    with mlflow.start_run(
        experiment_id=experiment_id, tags=LINEAGE if tags is None else tags
    ) as run:
        mlflow.log_params({"train.epochs": 4, "train.batch_size": 32})
        model_uri = log_served_model(model, list(CLASSES), EXPERIMENT)
    return {
        "run_id": run.info.run_id,
        "experiment_id": experiment_id,
        "model_uri": model_uri,
        "tracking_uri": tracking_uri,
        "classes": list(CLASSES),
    }


def make_project(root: Path, tracking_uri: str, num_classes: int = 10, n_test: int = 200) -> dict:
    """A folder holding the train stage's outputs and params.yaml; returns its run.json."""
    import pandas as pd

    model, history = train_tiny_model(num_classes)
    run_info = log_training_run(tracking_uri, model)
    prepared, models, reports = root / "data/prepared", root / "models", root / "reports"
    for folder in (prepared, models, reports):
        folder.mkdir(parents=True, exist_ok=True)
    x, y = synthetic_images(n_test, seed=99)
    np.savez(prepared / "test.npz", x=x, y=y)
    (prepared / "classes.json").write_text(json.dumps(CLASSES))
    model.save(models / "model.keras")
    # As the train stage records it: evaluate scores only the file its run logged.
    run_info["model_md5"] = file_md5(models / "model.keras")
    (models / "run.json").write_text(json.dumps(run_info, indent=2))
    pd.DataFrame(history).to_csv(reports / "history.csv", index=False)
    shutil.copy(REPO_ROOT / "params.yaml", root / "params.yaml")
    return run_info


def trained_project(
    tmp_path_factory: pytest.TempPathFactory, basename: str
) -> tuple[Path, str, dict]:
    """(root, tracking URI, run.json): a fresh project after the train stage, its store inside."""
    root = tmp_path_factory.mktemp(basename)
    uri = sqlite_uri(root / "store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        return root, uri, make_project(root, uri)


def run_evaluate(root: Path, tracking_uri: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m stages.evaluate ARGS`` in ``root`` against ``tracking_uri``."""
    return run_stage(
        "evaluate", *args, env={"MLFLOW_TRACKING_URI": tracking_uri}, cwd=root, timeout=300
    )


def run_stage_env(
    stage: str, root: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess:
    """``python -m stages.STAGE ARGS`` in ``root`` with ``env`` added to the environment."""
    return run_stage(stage, *args, env=env, cwd=root, timeout=300)


def evaluate_promoting(root: Path, tracking_uri: str) -> None:
    """Run the evaluate stage with min_accuracy low enough to promote; it must succeed."""
    result = run_evaluate(root, tracking_uri, "--set", "register.min_accuracy=0.2")
    assert result.returncode == 0, result.stderr


def start_server(
    args: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen:
    """Start ``args`` in its own process group, output to ``log_path``; stop it with stop_server.

    MLflow's job runner stays off, as deploy/server.py starts it: its consumers would cost CPU
    and ~2 GB of memory per server, and no test submits a job.
    """
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            args,
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **env},
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_server(process: subprocess.Popen, grace_s: float = 20) -> None:
    """Stop the server and every worker it forked: its whole process group, by its PID.

    Workers (uvicorn, MLflow's job consumers) can outlive the parent by seconds, so wait for
    the group to be empty, and kill what is left after ``grace_s``.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _group_alive(process) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _group_alive(process: subprocess.Popen) -> bool:
    process.poll()  # reap the leader, or the group never looks empty
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for_http(
    url: str, process: subprocess.Popen, log_path: Path, timeout_s: float = 120
) -> None:
    """Poll ``url`` until it answers 200; fail at once if the server died, else after a timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer in {timeout_s} s:\n{log_path.read_text()[-3000:]}")


def http_json(url: str, payload: Any = None, timeout_s: float = 30) -> Any:
    """GET (or POST ``payload`` as JSON) and decode the JSON answer."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def http_call(
    url: str,
    data: bytes | None = None,
    user: str | None = None,
    password: str = "",
    timeout: float = 120,
) -> tuple[int, Any]:
    """(HTTP status, decoded JSON or raw bytes) of GET ``url`` (POST when ``data``), with basic
    auth when ``user`` is given: what a client of a tracking server sees, errors included."""
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(url, data=data, headers=headers)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body
