"""The container images, as far as they can be checked without a Docker daemon (there is none here).

hadolint lints both Dockerfiles; the install command each one runs is replayed as a dry run
against uv.lock and must install exactly the locked export; DVC must work in the image's layout,
which has no .git.
"""

from __future__ import annotations

import os
import re
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


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_image_installs_from_the_lock_with_makes_uv_as_a_non_root_user(flavour: str) -> None:
    dockerfile = DOCKERFILES[flavour]
    uv_version = re.search(r"^UV_VERSION := (\S+)$", (REPO_ROOT / "Makefile").read_text(), re.M)
    assert uv_version is not None
    items = instructions(dockerfile)
    assert f"FROM ghcr.io/astral-sh/uv:{uv_version[1]} AS uv" in items
    sync = uv_sync_command(dockerfile)
    assert {"--frozen", "--no-dev"} <= set(sync)
    extras = {sync[i + 1] for i, arg in enumerate(sync) if arg == "--extra"}
    assert extras == {flavour, "kubeflow", "s3"}
    assert sum(item.startswith("FROM python:") for item in items) == 2  # build + runtime stages
    (user,) = [item.split()[1] for item in items if item.startswith("USER ")]
    assert user.split(":")[0] not in {"0", "root"}
    assert "WORKDIR /app" in items


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


def test_dockerignore_keeps_environments_data_and_runs_out() -> None:
    patterns = set((REPO_ROOT / ".dockerignore").read_text().split())
    for heavy in (".git", ".venv", "/data", "/models", "mlruns", "mlflow.db", ".dvc/cache"):
        assert heavy in patterns
    for needed in ("pipeline", "stages", "dvc.yaml", "params.yaml", ".dvc", "uv.lock"):
        assert not any(p.strip("/") == needed for p in patterns)


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
