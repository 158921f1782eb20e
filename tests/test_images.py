"""The CPU image for real: built from docker/Dockerfile as shipped, then the pipeline run in it.

Needs a Docker daemon and root: the ``docker`` fixture (tests/conftest.py, tests/docker_fixtures.py)
uses the one that answers or starts its own from Debian's ``docker.io``, stopped by its PID at the
end. No image registry is needed: the two base images the Dockerfile names are made locally
(debootstrap + Debian's python3; ``FROM scratch`` with the Makefile's uv) and passed as build
arguments; they stay in the daemon's data root for later runs.

Skipped only when no daemon can start at all (no root, no apt, dockerd refuses): the reason is
in pytest's summary. Measured on 2 cores: see the README's "Containers" section.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.cifar_archive import build_archive
from tests.conftest import REPO_ROOT
from tests.docker_fixtures import (
    COMPOSE_V1,
    DOCKER_CLI,
    Docker,
    log,
    python_base_image,
    uv_image,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.docker,
    pytest.mark.timeout(1800),
]

APP_UID = 10001
IMAGE = "cifar10-pipeline:test"
STAGES = sorted(
    p.stem for p in (REPO_ROOT / "stages").glob("*.py") if p.stem not in {"__init__", "cli"}
)
# What a Python that imports GitPython prints when there is no git executable.
GIT_WARNING = "Bad git executable"


def git(*args: str) -> str:
    """``git ARGS`` in the repository, its stdout."""
    return subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout


def git_ignored(paths: list[str]) -> list[str]:
    """Those of ``paths`` (relative to the repository) that git ignores."""
    if not paths:
        return []
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=REPO_ROOT,
        input="\n".join(paths),
        capture_output=True,
        text=True,
    )
    return result.stdout.split()


@contextlib.contextmanager
def planted_secrets() -> Iterator[list[str]]:
    """Git-ignored files, each with a unique name, in the work tree while the block runs.

    Each sits where a real one would: generated secrets of `make server`, compose's settings,
    bytecode, a local MLflow store, data. An existing deploy/.env is left as it is (and is then
    itself the planted file).
    """
    token = uuid.uuid4().hex[:8]
    wanted = [
        "deploy/.env",
        f".server/planted-{token}",
        f"pipeline/__pycache__/planted-{token}.pyc",
        f"stages/mlruns/planted-{token}/meta.yaml",
        "cifar10_kfp/mlflow.db",
        f"benchmarks/.cache/planted-{token}",
        f"data/planted-{token}",
    ]
    created: list[Path] = []
    made_dirs: list[Path] = []
    try:
        for name in wanted:
            path = REPO_ROOT / name
            for parent in reversed(path.relative_to(REPO_ROOT).parents):
                folder = REPO_ROOT / parent
                if not folder.exists():
                    folder.mkdir()
                    made_dirs.append(folder)
            if not path.exists():
                path.write_text(f"PLANTED_SECRET={token}\n")
                created.append(path)
        assert git_ignored(wanted) == wanted, "a planted file is not git-ignored"
        yield wanted
    finally:
        for path in created:
            path.unlink(missing_ok=True)
        for folder in reversed(made_dirs):
            with contextlib.suppress(OSError):
                folder.rmdir()


@dataclass
class Built:
    """The image built for this module, and what reached its build context."""

    tag: str
    context_files: set[str]
    planted: list[str]
    build_seconds: float


@pytest.fixture(scope="module")
def built(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """docker/Dockerfile built as shipped, with git-ignored files planted in the work tree."""
    base = python_base_image(docker)
    uv = uv_image(docker)
    probe_dir = tmp_path_factory.mktemp("context")
    probe = probe_dir / "probe.Dockerfile"
    # The context exactly as docker/Dockerfile receives it (same root, same .dockerignore).
    probe.write_text("FROM scratch\nCOPY . /\n")
    with planted_secrets() as planted:
        docker(
            "build", "--file", str(probe),
            "--output", f"type=local,dest={probe_dir / 'tree'}", str(REPO_ROOT),
        )  # fmt: skip
        started = time.monotonic()
        docker(
            "build", "--file", str(REPO_ROOT / "docker" / "Dockerfile"),
            "--build-arg", f"PYTHON_IMAGE={base}",
            "--build-arg", f"UV_IMAGE={uv}",
            "--build-arg", f"GIT_COMMIT={git('rev-parse', 'HEAD').strip()}",
            "--tag", IMAGE, str(REPO_ROOT),
            timeout=1500,
        )  # fmt: skip
        seconds = time.monotonic() - started
    size = docker("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip()
    log(f"{IMAGE}: built in {seconds:.0f} s, {int(size) / 1e9:.2f} GB")
    tree = probe_dir / "tree"
    files = {str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file() or p.is_symlink()}
    return Built(IMAGE, files, planted, seconds)


def in_image(
    docker: Docker, *command: str, args: tuple[str, ...] = (), check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``docker run --rm [ARGS] IMAGE COMMAND``."""
    return docker("run", "--rm", *args, IMAGE, *command, check=check, timeout=900)


