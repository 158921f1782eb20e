"""The evaluate stage: metrics on known answers, its outputs end to end, and bad input.

End-to-end tests run ``python -m stages.evaluate`` in a subprocess against a real MLflow run
(tests/mlflow_fixtures.py) in a temp SQLite store.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline.core.checksums import file_md5
from pipeline.evaluate.report import Section, render_html, render_markdown
from pipeline.evaluate.scoring import (
    evaluate_predictions,
    metrics_dict,
    mlflow_metrics,
    most_confident_mistakes,
    most_confused_pairs,
    per_class_frame,
    predictions_frame,
)
from pipeline.evaluate.tta import (
    flip_tta_accuracy,
    mirrored_probabilities,
    translate_tta_accuracy,
)
from tests import mlflow_fixtures as mf
from tests.conftest import QUIET_ENV

# Six images of three classes; predictions 0,1,1,1,2,0 make every figure easy to work out.
NAMES = ["cat", "dog", "frog"]
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.3, 0.6, 0.1],
        [0.1, 0.8, 0.1],
        [0.2, 0.5, 0.3],
        [0.1, 0.1, 0.8],
        [0.5, 0.1, 0.4],
    ],
    dtype=np.float32,
)
OUTPUT_FILES = [
    "metrics.json",
    "per_class.csv",
    "predictions.csv",
    "confusion_matrix.csv",
    "confusion_matrix.png",
    "training_curves.png",
    "misclassified.png",
    "registry.json",
    "report.md",
    "report.html",
]


def test_metrics_on_known_predictions() -> None:
    ev = evaluate_predictions(Y_TRUE, PROBS, NAMES)
    assert ev.accuracy == pytest.approx(4 / 6)
    expected_loss = -np.mean(np.log([0.7, 0.3, 0.8, 0.5, 0.8, 0.4]))
    assert ev.loss == pytest.approx(expected_loss, rel=1e-6)
    assert ev.per_class["precision"].tolist() == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert ev.per_class["recall"].tolist() == pytest.approx([1 / 2, 1.0, 1 / 2])
    assert ev.per_class.loc["dog", "f1"] == pytest.approx(0.8)
    assert ev.per_class["support"].tolist() == [2, 2, 2]
    assert ev.macro["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert ev.confusion.to_numpy().tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert list(ev.confusion.index) == NAMES == list(ev.confusion.columns)


@pytest.mark.keras
def test_loss_matches_keras_sparse_categorical_crossentropy() -> None:
    import keras

    probs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], *PROBS], dtype=np.float32)
    y = np.array([1, 1, *Y_TRUE])  # the first row has probability 0 for its class: clipped
    reference = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, probs))
    assert evaluate_predictions(y, probs, NAMES).loss == pytest.approx(float(reference), rel=1e-5)


def test_predictions_frame_has_one_row_of_class_names_per_sample() -> None:
    frame = predictions_frame(evaluate_predictions(Y_TRUE, PROBS, NAMES))
    assert list(frame.columns) == ["actual", "predicted", "confidence"]
    assert frame["actual"].tolist() == ["cat", "cat", "dog", "dog", "frog", "frog"]
    assert frame["predicted"].tolist() == ["cat", "dog", "dog", "dog", "frog", "cat"]
    assert frame["confidence"].tolist() == pytest.approx([0.7, 0.6, 0.8, 0.5, 0.8, 0.5])


def test_metrics_dict_is_a_few_headline_figures_accuracy_first() -> None:
    metrics = metrics_dict(evaluate_predictions(Y_TRUE, PROBS, NAMES))
    # dvc exp show keeps this order and gets one column per key: no per-class explosion.
    assert list(metrics) == ["accuracy", "loss", "macro_f1", "test_images"]
    json.dumps(metrics)  # plain JSON types only


class CornerReader:
    """A model that answers from the top-left pixel alone: its red value is the class it
    predicts, its green value the confidence, so a mirror image (top-right pixel) answers
    differently and what flip test-time augmentation averages can be worked out."""

    def predict(self, x: np.ndarray, batch_size: int, verbose: int) -> np.ndarray:
        corner = x[:, 0, 0, :].astype(np.float32)
        confidence = corner[:, 1] / 100
        probabilities = np.repeat(((1 - confidence) / 2)[:, None], 3, axis=1)
        probabilities[np.arange(len(x)), corner[:, 0].astype(int)] = confidence
        return probabilities


def test_flip_tta_averages_each_image_with_its_left_right_mirror() -> None:
    x = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    # (class, confidence) read at the left and at the right corner of each image's top row.
    for image, (left, right) in enumerate(
        [((0, 60), (1, 90)), ((2, 90), (1, 60)), ((1, 50), (1, 50))]
    ):
        x[image, 0, 0, :2], x[image, 0, 31, :2] = left, right
    # A top-bottom flip would read the bottom-left corner instead: class 0, sure of it.
    x[:, 31, 0, :2] = (0, 99)
    y_true = np.array([1, 1, 1])
    model = CornerReader()
    plain = model.predict(x, 0, 0)
    assert np.mean(plain.argmax(axis=1) == y_true) == pytest.approx(1 / 3)
    # Image 0: 0.6 for class 0 against 0.9 for class 1 in the mirror -> class 1; image 1 the
    # other way round -> class 2; image 2 agrees with itself.
    assert flip_tta_accuracy(model, x, y_true, plain) == pytest.approx(2 / 3)


def test_translate_tta_weighs_the_mirror_pair_and_the_shifted_pairs_half_and_half() -> None:
    x = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    # The image and its mirror read (0, 60%) at row 0; shifted one pixel either way (borders
    # reflected), the reader's corner is row 1: column 1, or column 30 in the mirror.
    for image, shifted in enumerate([(1, 90), (1, 50)]):
        x[image, 0, 0, :2] = x[image, 0, 31, :2] = (0, 60)
        x[image, 1, 1, :2] = x[image, 1, 30, :2] = shifted
    model = CornerReader()
    plain = model.predict(x, 0, 0)
    y_true = np.array([1, 0])
    assert flip_tta_accuracy(model, x, y_true, plain) == pytest.approx(1 / 2)
    # Image 0: class 0 at 0.5 x 0.6 + 0.5 x 0.05 = 0.325 < class 1 at 0.1 + 0.45: class 1.
    # Image 1: class 0 at 0.425 > class 1 at 0.35 (six equal weights would give class 1).
    assert translate_tta_accuracy(model, x, y_true, plain) == pytest.approx(1.0)
    # The mirror pass computed once and handed to both scorings gives the same figures.
    mirrored = mirrored_probabilities(model, x)
    assert flip_tta_accuracy(model, x, y_true, plain, mirrored) == pytest.approx(1 / 2)
    assert translate_tta_accuracy(model, x, y_true, plain, mirrored) == pytest.approx(1.0)


def test_flip_tta_accuracy_is_a_headline_figure_after_accuracy() -> None:
    evaluation = dataclasses.replace(
        evaluate_predictions(Y_TRUE, PROBS, NAMES), accuracy_flip_tta=0.8333333
    )
    assert list(metrics_dict(evaluation))[:2] == ["accuracy", "accuracy_flip_tta"]
    assert metrics_dict(evaluation)["accuracy_flip_tta"] == 0.8333
    assert mlflow_metrics(evaluation)["test/accuracy_flip_tta"] == 0.8333


def test_per_class_frame_has_one_row_per_class() -> None:
    frame = per_class_frame(evaluate_predictions(Y_TRUE, PROBS, NAMES))
    assert list(frame.columns) == ["class", "precision", "recall", "f1", "support"]
    assert frame.set_index("class").loc["frog"].to_dict() == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": 0.666667,
        "support": 2,
    }


def test_mlflow_metrics_are_the_headline_figures_in_4_significant_digits() -> None:
    evaluation = evaluate_predictions(Y_TRUE, PROBS, NAMES)
    metrics = mlflow_metrics(evaluation)
    # The per-class figures are per_class.csv, not 30 one-bar charts in the compare view.
    assert set(metrics) == {
        "test/accuracy", "test/loss", "test/macro_precision", "test/macro_recall", "test/macro_f1"
    }  # fmt: skip
    # MLflow's runs table shows stored values verbatim: 0.6556, not 0.65555555 (macro F1 here).
    assert evaluation.macro["f1"] == pytest.approx(59 / 90)
    assert metrics["test/macro_f1"] == 0.6556
    for key, value in metrics.items():
        digits = Decimal(repr(value)).normalize().as_tuple().digits
        assert len(digits) <= 4, (key, value)
    assert metrics["test/loss"] == pytest.approx(evaluation.loss, rel=5e-4)
    # metrics.json holds the same figures, not more digits of them.
    written = metrics_dict(evaluation)
    assert written["accuracy"] == metrics["test/accuracy"]
    assert written["loss"] == metrics["test/loss"]
    assert written["macro_f1"] == metrics["test/macro_f1"]


def test_most_confused_pairs_are_off_diagonal_by_count() -> None:
    confusion = pd.DataFrame([[5, 3, 0], [1, 9, 4], [3, 0, 7]], index=NAMES, columns=NAMES)
    confusion.index.name, confusion.columns.name = "actual", "predicted"
    pairs = most_confused_pairs(confusion, top=3)
    assert list(zip(pairs["actual"], pairs["predicted"], pairs["count"], strict=True)) == [
        ("dog", "frog", 4),
        ("cat", "dog", 3),
        ("frog", "cat", 3),
    ]
    assert pairs["rate"].tolist() == pytest.approx([4 / 14, 3 / 8, 3 / 10])


def test_most_confident_mistakes_come_first() -> None:
    ev = evaluate_predictions(Y_TRUE, PROBS, NAMES)
    assert most_confident_mistakes(ev).tolist() == [1, 5]  # 0.6 on dog, then 0.5 on cat


def test_html_is_self_contained_and_markdown_links_images(tmp_path: Path) -> None:
    image = tmp_path / "plot.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    table = pd.DataFrame({"v": [1]}, index=pd.Index(["a|b"], name="class"))
    sections = [Section("A <b>", ["x < y", table, image])]
    page = render_html(sections, "T")
    assert "data:image/png;base64," in page and "plot.png" not in page
    assert "A &lt;b&gt;" in page and "x &lt; y" in page
    markdown = render_markdown(sections, "T", tmp_path)
    assert "![plot](plot.png)" in markdown
    # One row of two cells: the "|" of the (archive-given) class name is escaped.
    (row,) = [line for line in markdown.splitlines() if line.startswith("| a")]
    assert [cell.strip() for cell in row.strip("|").split(" | ")] == ["a\\|b", "1"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    """A project folder after the train stage, with its run in a temp store; the run carries
    the data report's summary tag as the train stage logs it (pipeline/data/checks.py)."""
    import mlflow

    from pipeline.data.checks import SUMMARY_TAG, data_report, describe

    root, uri, run_info = mf.trained_project(tmp_path_factory, "project")
    x, y = mf.synthetic_images(50, 5)
    splits = {"train": (x, y), "val": (x[:10], y[:10]), "test": (x[:5], y[:5])}
    summary = describe(data_report(splits, mf.CLASSES))
    mlflow.MlflowClient(uri).set_tag(run_info["run_id"], SUMMARY_TAG, summary)
    return root, uri, run_info


