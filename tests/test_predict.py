"""``python -m stages.predict`` on a real champion: a tiny CNN trained, logged, evaluated and
promoted in a temp MLflow store (tests/mlflow_fixtures.py), then real files through the stage."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from pipeline.predict.drift import REFERENCE_FILE, log_reference
from tests import mlflow_fixtures as mf
from tests.cifar_archive import CLASSES, encode_records

pytestmark = [pytest.mark.e2e, pytest.mark.keras]
# The fixture's training images are synthetic_images(300, 1); a held-out batch uses other seeds.
TRAIN_SEED = 1


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    """A project whose model is version 1, alias champion, with a drift reference in its run."""
    import keras

    root, uri, run_info = mf.trained_project(tmp_path_factory, "predict")
    model = keras.saving.load_model(root / "models" / "model.keras")
    train_x, _ = mf.synthetic_images(300, TRAIN_SEED)
    val_x, _ = mf.synthetic_images(500, 7)
    # What the train stage does after logging its model (pipeline/train/train.py).
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_info["run_id"]):
        log_reference(train_x, model, val_x, list(CLASSES))
    mf.evaluate_promoting(root, uri)
    return root, uri, run_info


def predict(root: Path, uri: str, *args: str | Path):
    """``python -m stages.predict ARGS`` as a subprocess in ``root``."""
    return mf.run_stage_env("predict", root, {"MLFLOW_TRACKING_URI": uri}, *map(str, args))


def predict_here(
    root: Path, uri: str, capsys: pytest.CaptureFixture[str], *args: str | Path
) -> tuple[int, str]:
    """The stage's own ``main`` in this process (TensorFlow loads once): (exit code, stderr)."""
    from stages.predict import main

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        code = 0
        try:
            main(["--params", str(root / "params.yaml"), *map(str, args)])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, capsys.readouterr().err


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_cifar_batch(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    path.write_bytes(encode_records(x, y))
    return path


def test_folder_with_bad_files_finishes_and_lists_each(
    champion: tuple[Path, str, dict], tmp_path: Path
) -> None:
    root, uri, run_info = champion
    x, _ = mf.synthetic_images(12, 21)
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    for index in range(10):
        Image.fromarray(x[index]).save(folder / f"img{index:02}.png")
    # Other sizes and modes: a labelled greyscale JPEG and an RGBA PNG of 64 x 48.
    Image.fromarray(x[10]).convert("L").resize((50, 40)).save(folder / "cat" / "grey.jpg")
    Image.fromarray(x[11]).convert("RGBA").resize((64, 48)).save(folder / "alpha.png")
    good = (folder / "img00.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "notes.txt").write_text("not an image\n")
    Image.fromarray(x[0]).save(folder / "anim.gif")
    (folder / ".hidden.png").write_bytes(good)  # hidden: not part of the batch

    result = predict(root, uri, folder, "--output", tmp_path / "out")

    assert result.returncode == 0, result.stderr
    rows = read_csv(tmp_path / "out" / "predictions.csv")
    predicted = {row["file"]: row for row in rows if not row["skipped"]}
    skipped = {row["file"]: row["skipped"] for row in rows if row["skipped"]}
    assert len(predicted) == 12 and "cat/grey.jpg" in predicted and "alpha.png" in predicted
    assert set(skipped) == {"truncated.png", "notes.txt", "anim.gif"}
    assert "only PNG and JPEG" in skipped["anim.gif"]
    assert "not an image" in skipped["notes.txt"]
    for name in skipped:
        assert f"skipped {name}: " in result.stderr
    row = predicted["img00.png"]
    top = row["top3"].split(";")
    assert len(top) == 3 and top[0].split(":")[0] == row["class"] and row["class"] in CLASSES
    assert float(top[0].split(":")[1]) == pytest.approx(float(row["probability"]), abs=1e-4)
    assert predicted["cat/grey.jpg"]["label"] == "cat" and row["label"] == ""
    assert "12 images predicted, 3 skipped" in result.stdout

    report = json.loads((tmp_path / "out" / "predict_report.json").read_text())
    assert report["model"]["version"] == "1"
    assert report["model"]["training_run_id"] == run_info["run_id"]
    client = mlflow.MlflowClient(uri)
    run = client.get_run(report["mlflow_run_id"])
    assert run.data.params["model.version"] == "1"
    assert run.data.params["input.digest"] == report["input"]["digest"]
    assert run.data.tags["model.training_run_id"] == run_info["run_id"]
    assert run.data.metrics["images"] == 12 and run.data.metrics["skipped"] == 3
    assert 0.1 < run.data.metrics["mean_confidence"] <= 1.0
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"predictions.csv", "class_distribution.png", "least_confident.png"} <= artifacts


def test_empty_folder_is_one_line_exit_2(champion: tuple[Path, str, dict], tmp_path: Path) -> None:
    root, uri, _ = champion
    (tmp_path / "empty").mkdir()
    result = predict(root, uri, tmp_path / "empty", "--output", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'empty'}: no files to predict (the folder is empty)"
    ]
    assert not (tmp_path / "out").exists()