def test_no_git_ignored_file_reaches_the_build_context(built: Built) -> None:
    """Secrets (deploy/.env, .server/) and every other git-ignored file stay out of the context."""
    assert not set(built.planted) & built.context_files
    untracked = sorted(built.context_files - set(git("ls-files").splitlines()))
    assert git_ignored(untracked) == []
    assert {"dvc.yaml", "params.yaml", "uv.lock", "stages/train.py"} <= built.context_files


def test_app_holds_only_tracked_files(docker: Docker, built: Built) -> None:
    """/app is what git tracks (and the image's own DVC config): no secret, no stray file."""
    listing = in_image(
        docker, "find", "/app", "-path", "/app/.venv", "-prune", "-o", "-type", "f", "-print"
    ).stdout.split("\n")
    files = {line.removeprefix("/app/") for line in listing if line}
    assert not set(built.planted) & files
    untracked = sorted(files - set(git("ls-files").splitlines()) - {".dvc/config.local"})
    assert git_ignored(untracked) == []
    assert "deploy/.env" not in files and not any(f.startswith(".server/") for f in files)


def test_every_stage_answers_help_with_git_present(docker: Docker, built: Built) -> None:
    """git is in the image: no GitPython warning on any stage; every stage's --help works."""
    script = "git --version && python -c 'import git' && " + " && ".join(
        f"python -m stages.{stage} --help" for stage in STAGES
    )
    result = in_image(docker, "sh", "-c", script)
    assert result.stdout.startswith("git version")
    for stage in STAGES:
        assert f"usage: python -m stages.{stage}" in result.stdout
    assert GIT_WARNING not in result.stderr


def test_named_volume_on_data_starts_owned_by_the_app_user(docker: Docker, built: Built) -> None:
    """A new named volume copies the owner of /app/data, /app/models, /app/reports: the app."""
    volume = f"cifar10-tests-{uuid.uuid4().hex[:8]}"
    try:
        for folder in ("data", "models", "reports"):
            result = in_image(
                docker, "sh", "-c", f"touch /app/{folder}/x && stat -c %u /app/{folder}",
                args=("--volume", f"{volume}-{folder}:/app/{folder}"),
            )  # fmt: skip
            assert result.stdout.strip() == str(APP_UID)
    finally:
        for folder in ("data", "models", "reports"):
            docker("volume", "rm", "--force", f"{volume}-{folder}", check=False)


def test_kfp_artifact_roots_are_writable_by_the_app_user(docker: Docker, built: Built) -> None:
    """A KFP launcher/executor running as the image's user can create folders under /gcs etc."""
    code = (
        "import os\n"
        "from kfp.dsl.executor import makedirs_recursively\n"
        "for root in ('/gcs', '/minio', '/s3'):\n"
        "    makedirs_recursively(f'{root}/bucket/run/task/model/x')\n"
        "    assert os.path.isdir(f'{root}/bucket/run/task/model')\n"
        "print(os.getuid())\n"
    )
    assert in_image(docker, "python", "-c", code).stdout.strip() == str(APP_UID)


