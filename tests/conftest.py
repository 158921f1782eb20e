"""Fixtures shared by the test modules."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from pipeline.core.params import Params, load_params
from pipeline.core.paths import REPO_ROOT
from tests.cifar_archive import CLASSES

if TYPE_CHECKING:
    from tests.docker_fixtures import Docker

# A helper module that asserts: show the compared values on failure, as in the test modules.
pytest.register_assert_rewrite("tests.mlflow_fixtures")

# The markers `make check` leaves out. A module whose every test carries one says so with
# `pytestmark = pytest.mark.NAME` (or a list that starts with it); see pytest_ignore_collect.
SLOW_MARKERS = ("e2e", "keras")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shard", default=None, metavar="I/N",
        help="collect only the I-th of N shares of the test modules (make check runs 2 at once)",
    )  # fmt: skip


def parse_shard(shard: str) -> tuple[int, int]:
    """(I, N) of ``--shard I/N``; a UsageError (one line, exit 4) for anything else."""
    match = re.fullmatch(r"([1-9][0-9]*)/([1-9][0-9]*)", shard)
    if match is None or int(match[1]) > int(match[2]):
        raise pytest.UsageError(f"--shard {shard!r}: expected I/N with 1 <= I <= N, e.g. 1/2")
    return int(match[1]), int(match[2])


def pytest_configure(config: pytest.Config) -> None:
    # Checked here, before collection, where pytest reports a UsageError as such.
    if config.getoption("shard") is not None:
        parse_shard(config.getoption("shard"))


def in_shard(module: Path, shard: str | None) -> bool:
    """Whether test module ``module`` is in ``shard`` ("I/N": every N-th module of the sorted
    list, from the I-th). Decided before import, so each share imports only its own modules."""
    if shard is None:
        return True
    index, count = parse_shard(shard)
    modules = sorted(p.name for p in module.parent.glob("test_*.py"))
    return module.name not in modules or modules.index(module.name) % count == index - 1


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under ``-m "not e2e and not keras"`` (``make check``), do not even import such modules.

    Collecting them would import TensorFlow (about 20 s here), MLflow and KFP only to deselect
    every test: that was most of the 52-68 s that collection alone took.
    """
    if not collection_path.name.startswith("test_") or collection_path.suffix != ".py":
        return None
    if not in_shard(collection_path, config.getoption("shard")):
        return True
    expression = config.getoption("markexpr") or ""
    excluded = [name for name in SLOW_MARKERS if f"not {name}" in expression]
    if not excluded:
        return None
    pattern = rf"^pytestmark = \[?\s*pytest\.mark\.({'|'.join(excluded)})\b"
    text = collection_path.read_text(encoding="utf-8")
    return True if re.search(pattern, text, re.MULTILINE) else None


# The venv's bin: CLIs that exec other tools by name (dvc, mlflow -> uvicorn) need it on PATH.
VENV_BIN = Path(sys.executable).parent
# Quiet, CPU-only, no telemetry: subprocesses inherit this.
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "CUDA_VISIBLE_DEVICES": "",
    "MLFLOW_ENABLE_TELEMETRY": "false",
}


def repo_params(*overrides: str) -> Params:
    """The repo's params.yaml, the one source of default values, with ``--set`` style overrides."""
    return load_params(REPO_ROOT / "params.yaml", list(overrides))


def configured_param_count(*overrides: str) -> int:
    """Parameters of the model params.yaml configures: what every trained model must have.

    The reference's own count (276,138) is asserted once, in test_model.py; every other test
    compares with this, so swapping the model breaks no test that is not about the model.
    """
    from pipeline.train.model import build_model

    return build_model(repo_params(*overrides).model).count_params()


def write_prepared(folder: Path, sizes: dict[str, int], seed: int = 0) -> Path:
    """Write train/val/test.npz and classes.json like the preprocess stage does.

    The label is painted into the top-left corner, so a model can learn it in a few epochs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in sizes.items():
        y = (np.arange(n) % 10).astype(np.uint8)
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        x[:, :8, :8, :] = (y * 25)[:, None, None, None]
        np.savez(folder / f"{split}.npz", x=x, y=y)
    (folder / "classes.json").write_text(json.dumps(CLASSES))
    return folder


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small prepared dataset: 200 train, 50 val, 50 test images."""
    folder = tmp_path_factory.mktemp("prepared")
    return write_prepared(folder, {"train": 200, "val": 50, "test": 50})


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_args(folder: Path, prepared: Path, *sets: str) -> list[str]:
    """Arguments of the train stage with every output under ``folder`` and batch 50."""
    args = [
        "--prepared-dir", str(prepared),
        "--models-dir", str(folder / "models"),
        "--reports-dir", str(folder / "reports"),
        "--checkpoints-dir", str(folder / "checkpoints"),
        "--archive", str(folder / "no-archive.tar.gz"),
        "--set", "train.batch_size=50",
    ]  # fmt: skip
    for item in sets:
        args += ["--set", item]
    return args


def store_env(folder: Path) -> dict[str, str]:
    """An MLflow tracking store of its own in ``folder``."""
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}


def run_stage(
    stage: str,
    *args: str | Path,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    cwd: Path = REPO_ROOT,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m stages.<stage>`` (from the repo root by default) and capture its output."""
    full_env = {**os.environ, **QUIET_ENV, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    """A Docker daemon for a module that builds or runs images (tests/docker_fixtures.py): the
    one that answers, else our own dockerd, stopped by its PID after the module."""
    from tests.docker_fixtures import running_daemon

    with running_daemon() as daemon:
        yield daemon
