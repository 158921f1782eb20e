"""The install: CPU and GPU extras from one lock, never together; Python 3.11-3.13; make's choice.

Every uv call is ``--frozen --dry-run`` into a temp environment: it reads uv.lock, needs no
network and leaves .venv alone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

UV = REPO_ROOT / ".tools" / "bin" / "uv"
SUPPORTED = ("3.11", "3.12", "3.13")


def lock() -> dict:
    return tomllib.loads((REPO_ROOT / "uv.lock").read_text())


def locked_versions() -> dict[str, set[str]]:
    """Package name -> its versions in uv.lock (a package may be locked per Python version)."""
    versions: dict[str, set[str]] = {}
    for package in lock()["package"]:
        versions.setdefault(package["name"], set()).add(package.get("version", ""))
    return versions


def uv(*args: str, env_dir: Path, python: str = sys.executable) -> subprocess.CompletedProcess:
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(env_dir), "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        [str(UV), *args, "--python", python],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def would_install(result: subprocess.CompletedProcess) -> dict[str, str]:
    """name -> version from the ``+ name==version`` lines of a ``uv sync --dry-run``."""
    lines = re.findall(r"^ \+ ([A-Za-z0-9_.\-]+)==(\S+)", result.stderr + result.stdout, re.M)
    return dict(lines)


def test_lock_declares_cpu_and_gpu_extras_as_conflicting() -> None:
    conflicts = [{entry["extra"] for entry in group} for group in lock().get("conflicts", [])]
    assert {"cpu", "gpu"} in conflicts


def test_gpu_packages_are_in_the_lock() -> None:
    versions = locked_versions()
    # CUDA TensorFlow, CUDA JAX and the CUDA libraries they bring as wheels.
    assert "2.21.0" in versions["tensorflow"]
    assert "0.10.2" in versions["jax-cuda12-plugin"]
    assert "0.10.2" in versions["jax-cuda12-pjrt"]
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12"} <= versions.keys()
    project = next(p for p in lock()["package"] if p["name"] == "cifar10-pipeline")
    gpu = {dep["name"]: dep.get("extra", []) for dep in project["optional-dependencies"]["gpu"]}
    assert gpu == {"tensorflow": ["and-cuda"], "jax": ["cuda12"]}


@pytest.mark.e2e
def test_cpu_and_gpu_extras_never_resolve_together(tmp_path: Path) -> None:
    result = uv("sync", "--frozen", "--extra", "cpu", "--extra", "gpu", "--dry-run",
                env_dir=tmp_path / "env")  # fmt: skip
    assert result.returncode != 0
    assert "incompatible with the declared conflicts" in result.stderr
    assert "cifar10-pipeline[cpu]" in result.stderr and "cifar10-pipeline[gpu]" in result.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("extra", "wanted", "unwanted"),
    [
        ("cpu", {"tensorflow-cpu": "2.21.0"}, {"tensorflow", "jax-cuda12-plugin"}),
        (
            "gpu",
            {"tensorflow": "2.21.0", "jax-cuda12-plugin": "0.10.2", "jax": "0.10.2"},
            {"tensorflow-cpu"},
        ),
    ],
)
def test_each_extra_installs_its_own_tensorflow(
    tmp_path: Path, extra: str, wanted: dict[str, str], unwanted: set[str]
) -> None:
    result = uv("sync", "--frozen", "--extra", extra, "--dry-run", env_dir=tmp_path / "env")
    assert result.returncode == 0, result.stderr
    installs = would_install(result)
    assert {name: installs.get(name) for name in wanted} == wanted
    assert not unwanted & installs.keys()


def find_python(version: str) -> str | None:
    """An interpreter of ``version`` on PATH or in pyenv's folder, or None."""
    candidates = [shutil.which(f"python{version}")]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += sorted(str(p) for p in pyenv.glob(f"{version}.*/bin/python{version}"))
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


@pytest.mark.e2e
@pytest.mark.parametrize("version", SUPPORTED)
def test_lock_installs_on_each_supported_python(tmp_path: Path, version: str) -> None:
    python = find_python(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine")
    result = uv("sync", "--frozen", "--extra", "cpu", "--extra", "kubeflow", "--extra", "server",
                "--dry-run", env_dir=tmp_path / "env", python=python)  # fmt: skip
    assert result.returncode == 0, result.stderr
    installs = would_install(result)
    assert installs["tensorflow-cpu"] == "2.21.0"
    assert installs["keras"] == "3.15.1"


def test_requires_python_is_311_to_313() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11,<3.14"


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("flag", "extra"), [((), "cpu"), (("GPU=1",), "gpu")])
def test_make_setup_syncs_the_chosen_flavour(flag: tuple[str, ...], extra: str) -> None:
    # -B -n: print what a fresh set-up would run, run nothing.
    result = make("-B", "-n", "setup", *flag)
    assert result.returncode == 0, result.stderr
    sync = next(line for line in result.stdout.splitlines() if " sync " in line)
    assert "--frozen" in sync and f"--extra {extra}" in sync and "--python /" in sync
    other = {"cpu": "gpu", "gpu": "cpu"}[extra]
    assert f"--extra {other}" not in sync
    # The stamp names the flavour, so switching flavours resyncs.
    assert f"touch .venv/.synced-{extra}" in result.stdout


def test_make_names_the_supported_pythons_when_none_is_found() -> None:
    result = make("check-python", "PYTHON_CANDIDATES=no-such-python3 python2-nope")
    assert result.returncode != 0
    assert "3.11, 3.12 or 3.13" in result.stderr
    assert "no-such-python3" in result.stderr