def test_cifar_batch_file_reports_accuracy_and_no_drift(
    champion: tuple[Path, str, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, uri, _ = champion
    x, y = mf.synthetic_images(300, 55)  # held out: neither the training nor the reference seed
    batch = write_cifar_batch(tmp_path / "held_out.bin", x, y)

    code, err = predict_here(
        root, uri, capsys, batch, "--output", tmp_path / "out", "--fail-on-drift"
    )

    assert code == 0, err
    report = json.loads((tmp_path / "out" / "predict_report.json").read_text())
    assert report["drift"]["verdict"] == "no drift", report["drift"]
    assert report["images"] == 300
    # The same accuracy as the model gives these images directly.
    import keras

    model = keras.saving.load_model(root / "models" / "model.keras")
    expected = float(np.mean(model.predict(x, verbose=0).argmax(axis=1) == y))
    assert report["accuracy"] == pytest.approx(expected, abs=1e-6)
    assert (tmp_path / "out" / "drift.png").is_file()


@pytest.mark.parametrize("shift", ["darkened", "one_class"])
def test_shifted_batch_is_drift(
    champion: tuple[Path, str, dict],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    shift: str,
) -> None:
    root, uri, _ = champion
    x, y = mf.synthetic_images(600, 56)
    if shift == "darkened":
        x, y = (x[:300] // 3).astype(np.uint8), y[:300]
    else:
        keep = np.flatnonzero(y == 3)
        x, y = np.resize(x[keep], (300, *x.shape[1:])), np.full(300, 3, np.uint8)
    batch = write_cifar_batch(tmp_path / f"{shift}.bin", x, y)

    flagged, flagged_err = predict_here(root, uri, capsys, batch, "--output", tmp_path / "out")
    failed, failed_err = predict_here(
        root, uri, capsys, batch, "--output", tmp_path / "out2", "--fail-on-drift"
    )

    assert flagged == 0, flagged_err
    report = json.loads((tmp_path / "out" / "predict_report.json").read_text())
    assert report["drift"]["verdict"] == "drift", report["drift"]
    expected = "pixels_red" if shift == "darkened" else "predicted_class"
    assert expected in report["drift"]["over_threshold"]
    assert "Verdict: **drift**" in (tmp_path / "out" / "report.md").read_text()
    run = mlflow.MlflowClient(uri).get_run(report["mlflow_run_id"])
    assert run.data.metrics["drift/detected"] == 1.0
    assert failed == 3
    (line,) = failed_err.strip().splitlines()[-1:]
    assert line.startswith("error: drift: ") and expected in line
    assert (tmp_path / "out2" / "predictions.csv").is_file()  # the batch is still predicted


def test_model_by_version_and_unknown_version(
    champion: tuple[Path, str, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, uri, _ = champion
    x, y = mf.synthetic_images(20, 57)
    batch = write_cifar_batch(tmp_path / "small.bin", x, y)
    code, err = predict_here(root, uri, capsys, batch, "--model", "1", "--output", tmp_path / "out")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "predict_report.json").read_text())
    assert report["drift"]["verdict"] == "too few images"
    code, err = predict_here(root, uri, capsys, batch, "--model", "9", "--output", tmp_path / "o9")
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: --model 9: not found")
    assert not (tmp_path / "o9").exists()


def test_image_bytes_round_trip_exactly() -> None:
    # A 32x32 RGB PNG is read pixel for pixel: what makes folder and npz accuracy agree.
    from pipeline.predict.inputs import decode_image

    x, _ = mf.synthetic_images(1, 3)
    buffer = io.BytesIO()
    Image.fromarray(x[0]).save(buffer, format="PNG")
    assert np.array_equal(decode_image(buffer.getvalue()), x[0])
    assert REFERENCE_FILE == "drift_reference.json"