def app_owned(folder: Path) -> Path:
    """Create ``folder`` owned by the image's user: what a bind mount needs (see README)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chown(folder, APP_UID, APP_UID)
    return folder


def tiny_archive(folder: Path) -> tuple[Path, str]:
    """A 300-image archive in the official layout; (path, md5)."""
    archive = folder / "cifar-10-binary.tar.gz"
    build_archive(archive, per_batch=50, n_test=50)
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_dvc_repro_in_the_image_with_mounted_outputs(
    docker: Docker, built: Built, tmp_path: Path
) -> None:
    """`dvc repro` as the image's default command: data on a named volume, the rest on bind
    mounts, params from a mounted params.yaml; the run and the registered model land in MLflow."""
    import mlflow

    from pipeline.tracking import metric_names

    archive, md5 = tiny_archive(tmp_path / "input")
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["data"].update(url="/input/cifar-10-binary.tar.gz", md5=md5)
    params["preprocess"]["val_size"] = 50
    params["train"].update(epochs=1, batch_size=64)
    params["register"]["min_accuracy"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    mounts = {
        name: app_owned(tmp_path / name) for name in ("models", "reports", "mlflow", "mlruns")
    }
    volume = f"cifar10-tests-data-{uuid.uuid4().hex[:8]}"
    volume_args = ("--volume", f"{volume}:/app/data")
    try:
        result = in_image(
            docker,
            "dvc", "repro",
            args=(
                "--volume", f"{archive.parent}:/input:ro",
                "--volume", f"{tmp_path / 'params.yaml'}:/app/params.yaml:ro",
                *volume_args,
                "--volume", f"{mounts['models']}:/app/models",
                "--volume", f"{mounts['reports']}:/app/reports",
                "--volume", f"{mounts['mlflow']}:/mlflow",
                # MLflow's default artifact root for a SQLite store: ./mlruns, in /app.
                "--volume", f"{mounts['mlruns']}:/app/mlruns",
                "--env", "MLFLOW_TRACKING_URI=sqlite:////mlflow/mlflow.db",
            ),
            check=False,
        )  # fmt: skip
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-6000:]
        assert GIT_WARNING not in output
        owners = in_image(
            docker, "sh", "-c", "find /app/data -exec stat -c %u {} + | sort -u", args=volume_args
        ).stdout.split()
        assert owners == [str(APP_UID)]
    finally:
        docker("volume", "rm", "--force", volume, check=False)
    metrics = mounts["reports"] / "metrics.json"
    assert metrics.stat().st_uid == APP_UID
    assert json.loads(metrics.read_text())["test_images"] == 50
    assert json.loads((mounts["reports"] / "registry.json").read_text())["decision"] == "promoted"
    assert (mounts["models"] / "model.keras").stat().st_uid == APP_UID
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{mounts['mlflow'] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(params["mlflow"]["experiment_name"])
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert metric_names.TEST_ACCURACY in run.data.metrics
    versions = client.search_model_versions(f"run_id = '{run.info.run_id}'")
    assert len(versions) == 1
    # A path in the container (MLflow writes it with or without file://).
    in_container = Path(urllib.parse.urlparse(run.info.artifact_uri).path)
    run_artifacts = mounts["mlruns"] / in_container.relative_to("/app/mlruns")
    assert any(run_artifacts.rglob("confusion_matrix.png"))


def test_compiled_pipeline_runs_in_the_image_with_kfp_docker_runner(
    docker: Docker, built: Built, tmp_path: Path
) -> None:
    """`python -m cifar10_kfp.compile` in the image, then that YAML run by kfp.local's
    DockerRunner: the four components in the non-root image, end to end."""
    from kfp import components, local

    compiled = app_owned(tmp_path / "compiled")
    in_image(
        docker,
        "python", "-m", "cifar10_kfp.compile", "--cpu-only", "--image", IMAGE,
        "--output", "/compiled/pipeline.yaml",
        args=("--volume", f"{compiled}:/compiled"),
    )  # fmt: skip
    # The pipeline root is mounted into each component at the same path: the app user must be
    # able to write there (README, "Run on Kubeflow").
    root = app_owned(tmp_path / "kfp-root")
    archive, md5 = tiny_archive(app_owned(root / "input"))
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}
    local.init(
        local.DockerRunner(environment=env),
        pipeline_root=str(root),
        raise_on_error=True,
        enable_caching=False,
    )
    pipeline = components.load_component_from_file(str(compiled / "pipeline.yaml"))
    from cifar10_kfp.sections import to_arguments
    from pipeline.core.params import load_params

    params = load_params(
        REPO_ROOT / "params.yaml",
        [f"data.url={archive}", f"data.md5={md5}", "preprocess.val_size=50", "train.epochs=1",
         "train.batch_size=64", "register.min_accuracy=0.0"],
    )  # fmt: skip
    sections = to_arguments(params)
    run = pipeline(**{name: sections[name] for name in ("data", "preprocess", "train", "register")})
    assert run.outputs["test_metrics"].metadata["test_images"] == 50
    assert (Path(run.outputs["model"].path) / "model.keras").is_file()
    confusion = run.outputs["confusion"].metadata
    assert len(confusion["confusionMatrix"]["rows"]) == 10
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    assert client.search_registered_models()


def test_compose_file_is_accepted_by_compose_v1(docker: Docker) -> None:
    """Debian's docker-compose 1.29 reads deploy/compose.yaml (it refuses a top-level `name:`)."""
    env = {
        **docker.env,
        "POSTGRES_PASSWORD": "x",
        "MINIO_ROOT_USER": "x",
        "MINIO_ROOT_PASSWORD": "x",
        "MLFLOW_ADMIN_PASSWORD": "x",
        "MLFLOW_FLASK_SECRET_KEY": "x",
    }
    result = subprocess.run(
        [str(COMPOSE_V1), "--file", "deploy/compose.yaml", "config", "--quiet"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_serving_image_answers_like_the_local_model(
    docker: Docker, built: Built, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The champion's serving image, FROM the image above: labels, non-root, 200 and 400, cap."""
    import numpy as np
    import pandas as pd

    from deploy.serving_client import encode_images
    from tests import mlflow_fixtures as mf
    from tests.conftest import free_port

    root, uri, _ = mf.trained_project(tmp_path_factory, "serving-image")
    mf.evaluate_promoting(root, uri)
    env = docker.env | {"MLFLOW_TRACKING_URI": uri, "PATH": os.environ["PATH"]}
    made = subprocess.run(
        [sys.executable, "-m", "deploy.serve_image", "--pipeline-image", built.tag,
         "--docker", str(DOCKER_CLI), "--tag", "cifar10-serve:test"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    config = json.loads(docker("image", "inspect", "cifar10-serve:test").stdout)[0]["Config"]
    assert config["Labels"]["org.mlflow.model.version"] == "1"
    assert config["User"] == f"{APP_UID}:{APP_UID}"

    for bad in ("abc", "-1", "0"):
        refused = docker("run", "--rm", "-e", f"CIFAR10_SERVE_MAX_IMAGES={bad}",
                         "cifar10-serve:test", check=False, timeout=300)  # fmt: skip
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines() == [
            f"error: CIFAR10_SERVE_MAX_IMAGES='{bad}' is not a whole number of images above 0 "
            "(unset it for the default, 1024)"
        ]

    port = free_port()
    name = f"serve-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", "cifar10-serve:test")
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:  # not up yet: connection refused or reset
                with urllib.request.urlopen(f"{url}/health", timeout=10):
                    break
            except OSError:
                time.sleep(2)
        with np.load(root / "data/prepared/test.npz") as data:
            x = data["x"][:16]
        expected = pd.read_csv(root / "reports/predictions.csv").head(16)["predicted"].tolist()
        for inputs in (x.tolist(), encode_images(x)):
            answer = mf.http_json(f"{url}/invocations", {"inputs": inputs})
            top = [max(row, key=row.get) for row in answer["predictions"]]
            assert top == expected
        status, body = mf.http_call(
            f"{url}/invocations", json.dumps({"inputs": (x[:2] / 255).tolist()}).encode()
        )
        assert status == 400 and "uint8 pixels 0-255 expected" in json.dumps(body)
    finally:
        logs = docker("logs", name, check=False).stderr
        docker("rm", "-f", name, check=False)
    assert "Traceback" not in logs
