"""The container images, as far as they can be checked without a Docker daemon.

hadolint lints the Dockerfiles; the install command each one runs is replayed as a dry run
against uv.lock and must install exactly the locked export (the server image: only locked
versions); DVC must work in the image's layout, which has no .git. tests/test_images.py builds
the CPU image and runs the pipeline in it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO_ROOT, VENV_BIN

DOCKERFILES = {
    "cpu": REPO_ROOT / "docker" / "Dockerfile",
    "gpu": REPO_ROOT / "docker" / "Dockerfile.gpu",
}
UV = REPO_ROOT / ".tools" / "bin" / "uv"


def instructions(dockerfile: Path) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = "\n".join(
        line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    return [" ".join(item.split()) for item in re.sub(r"\\\n", " ", text).splitlines() if item]


def run_commands(dockerfile: Path) -> list[str]:
    return [
        item.removeprefix("RUN ") for item in instructions(dockerfile) if item.startswith("RUN ")
    ]


def uv_sync_command(dockerfile: Path) -> list[str]:
    """The ``uv sync ...`` that the image runs, as arguments."""
    (command,) = [cmd for cmd in run_commands(dockerfile) if " uv sync " in f" {cmd} "]
    return command[command.index("uv sync") :].split()


def hadolint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "hadolint"), "--no-color", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_passes_both_dockerfiles() -> None:
    result = hadolint(*DOCKERFILES.values())
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_careless_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install git\nUSER root\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest
    assert "DL3008" in result.stdout  # unpinned apt package


def makefile_uv_version() -> str:
    found = re.search(r"^UV_VERSION := (\S+)$", (REPO_ROOT / "Makefile").read_text(), re.M)
    assert found is not None
    return found[1]


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_image_installs_from_the_lock_with_makes_uv_as_a_non_root_user(flavour: str) -> None:
    dockerfile = DOCKERFILES[flavour]
    items = instructions(dockerfile)
    # The base images are build arguments (a machine without a registry passes local ones);
    # their defaults are what users build from.
    assert f"ARG UV_IMAGE=ghcr.io/astral-sh/uv:{makefile_uv_version()}" in items
    assert "ARG PYTHON_IMAGE=python:3.12-slim-bookworm" in items
    assert "FROM ${UV_IMAGE} AS uv" in items
    assert items.count("FROM ${PYTHON_IMAGE}") + items.count("FROM ${PYTHON_IMAGE} AS build") == 2
    sync = uv_sync_command(dockerfile)
    assert {"--frozen", "--no-dev"} <= set(sync)
    extras = {sync[i + 1] for i, arg in enumerate(sync) if arg == "--extra"}
    assert extras == {flavour, "kubeflow", "s3"}
    (user,) = [item.split()[1] for item in items if item.startswith("USER ")]
    assert user.split(":")[0] not in {"0", "root"}
    assert "WORKDIR /app" in items


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_runtime_stage_has_git_and_folders_the_app_user_owns(flavour: str) -> None:
    """What tests/test_images.py checks in the built CPU image, held in both files (the GPU one
    is built by hand only): git for DVC and GitPython; output folders a named volume can take
    over; KFP's artifact roots."""
    runs = run_commands(DOCKERFILES[flavour])
    assert any("apt-get install -y --no-install-recommends git" in cmd for cmd in runs)
    (install,) = [cmd for cmd in runs if "install -d -o app -g app" in cmd]
    folders = install[install.index("install -d") :].split("&&")[0].split()[6:]
    expected = ["/app", "/app/data", "/app/models", "/app/reports", "/gcs", "/minio", "/s3"]
    assert folders == expected


