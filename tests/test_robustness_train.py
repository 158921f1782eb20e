"""The train stage against stale state, rivals and a hostile file system (issue 14).

Resume must notice code changes and never be blocked by a stale checkpoint; two trainings of the
same params must not share a checkpoint; read-only and full folders must give one line. The file
system faults are real: a read-only or tiny tmpfs mounted in a private user+mount namespace.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from pipeline.train.checkpoints import TrainingCheckpoint
from tests.conftest import QUIET_ENV, REPO_ROOT, run_stage, store_env, train_args, write_prepared
from tests.test_train import all_runs, client_for, first_checkpoint_state, start_training

# End to end: the train stage killed, starved of disk and fed broken stores.
pytestmark = pytest.mark.e2e

# A small CNN: the file system and state handling are under test here, not the reference model.
SMALL = ("model.reference.conv_filters=[8]", "model.reference.dense_units=16", "train.epochs=2")


def args_for(workdir: Path, prepared: Path) -> list[str]:
    return train_args(workdir, prepared, *SMALL)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def pipeline_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "pipeline"]


def warning_lines(stderr: str, text: str) -> list[str]:
    return [line for line in stderr.splitlines() if text in line]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir whose training was killed (-9) once its first checkpoint was written."""
    workdir = tmp_path_factory.mktemp("interrupted")
    prepared = write_prepared(workdir / "prepared", {"train": 200, "val": 50, "test": 10})
    process = start_training(args_for(workdir, prepared), workdir, stderr=subprocess.DEVNULL)
    try:
        state = first_checkpoint_state(process, workdir)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)
    assert state is not None, "no checkpoint appeared before the training ended"
    assert not (workdir / "models" / "model.keras").exists(), "killed too late"
    return workdir


def copy_of(interrupted: Path, tmp_path: Path) -> tuple[Path, dict]:
    """A private copy of the interrupted workdir (store, checkpoint, data) and its state.json."""
    workdir = tmp_path / "work"
    shutil.copytree(interrupted, workdir)
    (state_path,) = (workdir / "checkpoints").glob("*/state.json")
    return workdir, json.loads(state_path.read_text())


# --- 1. the checkpoint covers the code -------------------------------------------------------


def test_train_code_is_the_py_deps_of_the_train_stage(tmp_path: Path) -> None:
    from pipeline.train.code_digest import changed_files, stage_code_md5s

    code = stage_code_md5s(REPO_ROOT, "train")
    for name in ("pipeline/train/model.py", "pipeline/train/fit.py", "stages/train.py"):
        assert name in code, name
    assert "pipeline/evaluate/report.py" not in code, (
        "evaluate's code must not invalidate a training"
    )

    project = tmp_path / "project"
    for part in ("pipeline", "stages"):
        shutil.copytree(REPO_ROOT / part, project / part)
    shutil.copy(REPO_ROOT / "dvc.yaml", project)
    assert stage_code_md5s(project, "train") == code, "relative paths and contents only"
    with open(project / "pipeline" / "train" / "model.py", "a") as handle:
        handle.write("# changed\n")
    assert changed_files(code, stage_code_md5s(project, "train")) == ["pipeline/train/model.py"]

    (project / "dvc.yaml").unlink()  # an image without dvc.yaml: every module counts
    fallback = stage_code_md5s(project, "train")
    assert "pipeline/evaluate/report.py" in fallback and "stages/evaluate.py" in fallback