@pytest.fixture(scope="module")
def evaluated(project: tuple[Path, str, dict]) -> tuple[Path, str, dict]:
    """The project after one successful evaluate stage; min_accuracy low enough to promote."""
    root, uri, _run_info = project
    mf.evaluate_promoting(root, uri)
    return project


@pytest.mark.e2e
def test_stage_writes_every_output(evaluated: tuple[Path, str, dict]) -> None:
    reports = evaluated[0] / "reports"
    for name in OUTPUT_FILES:
        assert (reports / name).stat().st_size > 0, name
    for name in ("confusion_matrix.png", "training_curves.png", "misclassified.png"):
        assert (reports / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((reports / "metrics.json").read_text())
    predictions = pd.read_csv(reports / "predictions.csv")
    assert len(predictions) == metrics["test_images"] == 200
    assert set(predictions["actual"]) == set(mf.CLASSES)
    assert metrics["accuracy"] == pytest.approx(
        (predictions["actual"] == predictions["predicted"]).mean()
    )
    confusion = pd.read_csv(reports / "confusion_matrix.csv", index_col=0)
    assert list(confusion.index) == list(confusion.columns) == mf.CLASSES
    assert confusion.to_numpy().sum() == 200


@pytest.mark.e2e
def test_report_holds_every_section(evaluated: tuple[Path, str, dict]) -> None:
    reports = evaluated[0] / "reports"
    markdown = (reports / "report.md").read_text()
    page = (reports / "report.html").read_text()
    for title in (
        "Confusion matrix",
        "Per-class metrics",
        "Most confused class pairs",
        "Training curves",
        "Misclassified test images",
        "Model Registry",
    ):
        assert f"## {title}" in markdown and f"<h2>{title}</h2>" in page
    assert "Decision: promoted" in markdown and "Decision: promoted" in page
    # The data report of the training run: 10 val and 5 test images are copies of train ones.
    (row,) = [line for line in markdown.splitlines() if "| data checks" in line]
    assert "0 duplicates in train; 10 val and 5 test images also in train" in row
    assert page.count('src="data:image/png;base64,') == 3
    assert 'src="http' not in page and "href=" not in page


@pytest.mark.e2e
def test_stage_logs_to_the_training_run_which_stays_finished(
    evaluated: tuple[Path, str, dict],
) -> None:
    root, uri, run_info = evaluated
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_info["run_id"])
    assert run.info.status == "FINISHED"
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert run.data.metrics["test/accuracy"] == pytest.approx(metrics["accuracy"])
    assert {"test/loss", "test/macro_f1"} <= run.data.metrics.keys()
    assert not [key for key in run.data.metrics if key.startswith(("test_f1/", "test_recall/"))]
    logged = {Path(f.path).name for f in client.list_artifacts(run_info["run_id"], "report")}
    assert logged == set(OUTPUT_FILES)


