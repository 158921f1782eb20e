"""Fixed costs around the training: start-up, no-op ``dvc repro``, evaluate, serving latency.

- **start-up**: per stage, the wall time of ``--help`` (must not import TensorFlow) and of
  importing the library module the stage's ``run`` loads before any work (TensorFlow, Keras,
  MLflow), each in a fresh interpreter, alternated, median of ``--repeats``.
- **no-op ``dvc repro``**: in a scratch copy of the project (own git, DVC cache and MLflow store)
  whose pipeline has run once on ``--archive`` with ``--train-size`` training images and one
  epoch; median of ``--repeats``.
- **evaluate stage**: ``python -m stages.evaluate`` on the full test split of that copy.
- **serving**: ``mlflow models serve`` of the champion on 127.0.0.1 (``--env-manager local``),
  p50/p99 latency of ``--requests`` sequential requests of 1 and of 256 images.

    python -m benchmarks.overhead --archive A --out overhead.json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import yaml

from benchmarks.common import (
    QUIET_ENV,
    REPO_ROOT,
    check,
    machine_info,
    module,
    python,
    run_measured,
    write_json,
)

# Stage -> the library module its run() imports before doing any work.
STAGE_LIBRARIES = {
    "download": "pipeline.data.download",
    "preprocess": "pipeline.data.preprocess",
    "train": "pipeline.train.train",
    "evaluate": "pipeline.evaluate.evaluate",
}
HEAVY_MODULES = ("tensorflow", "keras", "jax", "mlflow")
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}
# Runs a stage's main() with the given argv; prints its exit code and the heavy modules it loaded.
STAGE_PROBE = """
import json, runpy, sys
sys.argv = ["stages.{stage}", *{argv!r}]
code = 0
try:
    runpy.run_module("stages.{stage}", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print(json.dumps([code, sorted(m for m in {heavy!r} if m in sys.modules)]), file=sys.stderr)
"""


def heavy_imports(stage: str, *argv: str) -> tuple[int, list[str]]:
    """(exit code, which of HEAVY_MODULES were loaded) of ``python -m stages.<stage> ARGV``."""
    code = STAGE_PROBE.format(stage=stage, argv=list(argv), heavy=HEAVY_MODULES)
    measured = run_measured([python(), "-c", code], cwd=REPO_ROOT)
    exit_code, loaded = json.loads(measured.stderr.strip().splitlines()[-1])
    return exit_code, loaded


def startup(repeats: int) -> dict:
    """Per stage: --help wall time, library import wall time, heavy modules loaded by --help."""
    times: dict[str, dict[str, list[float]]] = {
        stage: {"help_s": [], "import_s": []} for stage in STAGE_LIBRARIES
    }
    for _ in range(repeats):
        for stage, library in STAGE_LIBRARIES.items():
            help_run = check(run_measured(module(f"stages.{stage}", "--help")), f"{stage} --help")
            times[stage]["help_s"].append(help_run.wall_s)
            imported = check(run_measured([python(), "-c", f"import {library}"]), library)
            times[stage]["import_s"].append(imported.wall_s)
    bare = [run_measured([python(), "-c", "pass"]).wall_s for _ in range(repeats)]
    result = {"python_s": statistics.median(bare)}
    for stage, measured in times.items():
        result[stage] = {key: statistics.median(values) for key, values in measured.items()}
        result[stage]["help_imports"] = heavy_imports(stage, "--help")[1]
        result[stage]["params_error_imports"] = heavy_imports(stage, "--set", "nope=1")[1]
    return result


class Project:
    """A scratch copy of the project with its own git, DVC cache and MLflow store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        bin_dir = str(Path(python()).parent)
        self.env = {**env, **QUIET_ENV, **GIT_ENV, "PATH": f"{bin_dir}:{env['PATH']}"}

    def run(self, *cmd: str) -> float:
        """Run ``cmd`` in the copy; return its wall time."""
        started = time.perf_counter()
        result = subprocess.run(
            cmd, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=3600
        )
        if result.returncode != 0:
            raise SystemExit(f"error: {' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
        return time.perf_counter() - started


def make_project(root: Path, archive: Path, train_size: int) -> Project:
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in filter(None, listing.split("\0")):
        source = REPO_ROOT / name
        if source.is_file() and not name.startswith(("benchmarks/", "docs/")):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"].update(url=str(archive), md5=hashlib.md5(archive.read_bytes()).hexdigest())
    params["preprocess"].update(max_train_images=train_size, val_size=max(10, train_size // 10))
    params["train"].update(epochs=1)
    params["register"].update(min_accuracy=0.0)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    project = Project(root)
    project.run("git", "init", "-q")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "scratch copy")
    return project


def pipeline_costs(project: Project, repeats: int) -> dict:
    first = project.run("dvc", "repro")
    noop = [project.run("dvc", "repro") for _ in range(repeats)]
    evaluate = [project.run(python(), "-m", "stages.evaluate") for _ in range(repeats)]
    with np.load(project.root / "data/prepared/test.npz") as test:
        n_test = len(test["y"])
    return {
        "first_repro_s": first,
        "noop_repro_s": statistics.median(noop),
        "noop_repro_all_s": noop,
        "evaluate_s": statistics.median(evaluate),
        "evaluate_all_s": evaluate,
        "test_images": n_test,
    }


def serving_latency(project: Project, requests: int, batch_sizes: tuple[int, ...]) -> dict:
    """p50/p99 of sequential /invocations requests to ``mlflow models serve`` of the champion."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = project.env | {"MLFLOW_TRACKING_URI": f"sqlite:///{project.root / 'mlflow.db'}"}
    log_path = project.root / "serve.log"
    command = [
        str(Path(python()).parent / "mlflow"), "models", "serve",
        "-m", "models:/cifar10-cnn@champion", "--env-manager", "local",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with np.load(project.root / "data/prepared/test.npz") as test:
        images = test["x"]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            command, cwd=project.root, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        started = time.perf_counter()
        _wait_for(f"{url}/health", server, log_path)
        result: dict = {"startup_s": time.perf_counter() - started}
        for size in batch_sizes:
            body = json.dumps({"inputs": images[np.arange(size) % len(images)].tolist()}).encode()
            _post(f"{url}/invocations", body)  # warm-up: first call builds the predict function
            latencies = []
            for _ in range(requests):
                began = time.perf_counter()
                answer = _post(f"{url}/invocations", body)
                latencies.append(time.perf_counter() - began)
                if len(answer["predictions"]) != size:
                    raise SystemExit(f"error: served {len(answer['predictions'])} of {size}")
            result[f"batch_{size}"] = {
                "requests": requests,
                "p50_ms": 1000 * float(np.percentile(latencies, 50)),
                "p99_ms": 1000 * float(np.percentile(latencies, 99)),
                "images_per_s": size * requests / sum(latencies),
            }
        return result
    finally:
        _stop(server)


def _post(url: str, body: bytes) -> dict:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def _wait_for(url: str, server: subprocess.Popen, log_path: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"error: mlflow models serve exited:\n{log_path.read_text()[-3000:]}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=5) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.5)
    raise SystemExit(f"error: {url} did not answer in {timeout_s} s")


def _stop(server: subprocess.Popen) -> None:
    """Stop the server's whole process group (uvicorn workers included), by its PID."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archive", type=Path, required=True, help="CIFAR-10 binary archive")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args(argv)
    result: dict = {"machine": machine_info(), "train_size": args.train_size}
    result["startup"] = startup(args.repeats)
    write_json(args.out, result)
    with tempfile.TemporaryDirectory(prefix="bench-project-") as tmp:
        project = make_project(Path(tmp), args.archive.resolve(), args.train_size)
        result["pipeline"] = pipeline_costs(project, args.repeats)
        write_json(args.out, result)
        result["serving"] = serving_latency(project, args.requests, (1, 256))
        write_json(args.out, result)


if __name__ == "__main__":
    main()