def test_code_change_discards_the_checkpoint_and_says_why(
    interrupted: Path, tmp_path: Path
) -> None:
    workdir, state = copy_of(interrupted, tmp_path)
    # The same project with pipeline/train/model.py edited since the checkpoint.
    project = tmp_path / "project"
    for part in ("pipeline", "stages"):
        shutil.copytree(REPO_ROOT / part, project / part)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO_ROOT / name, project)
    with open(project / "pipeline" / "train" / "model.py", "a") as handle:
        handle.write("# a changed architecture\n")

    result = run_stage(
        "train", *args_for(workdir, workdir / "prepared"), env=store_env(workdir), cwd=project
    )
    assert result.returncode == 0, result.stderr
    (line,) = warning_lines(result.stderr, "discarding checkpoint")
    assert "training code changed since it was made (pipeline/train/model.py)" in line
    assert "starting afresh" in line
    assert "resuming" not in result.stderr
    runs = {run.info.run_id: run for run in all_runs(workdir)}
    assert len(runs) == 2, "a new MLflow run, not the checkpoint's"
    (new,) = [run for run_id, run in runs.items() if run_id != state["run_id"]]
    assert new.info.status == "FINISHED"
    # The killed training's run will never be resumed: it no longer shows as RUNNING.
    assert runs[state["run_id"]].info.status == "KILLED"
    (line,) = warning_lines(result.stderr, "marked KILLED")
    steps = [m.step for m in client_for(workdir).get_metric_history(new.info.run_id, "loss/train")]
    assert sorted(steps) == [1, 2], "every epoch trained again"


def test_checkpoint_of_other_code_is_discarded(tmp_path: Path, caplog) -> None:
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    old = TrainingCheckpoint(tmp_path / "key", {"pipeline/train/model.py": "a" * 32})
    old.save(model, 1, "run-1", [{"epoch": 1, "val_accuracy": 0.5}], 0.5, is_best=True)
    assert old.load() is not None, "the same code resumes"

    new = TrainingCheckpoint(tmp_path / "key", {"pipeline/train/model.py": "b" * 32})
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert new.load() is None
    assert "training code changed since it was made (pipeline/train/model.py)" in caplog.text
    assert not (tmp_path / "key").exists()


