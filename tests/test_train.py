"""The train stage: reproducibility, resume, backends, MLflow tracking (model: test_model.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest

from pipeline.core.checksums import file_md5
from pipeline.data.checks import data_report
from pipeline.tracking.serving_model import check_images
from pipeline.train.precision import cpu_bf16_flags
from tests.cifar_archive import CLASSES
from tests.conftest import (
    QUIET_ENV,
    REPO_ROOT,
    configured_param_count,
    free_port,
    run_stage,
    store_env,
    train_args,
    write_prepared,
)

# End to end: the train stage as a subprocess, in every situation it must survive.
pytestmark = pytest.mark.e2e


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "mlruns").mkdir()
    return tmp_path


def client_for(workdir: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=store_env(workdir)["MLFLOW_TRACKING_URI"])


def all_runs(workdir: Path) -> list[mlflow.entities.Run]:
    client = client_for(workdir)
    experiment = client.get_experiment_by_name("cifar10-cnn")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def weights_of(model_path: Path) -> list[np.ndarray]:
    return [np.asarray(w) for w in keras.saving.load_model(model_path).weights]


def start_training(args: list[str], workdir: Path, stderr: int) -> subprocess.Popen[str]:
    """``python -m stages.train ARGS`` in the background, against ``workdir``'s store."""
    return subprocess.Popen(
        [sys.executable, "-m", "stages.train", *args],
        cwd=REPO_ROOT, env={**os.environ, **QUIET_ENV, **store_env(workdir)},
        stdout=subprocess.DEVNULL, stderr=stderr, text=True,
    )  # fmt: skip


