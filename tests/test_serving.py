"""Serving the champion, and the MLflow UI server, against a project the evaluate stage ran on.

``mlflow models serve`` and ``mlflow server`` run as real subprocesses on free local ports; both
start once for the module, in parallel, and are stopped by their process group in a finally.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from deploy.serving_client import encode_images
from pipeline.tracking.serving_model import MAX_IMAGES_ENV, ServingConfigError
from tests import mlflow_fixtures as mf
from tests.conftest import QUIET_ENV, VENV_BIN, free_port

MODEL = "cifar10-cnn"
# The served model's batch cap, set low on the test server so a refused batch stays small.
MAX_IMAGES = 4
CHAMPION_URI = f"models:/{MODEL}@champion"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    """A project whose model the evaluate stage registered and made champion."""
    root, uri, run_info = mf.trained_project(tmp_path_factory, "serving")
    mf.evaluate_promoting(root, uri)
    assert json.loads((root / "reports/registry.json").read_text())["decision"] == "promoted"
    return root, uri, run_info


@pytest.fixture(scope="module")
def servers(champion: tuple[Path, str, dict]) -> Iterator[dict[str, str]]:
    """Base URLs of ``mlflow models serve`` (the champion) and ``mlflow server`` (the UI)."""
    root, uri, _ = champion
    # The CLIs exec uvicorn by name: the venv's bin must be on PATH even when it is not active.
    env = os.environ | QUIET_ENV | {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    env[MAX_IMAGES_ENV] = str(MAX_IMAGES)
    ports = {"serve": free_port(), "ui": free_port()}
    artifacts = str(root / "served-artifacts")
    commands = {
        "serve": ["models", "serve", "-m", CHAMPION_URI, "--env-manager", "local"],
        "ui": ["server", "--backend-store-uri", uri, "--artifacts-destination", artifacts],
    }
    processes = {}
    try:
        for name, args in commands.items():
            command = [
                str(VENV_BIN / "mlflow"),
                *args,
                "--host",
                "127.0.0.1",
                "--port",
                str(ports[name]),
                "--workers",
                "1",
            ]
            processes[name] = mf.start_server(
                command, env | {"MLFLOW_TRACKING_URI": uri}, root / f"{name}.log"
            )
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for name, process in processes.items():
            mf.wait_for_http(f"{urls[name]}/health", process, root / f"{name}.log", timeout_s=120)
        yield urls
    finally:
        for process in processes.values():
            mf.stop_server(process)


@pytest.fixture(scope="module")
def test_images(champion: tuple[Path, str, dict]) -> tuple[np.ndarray, pd.DataFrame]:
    """The first test images and the stage's own predictions for them."""
    root = champion[0]
    with np.load(root / "data/prepared/test.npz") as data:
        x = data["x"][:8]
    return x, pd.read_csv(root / "reports/predictions.csv").head(8)