# --- 7. a stale checkpoint never blocks training ---------------------------------------------


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("state_garbage", "Expecting value"),
        ("state_without_run", "state.json lacks 'run_id'"),
        ("model_truncated", "File is not a zip file"),
        ("model_missing", "No such file"),
        ("best_corrupt", "fails its CRC"),
    ],
)
def test_corrupt_checkpoint_is_discarded_with_a_warning(
    tmp_path: Path, caplog, damage: str, reason: str
) -> None:
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(64)])
    model.compile(optimizer="adam", loss="mse")
    checkpoint = TrainingCheckpoint(tmp_path / "key", {"a.py": "0" * 32})
    checkpoint.save(model, 1, "run-1", [{"epoch": 1, "val_accuracy": 0.5}], 0.5, is_best=True)
    state_path = checkpoint.state_path
    state = json.loads(state_path.read_text())
    model_path = checkpoint.folder / state["model"]
    best_path = checkpoint.folder / state["best"]
    if damage == "state_garbage":
        state_path.write_bytes(b"\x00garbage")
    elif damage == "state_without_run":
        del state["run_id"]
        state_path.write_text(json.dumps(state))
    elif damage == "model_truncated":
        model_path.write_bytes(model_path.read_bytes()[: model_path.stat().st_size // 2])
    elif damage == "model_missing":
        model_path.unlink()
    else:
        data = bytearray(best_path.read_bytes())
        data[len(data) // 3] ^= 0xFF  # inside the weights: the zip directory stays intact
        best_path.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert checkpoint.load() is None
    (record,) = [r for r in caplog.records if "discarding corrupt checkpoint" in r.getMessage()]
    assert reason in record.getMessage()
    assert "starting afresh" in record.getMessage()
    assert not checkpoint.folder.exists()


def test_checkpoint_run_that_cannot_be_reopened_gives_a_new_run(tmp_path: Path, caplog) -> None:
    from pipeline.train.checkpoints import ResumeState
    from pipeline.train.train import _resumable_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("cifar10-cnn")
    other = client.create_experiment("elsewhere")
    live, deleted, foreign = (client.create_run(e) for e in (experiment, experiment, other))
    client.delete_run(deleted.info.run_id)

    def resume(run_id: str) -> ResumeState:
        return ResumeState(2, run_id, [{}, {}], tmp_path / "epoch-2.keras")

    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert _resumable_run(resume(live.info.run_id), experiment) == live.info.run_id
        assert pipeline_messages(caplog) == []
        assert _resumable_run(resume(deleted.info.run_id), experiment) is None
        assert _resumable_run(resume(foreign.info.run_id), experiment) is None
        assert _resumable_run(resume("0" * 32), experiment) is None  # store reset or switched
    lines = pipeline_messages(caplog)
    assert len(lines) == 3
    assert f"{deleted.info.run_id} was deleted: continuing its 2 epochs in a new run" in lines[0]
    assert "belongs to another experiment" in lines[1]
    assert "is not in this tracking store (reset, or MLFLOW_TRACKING_URI points" in lines[2]


def test_deleted_run_of_a_checkpoint_continues_in_a_new_run(
    interrupted: Path, tmp_path: Path
) -> None:
    workdir, state = copy_of(interrupted, tmp_path)
    client_for(workdir).delete_run(state["run_id"])

    result = run_stage("train", *args_for(workdir, workdir / "prepared"), env=store_env(workdir))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = warning_lines(result.stderr, "checkpoint's MLflow run")
    assert f"{state['run_id']} was deleted" in line and "in a new run" in line
    (run,) = all_runs(workdir)  # search_runs lists active runs only
    assert run.info.run_id != state["run_id"] and run.info.status == "FINISHED"
    # The new run holds every epoch: those of the checkpoint, copied, and those trained since.
    steps = [m.step for m in client_for(workdir).get_metric_history(run.info.run_id, "loss/train")]
    assert sorted(steps) == [1, 2]
    # 5. The training run carries what the training read, not evaluate's register.* gate.
    assert run.data.params["train.epochs"] == "2"
    assert run.data.params["mlflow.experiment_name"] == "cifar10-cnn"
    assert not [key for key in run.data.params if key.startswith("register.")]
    assert "mlflow.registered_model_name" not in run.data.params


# --- 8. one training per checkpoint ----------------------------------------------------------


def test_second_training_of_same_params_is_refused_naming_the_first(tmp_path: Path) -> None:
    prepared = write_prepared(tmp_path / "prepared", {"train": 200, "val": 50, "test": 10})
    workdir = tmp_path / "work"
    args = args_for(workdir, prepared)
    first = start_training(args, workdir, stderr=subprocess.PIPE)
    try:
        # Freeze the first training while it holds the checkpoint lock, so the race is certain.
        lock = wait_for_lock_of(first, workdir / "checkpoints")
        first.send_signal(signal.SIGSTOP)
        second = run_stage("train", *args, env=store_env(workdir))
        first.send_signal(signal.SIGCONT)
        _, first_stderr = first.communicate(timeout=600)
    finally:
        first.kill()
        first.wait(timeout=60)
    assert second.returncode == 1, second.stderr
    (line,) = error_lines(second.stderr)
    assert f"is locked by pid {first.pid} on host" in line
    assert str(lock) in line and "another training of the same params is running" in line
    assert first.returncode == 0, first_stderr
    (run,) = all_runs(workdir)  # the refused training opened no run
    assert run.info.status == "FINISHED"
    assert not list((workdir / "checkpoints").iterdir()), "lock and checkpoint are gone"


def wait_for_lock_of(process: subprocess.Popen, folder: Path, timeout_s: float = 300) -> Path:
    """The checkpoint lock file once ``process`` has written its pid into it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        for path in folder.glob("*.lock"):
            try:
                if json.loads(path.read_text()).get("pid") == process.pid:
                    return path
            except (OSError, ValueError):
                pass
        time.sleep(0.02)
    raise AssertionError(f"training never held its checkpoint lock (exit {process.poll()})")


# --- 10. read-only and full folders, a corrupt store ------------------------------------------


def run_with_mounts(
    mounts: dict[Path, str], workdir: Path, args: list[str], listed: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The train stage in a private user+mount namespace with a tmpfs at each path.

    ``mounts`` maps a folder to tmpfs options ("ro", "size=1m"). The tmpfs lives only as long
    as the namespace, so ``listed``'s files are printed from inside it, as "left:<names>".
    """
    unshare = shutil.which("unshare")
    workdir.mkdir(parents=True, exist_ok=True)
    probe = unshare and subprocess.run(
        [unshare, "-rm", "sh", "-c", f"mount -t tmpfs tmpfs {workdir}"], capture_output=True
    )
    if not probe or probe.returncode != 0:
        pytest.skip("unprivileged user namespaces with tmpfs mounts are not available here")
    setup = []
    for folder, options in mounts.items():
        folder.mkdir(parents=True, exist_ok=True)
        setup.append(f"mount -t tmpfs -o {options} tmpfs {folder}")
    listing = (
        f'echo "left:$(cd {listed} && find . -type f | sort | tr "\\n" " ")"' if listed else ""
    )
    script = f'{" && ".join(setup)} || exit 99; "$@"; rc=$?; {listing or ":"}; exit $rc'
    return subprocess.run(
        [unshare, "-rm", "sh", "-c", script, "sh", sys.executable, "-m", "stages.train", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **QUIET_ENV, **store_env(workdir)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_read_only_models_folder_fails_before_training(tmp_path: Path) -> None:
    prepared = write_prepared(tmp_path / "prepared", {"train": 200, "val": 50, "test": 10})
    workdir = tmp_path / "work"
    models = workdir / "models"
    result = run_with_mounts({models: "ro"}, workdir, args_for(workdir, prepared))
    assert result.returncode == 1, result.stderr
    assert error_lines(result.stderr) == [f"error: cannot write to {models}: Read-only file system"]
    assert "Traceback" not in result.stderr
    # The per-epoch line of pipeline/train/fit.py (Keras prints "Epoch 1/" on a terminal only).
    assert "epoch 1/" not in (result.stdout + result.stderr).lower(), "it trained first"
    assert not (workdir / "mlflow.db").exists(), "no MLflow run was opened"


def test_full_disk_under_checkpoints_is_one_line_and_no_half_file(tmp_path: Path) -> None:
    prepared = write_prepared(tmp_path / "prepared", {"train": 200, "val": 50, "test": 10})
    workdir = tmp_path / "work"
    checkpoints = workdir / "checkpoints"
    # Room for the first epoch's model (about 2.2 MB with its optimizer state), not for the
    # best weights beside it: the write fails inside the checkpoint.
    args = train_args(workdir, prepared, "train.epochs=2")
    result = run_with_mounts({checkpoints: "size=3m"}, workdir, args, listed=checkpoints)
    assert result.returncode == 1, f"exit {result.returncode}: {result.stderr[-3000:]}"
    (line,) = error_lines(result.stderr)
    assert line.startswith(f"error: cannot write the checkpoint in {checkpoints}/")
    assert line.endswith("No space left on device")
    assert "Traceback" not in result.stderr
    assert result.stdout.strip().splitlines()[-1] == "left:", "no file of a failed checkpoint"
    (run,) = all_runs(workdir)
    assert run.info.status == "FAILED"


def test_full_disk_on_models_is_one_line_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    prepared = write_prepared(tmp_path / "prepared", {"train": 200, "val": 50, "test": 10})
    workdir = tmp_path / "work"
    models = workdir / "models"
    args = train_args(workdir, prepared, "train.epochs=1")  # model.keras is about 2.2 MB
    result = run_with_mounts({models: "size=1m"}, workdir, args, listed=models)
    assert result.returncode == 1, f"exit {result.returncode}: {result.stderr[-3000:]}"
    (line,) = error_lines(result.stderr)
    assert line.startswith(f"error: cannot write the training outputs to {models}")
    assert "No space left on device; the checkpoint is kept, so a rerun resumes" in line
    assert "Traceback" not in result.stderr
    assert result.stdout.strip().splitlines()[-1] == "left:", "no partial model file"
    assert list((workdir / "checkpoints").glob("*/state.json")), "the checkpoint survives"


def test_corrupt_mlflow_db_is_one_line(tmp_path: Path) -> None:
    prepared = write_prepared(tmp_path / "prepared", {"train": 20, "val": 10, "test": 10})
    (tmp_path / "mlflow.db").write_bytes(b"this is no SQLite database\n" * 100)
    result = run_stage("train", *args_for(tmp_path, prepared), env=store_env(tmp_path))
    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        f"error: the MLflow store {tmp_path / 'mlflow.db'} is unreadable (file is not a "
        "database): move it aside to start a new store, or set MLFLOW_TRACKING_URI to another one"
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--models-dir", "is a file, expected a folder"),
        ("--archive", "is a folder, expected a file"),
    ],
)
def test_path_option_of_the_wrong_kind_is_one_line(
    tmp_path: Path, option: str, message: str
) -> None:
    path = tmp_path / "thing"
    if option == "--archive":
        path.mkdir()
    else:
        path.write_text("a file")
    result = run_stage("train", option, str(path), "--params", str(REPO_ROOT / "params.yaml"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {option} {path}: {message}"]


# --- issue 25, item 8: a checkpoint that cannot be resumed here never blocks training ----------


def test_checkpoint_that_passes_the_zip_check_but_cannot_load_is_discarded(
    tmp_path: Path, caplog
) -> None:
    import zipfile

    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    checkpoint = TrainingCheckpoint(tmp_path / "key", {"a.py": "0" * 32})
    checkpoint.save(model, 1, "run-1", [{"epoch": 1, "val_accuracy": 0.5}], 0.5, is_best=False)
    state = json.loads(checkpoint.state_path.read_text())
    # A whole zip with valid CRCs whose config names a class Keras cannot find (a layer of code
    # since removed, or a Keras that names it otherwise).
    path = checkpoint.folder / state["model"]
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["config.json"] = members["config.json"].replace(b'"Dense"', b'"NoSuchLayer"')
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)

    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert checkpoint.load() is None
    (message,) = [m for m in pipeline_messages(caplog) if "discarding" in m]
    assert "cannot be loaded" in message and "NoSuchLayer" in message
    assert "starting afresh" in message
    assert not checkpoint.folder.exists()


def test_checkpoint_of_another_backend_or_precision_is_discarded(tmp_path: Path, caplog) -> None:
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    code = {"a.py": "0" * 32}
    jax_bf16 = {"keras.backend": "jax", "train.precision_policy": "mixed_bfloat16"}
    here = {"keras.backend": "tensorflow", "train.precision_policy": "float32"}
    written = TrainingCheckpoint(tmp_path / "key", code, jax_bf16)
    written.save(model, 1, "run-1", [{"epoch": 1, "val_accuracy": 0.5}], 0.5, is_best=False)
    assert TrainingCheckpoint(tmp_path / "key", code, jax_bf16).load() is not None

    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert TrainingCheckpoint(tmp_path / "key", code, here).load() is None
    (message,) = [m for m in pipeline_messages(caplog) if "discarding" in m]
    assert "written with keras.backend jax, train.precision_policy mixed_bfloat16" in message
    assert "this training uses keras.backend tensorflow, train.precision_policy float32" in message
    assert not (tmp_path / "key").exists()


def test_checkpoint_holding_another_network_is_discarded(tmp_path: Path, caplog) -> None:
    import keras

    def dense(units: int) -> keras.Model:
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(units)])
        model.compile(optimizer="adam", loss="mse")
        return model

    code = {"a.py": "0" * 32}
    checkpoint = TrainingCheckpoint(tmp_path / "key", code, expected_model=lambda: dense(1))
    checkpoint.save(dense(1), 1, "run-1", [{"epoch": 1, "val_accuracy": 0.5}], 0.5, is_best=False)
    assert checkpoint.load() is not None, "the same network resumes"

    # A valid Keras file of another network put in the checkpoint's place (issue 31).
    state = json.loads(checkpoint.state_path.read_text())
    dense(3).save(checkpoint.folder / state["model"])
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert checkpoint.load() is None
    (message,) = [m for m in pipeline_messages(caplog) if "discarding" in m]
    assert "its model is not the network this training builds" in message
    assert "weight shapes [(2, 3), (3,)], expected [(2, 1), (1,)]" in message
    assert "starting afresh" in message
    assert not checkpoint.folder.exists()
    assert checkpoint.discarded_run_id == "run-1", "its MLflow run is closed, not resumed"