def first_checkpoint_state(
    process: subprocess.Popen[str], workdir: Path, timeout_s: float = 300
) -> dict | None:
    """The first checkpoint's state.json once it appears; None if the training ends first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        states = list((workdir / "checkpoints").glob("*/state.json"))
        if states:
            return json.loads(states[0].read_text())
        time.sleep(0.02)
    return None


# What `dvc exp run` puts in a stage's environment; system metrics sampled fast enough to show.
DVC_EXP_ENV = {
    "DVC_EXP_NAME": "quick-brown-fox",
    "DVC_EXP_BASELINE_REV": "0123456789abcdef0123456789abcdef01234567",
    "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.5",
    "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING": "1",
}


def test_train_stage_leaves_one_complete_mlflow_run(workdir: Path, prepared_dir: Path) -> None:
    # The data report preprocess leaves beside the reports (pipeline/data/checks.py).
    splits = {}
    for split in ("train", "val", "test"):
        with np.load(prepared_dir / f"{split}.npz") as arrays:
            splits[split] = (arrays["x"], arrays["y"])
    (workdir / "reports").mkdir()
    (workdir / "reports" / "data_checks.json").write_text(json.dumps(data_report(splits, CLASSES)))
    result = run_stage("train", *train_args(workdir, prepared_dir, "train.epochs=2"),
                       env=store_env(workdir) | DVC_EXP_ENV)  # fmt: skip
    assert result.returncode == 0, result.stderr

    runs = all_runs(workdir)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    # Named and tagged after the DVC experiment that ran it.
    assert run.info.run_name == "quick-brown-fox"
    assert run.data.tags["dvc.experiment"] == "quick-brown-fox"
    assert run.data.tags["dvc.baseline_rev"] == DVC_EXP_ENV["DVC_EXP_BASELINE_REV"]
    experiment = client_for(workdir).get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert run.data.params["train.epochs"] == "2"
    assert run.data.params["model.arch"] == "reference"
    assert run.data.params["model.reference.dense_units"] == "512"
    # Only the architecture trained: no other one's params, nor a whole section as one value.
    assert not any(
        key.startswith(("model.fast_resnet", "model.reference=")) for key in run.data.params
    )
    assert "model.reference" not in run.data.params
    assert run.data.params["preprocess.val_size"] == "5000"
    client = client_for(workdir)
    for metric in ("loss/train", "loss/val", "accuracy/train", "accuracy/val",
                   "speed/epoch_seconds", "speed/images_per_s"):  # fmt: skip
        steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
        assert sorted(steps) == [1, 2], metric
    # The kept epoch's accuracy and loss are the curves' own points, not repeated as final/*.
    finals = {key for key in run.data.metrics if key.startswith("final/")}
    assert finals == {"final/epoch", "final/train_seconds", "final/images_per_s"}
    # Rounded to 4 significant digits: MLflow's runs table shows what is stored.
    for key in ("accuracy/val", "loss/val", "final/train_seconds"):
        value = run.data.metrics[key]
        assert value == float(f"{value:.4g}"), (key, value)
    assert any(key.startswith("system/cpu") for key in run.data.metrics), run.data.metrics.keys()

    # Train and val as MLflow datasets: digest = md5 of the npz, source = data.url, row counts.
    inputs = {i.dataset.name: i for i in client.get_run(run.info.run_id).inputs.dataset_inputs}
    assert set(inputs) == {"cifar10-train", "cifar10-val"}
    train_input = inputs["cifar10-train"]
    assert train_input.dataset.digest == file_md5(prepared_dir / "train.npz")
    assert json.loads(train_input.dataset.source)["url"].startswith("https://")
    assert json.loads(train_input.dataset.profile)["features_shape"] == [200, 32, 32, 3]
    tags = {tag.key: tag.value for tag in train_input.tags}
    assert tags == {"mlflow.data.context": "training", "rows": "200"}
    tags = run.data.tags
    for tag in ("git.commit", "git.dirty", "data.raw_md5", "data.prepared_md5", "python.version",
                "keras.version", "keras.backend", "backend.version", "device",
                "train.mixed_precision_used"):  # fmt: skip
        assert tags.get(tag), tag
    assert tags["keras.backend"] == "tensorflow"
    # mixed_precision: auto trains in bfloat16 exactly on CPUs with native bf16 math.
    policy = "mixed_bfloat16" if cpu_bf16_flags() else "float32"
    assert tags["device"] == "cpu" and tags["train.precision_policy"] == policy
    assert tags["train.mixed_precision_used"] == str(policy != "float32").lower()

    info = json.loads((workdir / "models" / "run.json").read_text())
    assert info["run_id"] == run.info.run_id
    logged = mlflow.MlflowClient(store_env(workdir)["MLFLOW_TRACKING_URI"]).get_logged_model(
        info["model_uri"].removeprefix("models:/")
    )
    assert logged.source_run_id == run.info.run_id
    # Named after the experiment and registered model, described, with an input example that
    # shows the format (the signature declares no input: MLflow would cast floats to it).
    assert logged.name == "cifar10-cnn"
    assert "N x 32 x 32 x 3 uint8" in logged.tags["mlflow.note.content"]
    example = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{logged.artifact_location}/serving_input_example.json"
    )
    # One image in the compact form, a request that can be sent as it is, in a few lines.
    assert Path(example).stat().st_size < 1000
    (image,) = json.loads(Path(example).read_text())["inputs"]
    assert check_images(np.asarray([image]), (32, 32, 3)).shape == (1, 32, 32, 3)
    # The logged model's metrics name the data they were measured on.
    linked = {(m.key, m.dataset_name) for m in logged.metrics}
    assert {("final/epoch", "cifar10-val"), ("final/train_seconds", "cifar10-train")} <= linked
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "model_summary.txt" in artifacts
    # What predict's drift check compares with, and the data report, both with the run.
    assert {"drift_reference.json", "data_checks.json"} <= set(artifacts)
    reference = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/drift_reference.json")
    assert reference["images"] == 50 and sum(reference["classes"]) == pytest.approx(1.0)
    assert run.data.metrics["data/duplicates_train"] == 0
    assert run.data.tags["data.checks"].startswith("0 duplicates in train;")

    model = keras.saving.load_model(workdir / "models" / "model.keras")
    assert model.count_params() == configured_param_count()
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    probs = np.asarray(model.predict(images, verbose=0))
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)

    history = (workdir / "reports" / "history.csv").read_text().splitlines()
    assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy,seconds,images_per_s"
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2"]
    summary = (workdir / "reports" / "model_summary.txt").read_text()
    assert "Param #" in summary and f"Trainable params: {configured_param_count():,}" in summary
    metrics = json.loads((workdir / "reports" / "train_metrics.json").read_text())
    assert metrics["epoch"] == 2
    assert metrics["mlflow_run_id"] == run.info.run_id
    assert not any((workdir / "checkpoints").iterdir()), "a finished run removes its checkpoint"


def test_same_seed_same_weights_other_seed_other_weights(
    tmp_path: Path, prepared_dir: Path
) -> None:
    outcomes = {}
    run_names: list[str] = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        workdir = tmp_path / name
        result = run_stage(
            "train",
            *train_args(workdir, prepared_dir, "train.epochs=1", f"train.seed={seed}"),
            env=store_env(workdir),
        )
        assert result.returncode == 0, result.stderr
        metrics = json.loads((workdir / "reports" / "train_metrics.json").read_text())
        outcomes[name] = (weights_of(workdir / "models" / "model.keras"), metrics)
        run_names.append(all_runs(workdir)[0].info.run_name)

    (weights_a, metrics_a), (weights_b, metrics_b), (weights_c, metrics_c) = outcomes.values()
    assert all(np.array_equal(a, b) for a, b in zip(weights_a, weights_b, strict=True))
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert metrics_a[key] == metrics_b[key], key
    assert not all(np.array_equal(a, c) for a, c in zip(weights_a, weights_c, strict=True))
    assert metrics_a["train_loss"] != metrics_c["train_loss"]
    # Seeding must not leak into MLflow's random run names.
    assert run_names[0] != run_names[1]


def test_killed_training_resumes_after_last_finished_epoch(tmp_path: Path) -> None:
    # Enough images that one epoch takes about a second: the kill lands inside epoch 2.
    prepared = write_prepared(tmp_path / "prepared", {"train": 1000, "val": 50, "test": 10})
    workdir = tmp_path / "work"
    args = train_args(workdir, prepared, "train.epochs=3")
    first = start_training(args, workdir, stderr=subprocess.DEVNULL)
    try:
        state = first_checkpoint_state(first, workdir)
        assert state is not None, "no checkpoint appeared before the first run ended"
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait(timeout=60)
    assert state["epochs_done"] == 1
    assert not (workdir / "models" / "model.keras").exists()

    second = run_stage("train", *args, env=store_env(workdir))
    assert second.returncode == 0, second.stderr
    assert "resuming after epoch 1 of 3" in second.stderr

    runs = all_runs(workdir)
    assert len(runs) == 1, "the resumed training continues the same MLflow run"
    assert runs[0].info.run_id == state["run_id"]
    assert runs[0].info.status == "FINISHED"
    steps = [m.step for m in client_for(workdir).get_metric_history(state["run_id"], "loss/val")]
    assert sorted(steps) == [1, 2, 3]
    rows = (workdir / "reports" / "history.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1", "2", "3"]
    assert not any((workdir / "checkpoints").iterdir())


def test_jax_backend_trains_one_epoch(workdir: Path, prepared_dir: Path) -> None:
    result = run_stage(
        "train",
        *train_args(workdir, prepared_dir, "train.epochs=1"),
        env={**store_env(workdir), "KERAS_BACKEND": "jax"},
    )
    assert result.returncode == 0, result.stderr
    (run,) = all_runs(workdir)
    assert run.data.tags["keras.backend"] == "jax"
    assert run.data.tags["backend.version"].startswith("0.")
    model = keras.saving.load_model(workdir / "models" / "model.keras")
    assert model.count_params() == configured_param_count()


def test_sweep_trial_is_named_for_its_sweep_number_and_values(
    workdir: Path, prepared_dir: Path
) -> None:
    client = client_for(workdir)
    experiment_id = client.create_experiment("cifar10-cnn", str(workdir / "mlruns"))
    earlier = client.create_run(experiment_id, tags={"sweep": "lr-grid"})  # trial 1
    client.set_terminated(earlier.info.run_id)
    sets = ("train.epochs=1", "mlflow.sweep=lr-grid", "train.learning_rate=0.003")
    result = run_stage("train", *train_args(workdir, prepared_dir, *sets),
                       env=store_env(workdir) | DVC_EXP_ENV)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run,) = [run for run in all_runs(workdir) if run.info.run_id != earlier.info.run_id]
    # Not DVC's random name: the sweep, the trial's number, the values that differ.
    sweep, values = run.info.run_name.split(": ", 1)
    assert sweep == "lr-grid 2"
    assert "lr=0.003" in values.split(", ")
    # The DVC experiment stays findable.
    assert run.data.tags["dvc.experiment"] == "quick-brown-fox"


def test_uses_the_run_named_by_mlflow_run_id(workdir: Path, prepared_dir: Path) -> None:
    client = client_for(workdir)
    experiment_id = client.create_experiment("cifar10-cnn")
    outer = client.create_run(experiment_id)
    result = run_stage(
        "train",
        *train_args(workdir, prepared_dir, "train.epochs=1"),
        env={**store_env(workdir), "MLFLOW_RUN_ID": outer.info.run_id},
    )
    assert result.returncode == 0, result.stderr
    runs = all_runs(workdir)
    assert [run.info.run_id for run in runs] == [outer.info.run_id]
    assert "accuracy/val" in runs[0].data.metrics


def test_nan_loss_stops_with_clear_error_and_no_model(workdir: Path, prepared_dir: Path) -> None:
    result = run_stage(
        "train",
        *train_args(
            workdir,
            prepared_dir,
            "train.epochs=3",
            "train.optimizer=sgd",
            "train.learning_rate=10000",
        ),
        env=store_env(workdir),
    )
    assert result.returncode == 1
    assert "error: training loss became nan" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (workdir / "models" / "model.keras").exists()
    (run,) = all_runs(workdir)
    assert run.info.status == "FAILED", "the MLflow run must not be left RUNNING"


def test_unreachable_tracking_server_fails_before_training(
    workdir: Path, prepared_dir: Path
) -> None:
    port = free_port()
    result = run_stage(
        "train",
        *train_args(workdir, prepared_dir, "train.epochs=1"),
        env={"MLFLOW_TRACKING_URI": f"http://alice:s3cret@127.0.0.1:{port}"},
    )
    assert result.returncode == 1
    # The URI is named, its password never.
    assert (
        f"MLflow tracking server http://alice:***@127.0.0.1:{port} is unreachable" in result.stderr
    )
    assert "s3cret" not in result.stdout + result.stderr
    assert "epoch 1/1" not in (result.stdout + result.stderr).lower()
    assert not (workdir / "checkpoints").exists()


def test_missing_prepared_data_says_what_to_run(workdir: Path) -> None:
    result = run_stage("train", *train_args(workdir, workdir / "nothing"), env=store_env(workdir))
    assert result.returncode == 1
    assert "run `dvc repro preprocess` first" in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "train.optimizer=adamw",
            "train.optimizer: must be 'rmsprop', 'adam' or 'sgd' (got 'adamw')",
        ),
        ("train.epochs=0", "train.epochs: must be between 1 and 10000 (got 0)"),
        (
            "model.reference.dropout_dense=1.5",
            "model.reference.dropout_dense: must be >= 0.0 and < 1.0 (got 1.5)",
        ),
        ("train.mixed_precision=maybe", "train.mixed_precision: must be 'auto', 'on' or 'off'"),
    ],
)
def test_bad_params_exit_2_with_one_line(workdir: Path, override: str, message: str) -> None:
    result = run_stage("train", *train_args(workdir, workdir, override), env=store_env(workdir))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: params.yaml: {message}")


def test_sigterm_closes_the_mlflow_run(tmp_path: Path) -> None:
    prepared = write_prepared(tmp_path / "prepared", {"train": 1000, "val": 50, "test": 10})
    workdir = tmp_path / "work"
    args = train_args(workdir, prepared, "train.epochs=5")
    process = start_training(args, workdir, stderr=subprocess.PIPE)
    try:
        # SIGTERM must land mid-training, once there is a checkpoint to leave behind.
        assert first_checkpoint_state(process, workdir) is not None, "no checkpoint appeared"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    (run,) = all_runs(workdir)
    assert run.info.status in {"KILLED", "FAILED"}, "a terminated training must not stay RUNNING"


def test_parallel_first_use_of_the_store_is_safe(tmp_path: Path) -> None:
    code = (
        "from pipeline.tracking.runs import prepare_tracking, use_experiment\n"
        "prepare_tracking(); print(use_experiment('cifar10-cnn'))\n"
    )
    env = {**os.environ, **QUIET_ENV, **store_env(tmp_path)}
    processes = [
        subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    assert len({stdout.strip() for stdout, _ in outputs}) == 1, "one experiment, one id"
    assert client_for(tmp_path).get_experiment_by_name("cifar10-cnn") is not None