def assert_match_stage(probabilities: np.ndarray, stage: pd.DataFrame) -> None:
    """Same argmax and same top probability as the evaluate stage computed."""
    assert probabilities.shape == (len(stage), 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    predicted = [mf.CLASSES[i] for i in probabilities.argmax(axis=1)]
    assert predicted == stage["predicted"].tolist()
    np.testing.assert_allclose(probabilities.max(axis=1), stage["confidence"], atol=1e-4)


def test_pyfunc_champion_predicts_probabilities_from_raw_images(
    champion: tuple[Path, str, dict], test_images: tuple[np.ndarray, pd.DataFrame]
) -> None:
    x, stage = test_images
    mlflow.set_tracking_uri(champion[1])
    model = mlflow.pyfunc.load_model(CHAMPION_URI)
    predictions = model.predict(x)
    # The class names travel with the model: its output columns, in the signature too.
    assert list(predictions.columns) == mf.CLASSES
    assert model.metadata.signature.outputs.input_names() == mf.CLASSES
    probabilities = predictions.to_numpy()
    assert probabilities.dtype == np.float32
    assert_match_stage(probabilities, stage)


def test_models_serve_answers_invocations(
    servers: dict[str, str], test_images: tuple[np.ndarray, pd.DataFrame]
) -> None:
    x, stage = test_images
    answer = mf.http_json(f"{servers['serve']}/invocations", {"inputs": x[:2].tolist()})
    # One record per image, keyed by class name.
    assert [list(row) for row in answer["predictions"]] == [mf.CLASSES] * 2
    rows = [[row[name] for name in mf.CLASSES] for row in answer["predictions"]]
    assert_match_stage(np.asarray(rows, dtype=np.float32), stage.head(2))


@pytest.mark.parametrize(
    ("scale", "shift", "detail"),
    [(1 / 255, 0, "not all whole numbers"), (1, 300, "from 300 to"), (1, -1, "from -1 to")],
)
def test_models_serve_refuses_pixels_that_are_not_uint8(
    servers: dict[str, str],
    test_images: tuple[np.ndarray, pd.DataFrame],
    scale: float,
    shift: int,
    detail: str,
) -> None:
    # Pixels scaled to 0..1 were once cast to 0 and answered as an all-black image with a 200.
    pixels = (test_images[0][:2].astype(np.float64) * scale + shift).tolist()
    with pytest.raises(urllib.error.HTTPError) as error:
        mf.http_json(f"{servers['serve']}/invocations", {"inputs": pixels})
    body = json.loads(error.value.read())
    assert error.value.code == 400
    assert "uint8 pixels 0-255 expected" in body["message"] and detail in body["message"]
    # The reason alone: MLflow's scoring server used to put the whole input before it.
    assert body["message"].startswith("uint8 pixels 0-255 expected")
    assert len(body["message"]) < 200, body["message"][:300]


def test_models_serve_refuses_a_batch_over_the_limit_naming_it(
    servers: dict[str, str], test_images: tuple[np.ndarray, pd.DataFrame]
) -> None:
    images = np.concatenate([test_images[0]] * 2)[: MAX_IMAGES + 1].tolist()
    with pytest.raises(urllib.error.HTTPError) as error:
        mf.http_json(f"{servers['serve']}/invocations", {"inputs": images})
    body = json.loads(error.value.read())
    assert error.value.code == 400
    assert f"more than the limit of {MAX_IMAGES}" in body["message"]
    assert MAX_IMAGES_ENV in body["message"] and len(body["message"]) < 200
    answer = mf.http_json(f"{servers['serve']}/invocations", {"inputs": images[:MAX_IMAGES]})
    assert len(answer["predictions"]) == MAX_IMAGES


def test_models_serve_answers_the_compact_input_as_the_pixels(
    servers: dict[str, str], test_images: tuple[np.ndarray, pd.DataFrame]
) -> None:
    x, stage = test_images
    url = f"{servers['serve']}/invocations"
    as_pixels = mf.http_json(url, {"inputs": x[:MAX_IMAGES].tolist()})
    as_png = mf.http_json(url, {"inputs": encode_images(x[:MAX_IMAGES])})
    # PNG is lossless: the same pixels reach the model, so the very same probabilities come back.
    assert as_png == as_pixels
    rows = [[row[name] for name in mf.CLASSES] for row in as_png["predictions"]]
    assert_match_stage(np.asarray(rows, dtype=np.float32), stage.head(MAX_IMAGES))


@pytest.mark.parametrize(
    ("make_inputs", "detail"),
    [
        (lambda x: ["not base64!"], "image 0 is not valid base64"),
        (lambda x: encode_images(np.repeat(np.repeat(x[:1], 2, 1), 2, 2)), "is 64x64 RGB"),
        (lambda x: [*encode_images(x[:1]), "iVBORw0KGgo="], "image 1 is not a readable PNG"),
        (lambda x: encode_images(np.concatenate([x, x])[: MAX_IMAGES + 1]), "limit of 4"),
    ],
)
def test_models_serve_refuses_bad_compact_input_with_400(
    servers: dict[str, str],
    test_images: tuple[np.ndarray, pd.DataFrame],
    make_inputs: object,
    detail: str,
) -> None:
    inputs = make_inputs(test_images[0])  # type: ignore[operator]
    with pytest.raises(urllib.error.HTTPError) as error:
        mf.http_json(f"{servers['serve']}/invocations", {"inputs": inputs})
    body = json.loads(error.value.read())
    assert error.value.code == 400
    assert detail in body["message"] and len(body["message"]) < 200, body["message"][:300]


@pytest.mark.parametrize("unusable", ["abc", "-1", "0"])
def test_an_unusable_image_cap_stops_the_model_from_loading(
    champion: tuple[Path, str, dict], monkeypatch: pytest.MonkeyPatch, unusable: str
) -> None:
    # The scoring server loads the model before it listens: no server runs with this value.
    mlflow.set_tracking_uri(champion[1])
    monkeypatch.setenv(MAX_IMAGES_ENV, unusable)
    # The logged copy of serving_model.py is its own module: its error class is not the one
    # imported here, so the class is matched by name.
    with pytest.raises(ValueError, match=f"{MAX_IMAGES_ENV}='{unusable}'") as refused:
        mlflow.pyfunc.load_model(CHAMPION_URI)
    assert type(refused.value).__name__ == ServingConfigError.__name__


def api(servers: dict[str, str], endpoint: str, payload: object = None, **query: str) -> dict:
    """Call the tracking server's REST API."""
    url = f"{servers['ui']}/api/2.0/mlflow/{endpoint}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    return mf.http_json(url, payload)


def test_ui_server_shows_run_metrics_report_and_aliases(
    servers: dict[str, str], champion: tuple[Path, str, dict]
) -> None:
    run_id = champion[2]["run_id"]
    experiment = api(servers, "experiments/get-by-name", experiment_name=mf.EXPERIMENT)
    found = api(
        servers, "runs/search", {"experiment_ids": [experiment["experiment"]["experiment_id"]]}
    )
    (run,) = [r for r in found["runs"] if r["info"]["run_id"] == run_id]
    assert run["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert {"test/accuracy", "test/loss", "test/macro_f1"} <= metrics.keys()

    listed = api(servers, "artifacts/list", run_id=run_id, path="report")
    names = {Path(f["path"]).name for f in listed["files"]}
    assert {"report.html", "confusion_matrix.png", "metrics.json", "registry.json"} <= names

    model = api(servers, "registered-models/get", name=MODEL)["registered_model"]
    aliases = {a["alias"]: a["version"] for a in model["aliases"]}
    assert aliases == {"champion": "1"}
    with urllib.request.urlopen(f"{servers['ui']}/", timeout=30) as page:
        assert b"MLflow" in page.read()
