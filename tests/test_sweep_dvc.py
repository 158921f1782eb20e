"""A DVC grid sweep: three queued experiments, two queue workers, one sweep in the workspace store.

``dvc exp run --queue -S mlflow.sweep=lr-grid -S 'train.learning_rate=a,b,c'`` queues one
experiment per value (DVC expands the comma list into a grid); ``dvc queue start -j 2`` runs
them two at a time, each in its own temporary copy under ``.dvc/tmp/exps/``, all logging to the
workspace's mlflow.db. ``python -m views.sweep`` (``make sweep``) then lists the three
best first. Tiny: 200 training images, 1 epoch, the data prepared once; the workers are stopped
by PID afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.compare.sweeps import SWEEP_TAG, VAL_ACCURACY
from tests.cifar_archive import build_archive, encode_records
from tests.conftest import REPO_ROOT
from tests.test_pipeline_dvc import Repo, project_files, workspace_client

# Above the 900 s default: at a load of 9-14 on 2 cores the queue alone took 14 min.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

RATES = ("0.0005", "0.001", "0.002")
SWEEP = "lr-grid"
# Bounds the wait for the queue: three tiny trainings, two at a time.
QUEUE_TIMEOUT_S = 1200


def learnable_members(per_batch: int, n_test: int) -> dict[str, bytes]:
    """Archive members whose label is painted in the top-left corner (so learning rates give
    different accuracies after one epoch, and the ranking is not a tie)."""
    rng = np.random.default_rng(7)

    def batch(n: int) -> bytes:
        y = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(y)
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        x[:, :8, :8, :] = (y * 25)[:, None, None, None]
        return encode_records(x, y)

    members = {f"data_batch_{i}.bin": batch(per_batch) for i in range(1, 6)}
    members["test_batch.bin"] = batch(n_test)
    return members


def processes_under(root: Path) -> list[int]:
    """PIDs of this user's processes whose working folder is ``root`` or inside it."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cwd = Path(os.readlink(entry / "cwd"))
            if cwd == root or root in cwd.parents:
                pids.append(int(entry.name))
    return pids


def stop_queue(repo: Repo) -> None:
    """``dvc queue stop --kill``, then end by PID whatever still runs in the copy (a worker or
    an experiment that outlived it), TERM first, KILL after 10 s."""
    with contextlib.suppress(Exception):
        repo.run("dvc", "queue", "stop", "--kill", check=False)
    deadline = time.monotonic() + 10
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in processes_under(repo.root):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        while processes_under(repo.root) and time.monotonic() < deadline:
            time.sleep(0.5)
        deadline = time.monotonic() + 5


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    """A scratch copy of the project (own git, DVC cache and mlflow.db) on a tiny archive."""
    root = tmp_path_factory.mktemp("sweep-repo")
    for name in project_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, root / name)
    repo = Repo(root)
    archive = tmp_path_factory.mktemp("archive") / "cifar-10-binary.tar.gz"
    build_archive(archive, per_batch=60, n_test=50, members=learnable_members(60, 50))
    repo.set_params(
        data__url=str(archive),
        data__md5=hashlib.md5(archive.read_bytes()).hexdigest(),
        preprocess__val_size=50,
        preprocess__max_train_images=200,
        train__epochs=1,
        # 20 small Adam steps: enough for the three learning rates to part a little.
        train__optimizer="adam",
        train__batch_size=10,
        train__steps_per_execution=1,
        register__min_accuracy=0.0,
    )
    repo.run("git", "init", "-q")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "scratch copy")
    # Data once in the workspace: each queued experiment restores it from DVC's run-cache.
    repo.run("dvc", "repro", "preprocess")
    try:
        yield repo
    finally:
        stop_queue(repo)


def start_workers(repo: Repo, jobs: int) -> None:
    """``dvc queue start -j jobs``, its output to a file: the workers it leaves behind inherit
    its stdout, so reading that from a pipe would wait for them to exit."""
    log = repo.root.parent / "queue-start.log"
    with log.open("w") as out:
        started = subprocess.run(
            ["dvc", "queue", "start", "-j", str(jobs)],
            cwd=repo.root, env=repo.env, stdout=out, stderr=subprocess.STDOUT, timeout=120,
        )  # fmt: skip
    assert started.returncode == 0, log.read_text()