@pytest.mark.e2e
def test_stage_registers_the_model(evaluated: tuple[Path, str, dict]) -> None:
    root, uri, _run_info = evaluated
    registry = json.loads((root / "reports/registry.json").read_text())
    assert (registry["status"], registry["decision"], registry["version"]) == (
        "registered",
        "promoted",
        "1",
    )
    model = mlflow.MlflowClient(registry_uri=uri).get_registered_model("cifar10-cnn")
    # Promoted: champion, and no challenger left waiting.
    assert {alias: str(v) for alias, v in model.aliases.items()} == {"champion": "1"}
    assert "Input" in model.description and "airplane" in model.description
    version = mlflow.MlflowClient(registry_uri=uri).get_model_version("cifar10-cnn", "1")
    assert "tested on 200" in version.description
    # Dated: what held when the version was registered, not a claim about now.
    assert re.search(
        r"\*\*Decision\*\*: at registration on [0-9-]+ [0-9:]+ UTC, promoted:", version.description
    ), version.description


@pytest.mark.e2e
def test_rerun_overwrites_registry_json_without_a_second_version(
    evaluated: tuple[Path, str, dict],
) -> None:
    root, uri, _ = evaluated
    mf.evaluate_promoting(root, uri)
    registry = json.loads((root / "reports/registry.json").read_text())
    assert (registry["created"], registry["decision"]) == (False, "already_champion")
    assert (
        len(mlflow.MlflowClient(registry_uri=uri).search_model_versions("name = 'cifar10-cnn'"))
        == 1
    )