@pytest.mark.e2e
def test_server_image_installs_only_locked_versions(tmp_path: Path) -> None:
    """deploy/mlflow.Dockerfile's own commands, replayed: the lock exported as constraints, the
    server's packages installed under them (dry run). Every version must be the lock's."""
    dockerfile = REPO_ROOT / "deploy" / "mlflow.Dockerfile"
    items = instructions(dockerfile)
    assert f"ARG UV_IMAGE=ghcr.io/astral-sh/uv:{makefile_uv_version()}" in items
    (install,) = [cmd for cmd in run_commands(dockerfile) if "uv export" in cmd]
    commands = [cmd.strip() for cmd in install.split("&&")]
    lock = tmp_path / "lock"
    lock.mkdir()
    shutil.copy(REPO_ROOT / "pyproject.toml", lock)
    shutil.copy(REPO_ROOT / "uv.lock", lock)
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    output = ""
    for command in commands:
        assert command.startswith("uv "), command
        command = command.replace("/lock", str(lock)).replace("/opt/mlflow", str(venv))
        args = shlex.split(command)[1:]
        if args[:2] == ["venv", "--python"]:
            args[2] = sys.executable
        if args[:2] == ["pip", "install"]:
            args.append("--dry-run")
        result = subprocess.run(
            [str(UV), *args], env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr
        output = result.stderr
    installed = {
        f"{name.lower()}=={version}"
        for name, version in re.findall(r"^ \+ (\S+)==(\S+)$", output, re.M)
    }
    locked = {pin.lower() for pin in locked_export({"server", "s3"})}
    assert installed and installed <= locked, installed - locked
    assert {"mlflow", "psycopg", "boto3"} <= {pin.split("==")[0] for pin in installed}


def test_tracked_file_names_are_plain() -> None:
    """A mistyped redirect once committed "ith tarfile.open(...)": no such name may be tracked
    (it would end up in every image)."""
    odd = [
        name
        for name in subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.split("\0")
        if name and not re.fullmatch(r"[A-Za-z0-9._/-]+", name)
    ]
    assert odd == []


def locked_export(extras: set[str]) -> set[str]:
    """``name==version`` of every package ``uv export`` lists for this platform and Python."""
    args = [str(UV), "export", "--frozen", "--no-hashes", "--no-dev", "--no-emit-project"]
    for extra in sorted(extras):
        args += ["--extra", extra]
    lines = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    pins = set()
    for line in lines.splitlines():
        if not line or line.startswith(("#", " ")):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            pins.add(f"{requirement.name}=={next(iter(requirement.specifier)).version}")
    return pins


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_image_installs_exactly_the_locked_versions(tmp_path: Path, flavour: str) -> None:
    sync = uv_sync_command(DOCKERFILES[flavour])
    extras = {sync[i + 1] for i, arg in enumerate(sync) if arg == "--extra"}
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv")}
    env.pop("VIRTUAL_ENV", None)
    # The image's own command, into an empty environment, as a dry run.
    result = subprocess.run(
        [str(UV), *sync[1:], "--dry-run", "--python", sys.executable],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    installed = {
        f"{name.lower()}=={version}"
        for name, version in re.findall(r"^ \+ (\S+)==(\S+)$", result.stderr, re.M)
    }
    exported = {pin.lower() for pin in locked_export(extras)}
    assert installed and installed == exported
    backend = "tensorflow-cpu==2.21.0" if flavour == "cpu" else "tensorflow==2.21.0"
    assert backend in installed


def dockerignore_patterns() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_lets_in_only_what_the_images_need() -> None:
    """An allow-list: everything out first, then named paths back in, never a git-ignored one.
    (tests/test_images.py checks the real context with files planted where git ignores them.)"""
    patterns = dockerignore_patterns()
    assert patterns[0] == "*"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    needed = {"pipeline", "stages", "cifar10_kfp", "dvc.yaml", "params.yaml", ".dvc/config",
              "pyproject.toml", "uv.lock", "deploy/server.py", "deploy/serve.py"}  # fmt: skip
    assert needed <= allowed
    for secret in ("deploy", "deploy/.env", ".server", ".git", ".venv", "data", "models"):
        assert secret not in allowed
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=REPO_ROOT,
        input="\n".join(sorted(allowed)),
        capture_output=True,
        text=True,
    ).stdout.split()
    assert ignored == []
    # Inside the folders let back in, what git ignores there is left out again.
    for pattern in ("**/__pycache__", "**/*.pyc", "**/mlflow.db", "**/mlruns", "**/*.egg-info"):
        assert pattern in patterns


@pytest.mark.e2e
def test_dvc_works_in_the_image_layout_without_git(tmp_path: Path) -> None:
    """The image holds the repo files but no .git: its `dvc config` line is what lets DVC run."""
    app = tmp_path / "app"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        if name.startswith(("tests/", ".ci/", "docs/")) or not (REPO_ROOT / name).is_file():
            continue
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, app / name)
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    env["GIT_CEILING_DIRECTORIES"] = str(tmp_path)  # no git repo above the copy either

    def dvc_status() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["dvc", "status"], cwd=app, env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    assert "not a git repository" in dvc_status().stderr
    (dvc_config,) = [cmd for cmd in run_commands(DOCKERFILES["cpu"]) if cmd.startswith("dvc ")]
    subprocess.run(dvc_config.split(), cwd=app, env=env, check=True, timeout=120)
    result = dvc_status()
    assert result.returncode == 0, result.stderr
    assert "download:" in result.stdout  # it read dvc.yaml: the stages are there, not yet run