def wait_for_all(repo: Repo, count: int, timeout_s: float) -> list[list[str]]:
    """Poll ``dvc queue status`` until ``count`` experiments are done and no worker is left."""
    deadline = time.monotonic() + timeout_s
    out = ""
    while time.monotonic() < deadline:
        out = repo.run("dvc", "queue", "status").stdout
        rows = [line.split() for line in out.splitlines() if line.split()[-1:] in (
            ["Success"], ["Failed"], ["Running"], ["Queued"])]  # fmt: skip
        done = [row for row in rows if row[-1] in {"Success", "Failed"}]
        # A worker stops on its own once the queue has been idle for 10 s.
        if len(done) >= count and "Worker status: 0 active, 0 idle" in out:
            return done
        time.sleep(5)
    raise AssertionError(f"queue not done after {timeout_s} s:\n{out}")


def test_queued_grid_with_two_workers_is_one_sweep_listed_best_first(repo: Repo) -> None:
    # One -S with a comma list: DVC 3.67 queues the grid, one experiment per value.
    repo.run(
        "dvc", "exp", "run", "--queue",
        "-S", f"mlflow.sweep={SWEEP}", "-S", f"train.learning_rate={','.join(RATES)}",
    )  # fmt: skip
    queued = repo.run("dvc", "queue", "status").stdout
    assert queued.count("Queued") == len(RATES), queued

    start_workers(repo, 2)
    done = wait_for_all(repo, len(RATES), QUEUE_TIMEOUT_S)
    logs = "\n".join(repo.run("dvc", "queue", "logs", row[0], check=False).stdout for row in done)
    assert [row[-1] for row in done] == ["Success"] * len(RATES), logs

    # Every experiment's training run is in the WORKSPACE store, tagged with the sweep.
    client = workspace_client(repo)
    experiment = client.get_experiment_by_name("cifar10-cnn")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == len(RATES), "one run per experiment, all in the workspace's mlflow.db"
    assert {run.data.tags.get(SWEEP_TAG) for run in runs} == {SWEEP}
    assert sorted(run.data.params["train.learning_rate"] for run in runs) == sorted(RATES)
    assert all(run.info.status == "FINISHED" for run in runs)
    assert all("test/accuracy" in run.data.metrics for run in runs), "evaluate logged there too"
    # Their artifacts too, though each ran in a temporary copy that DVC has since deleted.
    for run in runs:
        artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
        assert artifacts.is_relative_to(repo.root / "mlruns") and artifacts.is_dir()
    # Three evaluates at once, one registered model: each trial registered once.
    versions = client.search_model_versions("name='cifar10-cnn'")
    assert sorted(v.run_id for v in versions) == sorted(run.info.run_id for run in runs)
    # Two workers: at least two trainings were running at the same time.
    spans = sorted((run.info.start_time, run.info.end_time) for run in runs)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))

    # A run of another sweep in the same store is not listed.
    other = client.create_run(experiment.experiment_id, tags={SWEEP_TAG: "another"})
    client.log_metric(other.info.run_id, "test/accuracy", 1.0)
    client.set_terminated(other.info.run_id)

    # `make sweep SWEEP=lr-grid` runs this, from the workspace (no MLFLOW_TRACKING_URI).
    shown = repo.run(sys.executable, "-m", "views.sweep", SWEEP).stdout.splitlines()
    assert shown[0].startswith(f"sweep {SWEEP}: 3 trials, best first by test accuracy")
    # Columns are two spaces apart at least; a trial's name has single spaces in it.
    header, *rows = (re.split(r"\s{2,}", line.strip()) for line in shown[1:])
    assert header[-1] == "train.learning_rate"
    by_name = {run.info.run_name: run for run in runs}
    assert [row[1] for row in rows] != [] and {row[1] for row in rows} == set(by_name)
    # Each trial named for the sweep, its number (by start) and its value, or "the committed
    # params" for the trial whose rate is the committed one; DVC's name kept in a tag.
    committed = str(
        yaml.safe_load((repo.root / "params.yaml").read_text())["train"]["learning_rate"]
    )
    assert committed in RATES, "the grid has one trial with the committed rate"
    by_start = sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))
    rates = [run.data.params["train.learning_rate"] for run in by_start]
    assert sorted(by_name) == sorted(
        f"{SWEEP} {n}: " + ("the committed params" if rate == committed else f"lr={rate}")
        for n, rate in enumerate(rates, start=1)
    )
    assert all(run.data.tags.get("dvc.experiment") for run in runs)
    # The figures read straight from each run, and the order they must come in.
    figures = [
        (
            by_name[row[1]].data.metrics["test/accuracy"],
            client.get_metric_history(by_name[row[1]].info.run_id, VAL_ACCURACY)[-1].value,
        )
        for row in rows
    ]
    assert figures == sorted(figures, reverse=True), shown
    for row, (test, val) in zip(rows, figures, strict=True):
        assert (row[4], row[5]) == (f"{val:.4f}", f"{test:.4f}")
        assert row[-1] == by_name[row[1]].data.params["train.learning_rate"]
    print("\n".join(shown))
