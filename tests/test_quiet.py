"""A stage prints its own lines; TensorFlow's and MLflow's noise is silenced unless asked for.

The end-to-end test counts the lines of the README's quick `dvc exp run` on a tiny archive, in a
scratch copy of the project, with none of the quieting variables the other tests export: the
quieting must come from the project itself.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest

from tests.cifar_archive import build_archive
from tests.conftest import REPO_ROOT, VENV_BIN
from tests.test_pipeline_dvc import GIT_ENV, project_files

# A line of TensorFlow's C++ logging (absl/glog format), or absl's note before it.
TF_CPP_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\]|absl::InitializeLog")
PYTHON_WARNING = re.compile(r"\b\w*Warning: ")
EPOCH_LINE = re.compile(r"^epoch \d+/\d+: ")
MAX_LINES = 40  # besides one line per epoch (issue 31)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of the project, from the repo root."""
    # Without the quieting variables a test session may export (tests/conftest.py QUIET_ENV).
    quieting = ("CIFAR10_VERBOSE", "TF_CPP_MIN_LOG_LEVEL", "MLFLOW_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(quieting)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


NATIVE_WRITES = """
    import os
    from pipeline.core.quiet import filtered_native_stderr
    with filtered_native_stderr():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\\n")
        os.write(2, b"I0000 00:00:1796424581.481538    7993 port.cc:153] oneDNN custom ops\\n")
        os.write(2, b"a real error from C++\\n")
"""


def test_native_load_notes_dropped_other_lines_kept() -> None:
    done = run_python(NATIVE_WRITES)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "a real error from C++\n"


def test_verbose_env_keeps_native_lines() -> None:
    done = run_python(NATIVE_WRITES, CIFAR10_VERBOSE="1")
    assert "oneDNN custom ops" in done.stderr and "absl::InitializeLog" in done.stderr


def test_quiet_defaults_never_override_the_user() -> None:
    done = run_python(
        """
        import os
        from pipeline.core.quiet import quiet_third_party
        quiet_third_party(verbose=False)
        print(os.environ["TF_CPP_MIN_LOG_LEVEL"])
        print(os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"])
        """,
        TF_CPP_MIN_LOG_LEVEL="0",
    )
    assert done.stdout.split() == ["0", "false"], done.stderr


def test_verbose_flag_is_passed_to_child_processes() -> None:
    done = run_python(
        """
        import os
        from pipeline.core.quiet import quiet_third_party
        quiet_third_party(verbose=True)
        print(os.environ.get("CIFAR10_VERBOSE"), os.environ.get("TF_CPP_MIN_LOG_LEVEL"))
        """
    )
    assert done.stdout.split() == ["1", "None"], done.stderr


@pytest.mark.e2e
def test_quick_dvc_exp_run_prints_what_matters(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for name in project_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, root / name)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    build_archive(archive, per_batch=60, n_test=50)
    # No TF_CPP_MIN_LOG_LEVEL, MLFLOW_* or CIFAR10_VERBOSE: what a new user's shell has.
    noisy = ("TF_", "MLFLOW_", "CIFAR10_", "PYTHONWARNINGS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(noisy)}
    env = {**env, **GIT_ENV, "PATH": f"{VENV_BIN}:{env['PATH']}", "CUDA_VISIBLE_DEVICES": ""}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    sets = [
        f"data.url={archive}", f"data.md5={md5}", "preprocess.max_train_images=200",
        "preprocess.val_size=50", "train.epochs=2", "train.batch_size=50",
        "register.min_accuracy=0",
    ]  # fmt: skip
    done = subprocess.run(
        ["dvc", "exp", "run", *(arg for item in sets for arg in ("-S", item))],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900,
    )  # fmt: skip
    # Bytes, split on newlines only: a progress bar redrawn with \r is one line on a terminal.
    output = done.stdout.decode("utf-8", errors="replace")
    assert done.returncode == 0, output
    lines = output.split("\n")
    lines = lines[:-1] if lines and lines[-1] == "" else lines
    epochs = [line for line in lines if EPOCH_LINE.match(line)]
    assert len(epochs) == 2, output
    assert len(lines) - len(epochs) <= MAX_LINES, output
    assert not [line for line in lines if TF_CPP_LINE.search(line)], output
    assert not [line for line in lines if PYTHON_WARNING.search(line)], output
    # The stage's own lines: what it did, the result, where to look.
    assert "test accuracy" in output and "registry: cifar10-cnn v1" in output
    assert "MLflow run" in output
    # The run's description is its headline: test accuracy, then the params changed (-S).
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("cifar10-cnn").experiment_id])
    description = run.data.tags["mlflow.note.content"]
    assert description.startswith("test accuracy "), description
    assert "epochs=2" in description and "batch_size=50" in description, description