@pytest.mark.e2e
def test_flip_tta_is_scored_logged_and_reported_beside_plain_accuracy(
    evaluated: tuple[Path, str, dict], tmp_path: Path
) -> None:
    _, uri, run_info = evaluated
    root = _copy(evaluated, tmp_path)
    result = mf.run_evaluate(
        root, uri, "--set", "register.min_accuracy=0.2", "--set", "evaluate.flip_tta=true",
        "--set", "evaluate.translate_tta=true",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert list(metrics)[:2] == ["accuracy", "accuracy_flip_tta"]
    assert 0.0 <= metrics["accuracy_flip_tta"] <= 1.0
    run = mlflow.MlflowClient(uri).get_run(run_info["run_id"])
    assert run.data.metrics["test/accuracy_flip_tta"] == pytest.approx(
        metrics["accuracy_flip_tta"], abs=1e-6
    )
    markdown = (root / "reports/report.md").read_text()
    # A table row (the table pads its first column to its longest item).
    assert re.search(rf"\| accuracy, flip TTA +\| {metrics['accuracy_flip_tta']:.4f} ", markdown)
    translate = metrics["accuracy_translate_tta"]
    assert run.data.metrics["test/accuracy_translate_tta"] == pytest.approx(translate, abs=1e-6)
    assert re.search(rf"\| accuracy, mirror \+ translate TTA +\| {translate:.4f} ", markdown)


def _copy(project: tuple[Path, str, dict], tmp_path: Path) -> Path:
    """A copy of the project folder as the train stage left it (same MLflow store), to break."""
    root = tmp_path / "copy"
    shutil.copytree(project[0], root, ignore=shutil.ignore_patterns("store"))
    for output in OUTPUT_FILES:  # whatever the evaluate stage wrote in the original
        (root / "reports" / output).unlink(missing_ok=True)
    return root


def _fails_unregistered(root: Path, uri: str, name: str) -> subprocess.CompletedProcess:
    """Run the stage registering as ``name``; it must fail and ``name`` must not exist after."""
    result = mf.run_evaluate(root, uri, "--set", f"mlflow.registered_model_name={name}")
    assert result.returncode == 1, result.stderr
    assert not mlflow.MlflowClient(registry_uri=uri).search_registered_models(f"name = '{name}'")
    return result


@pytest.mark.e2e
def test_missing_model_says_run_train(project: tuple[Path, str, dict], tmp_path: Path) -> None:
    root = _copy(project, tmp_path)
    (root / "models/model.keras").unlink()
    (root / "reports/registry.json").write_text('{"status": "registered"}')  # a stale success
    result = _fails_unregistered(root, project[1], "no-model")
    assert "model.keras not found" in result.stderr and "dvc repro train" in result.stderr
    assert "Traceback" not in result.stderr
    registry = json.loads((root / "reports/registry.json").read_text())
    assert registry["status"] == "failed"


@pytest.mark.e2e
def test_class_mismatch_is_an_error_and_registers_nothing(
    project: tuple[Path, str, dict], tmp_path: Path
) -> None:
    root = _copy(project, tmp_path)
    (root / "data/prepared/classes.json").write_text(json.dumps(mf.CLASSES[::-1]))
    result = _fails_unregistered(root, project[1], "mismatch")
    assert "classes.json" in result.stderr and "run.json" in result.stderr


@pytest.mark.e2e
def test_model_without_ten_outputs_is_an_error(
    project: tuple[Path, str, dict], tmp_path: Path
) -> None:
    root = _copy(project, tmp_path)
    model, _ = mf.train_tiny_model(num_classes=5, epochs=1)
    model.save(root / "models/model.keras")
    record_model_md5(root)  # as if trained so: the shape is what is wrong
    result = _fails_unregistered(root, project[1], "five-outputs")
    assert "expected (None, 10)" in result.stderr


def record_model_md5(root: Path) -> None:
    """Make run.json name the model.keras now in ``root`` as its run's model."""
    path = root / "models/run.json"
    run_info = json.loads(path.read_text())
    path.write_text(json.dumps(run_info | {"model_md5": file_md5(root / "models/model.keras")}))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.e2e
def test_model_replaced_after_training_is_refused(
    project: tuple[Path, str, dict], tmp_path: Path
) -> None:
    # Registering run.json's model with the score of another file would tag the registered
    # version with an accuracy it never had.
    root = _copy(project, tmp_path)
    other, _ = mf.train_tiny_model(epochs=1, seed=7)
    other.save(root / "models/model.keras")
    result = _fails_unregistered(root, project[1], "replaced")
    (line,) = error_lines(result.stderr)
    assert f"models/model.keras is not the model MLflow run {project[2]['run_id']} logged" in line
    assert "dvc repro train" in line
    assert "Traceback" not in result.stderr
    assert not (root / "reports/metrics.json").exists(), "no score of the wrong model"


@pytest.mark.e2e
def test_failed_registration_keeps_metrics_and_says_failed(
    project: tuple[Path, str, dict], tmp_path: Path
) -> None:
    root = _copy(project, tmp_path)
    (root / "reports/registry.json").write_text('{"status": "registered"}')  # a stale success
    # The Model Registry answers every call with an error: a store that is not a database.
    # (A name it refuses, such as "bad/name", is now stopped with the params, before scoring.)
    broken = tmp_path / "registry.db"
    broken.write_bytes(b"not a database" * 100)
    name = "cifar10-never-registered"
    result = mf.run_stage_env(
        "evaluate", root, {"MLFLOW_TRACKING_URI": project[1], "MLFLOW_REGISTRY_URI":
                           f"sqlite:///{broken}"}, "--set", f"mlflow.registered_model_name={name}",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert not mlflow.MlflowClient(registry_uri=project[1]).search_registered_models(
        f"name = '{name}'"
    )
    assert "registering models:/m-" in result.stderr and name in result.stderr
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    registry = json.loads((root / "reports/registry.json").read_text())
    assert (registry["status"], registry["decision"]) == ("failed", "failed")
    assert "Decision: failed" in (root / "reports/report.md").read_text()


@pytest.mark.e2e
def test_garbage_model_file_is_named_for_what_it_is(
    project: tuple[Path, str, dict], tmp_path: Path
) -> None:
    root = _copy(project, tmp_path)
    (root / "models/model.keras").write_bytes(b"not a model at all\n" * 50)
    record_model_md5(root)  # even as the file its run recorded
    result = _fails_unregistered(root, project[1], "garbage")
    (line,) = error_lines(result.stderr)
    assert "models/model.keras: not a Keras model file (not a zip archive" in line
    assert "File not found" not in line and "Traceback" not in result.stderr


def evaluate_with_reports_mount(root: Path, uri: str, options: str) -> subprocess.CompletedProcess:
    """The evaluate stage with a tmpfs (``options``: "ro", "size=64k") on ``root/reports``.

    Real faults in a private user+mount namespace; history.csv, an input, is copied in first.
    """
    unshare = shutil.which("unshare")
    (root / "probe").mkdir()
    probe = unshare and subprocess.run(
        [unshare, "-rm", "sh", "-c", f"mount -t tmpfs tmpfs {root / 'probe'}"], capture_output=True
    )
    if not probe or probe.returncode != 0:
        pytest.skip("unprivileged user namespaces with tmpfs mounts are not available here")
    reports = root / "reports"
    history = root / "history.csv"
    shutil.copy(reports / "history.csv", history)
    size = options if options.startswith("size=") else "size=1m"
    setup = (
        f"mount -t tmpfs -o {size} tmpfs {reports} && cp {history} {reports}/ "
        + (f"&& mount -o remount,ro {reports} " if options == "ro" else "")
        + '|| exit 99; "$@"'
    )
    return subprocess.run(
        [unshare, "-rm", "sh", "-c", setup, "sh", sys.executable, "-m", "stages.evaluate"],
        cwd=root,
        env={**os.environ, **QUIET_ENV, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("options", "message"),
    [("ro", "Read-only file system"), ("size=64k", "No space left on device")],
)
def test_read_only_or_full_reports_folder_is_one_line(
    project: tuple[Path, str, dict], tmp_path: Path, options: str, message: str
) -> None:
    root = _copy(project, tmp_path)
    result = evaluate_with_reports_mount(root, project[1], options)
    assert result.returncode == 1, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    assert line.startswith("error: cannot write") and "reports" in line and message in line
    assert "Traceback" not in result.stderr
