"""The CPU image for real: built from docker/Dockerfile as shipped, then the pipeline run in it.

Needs a Docker daemon and root. When none answers, Debian's ``docker.io`` is installed and this
module starts its own ``dockerd`` (own socket, own data root under CACHE, stopped by its PID at the
end; a daemon that was already running is used and left alone). No image registry is needed: the
two base images the Dockerfile names are made here and passed as build arguments, a Debian
bookworm from ``debootstrap --variant=minbase`` with Debian's python3 (trusting the host's CA
certificates, so the build's ``uv sync`` reaches PyPI through whatever proxy the host uses) and
``FROM scratch`` with the Makefile's uv. Both stay in the data root: a later run reuses them.

Skipped only when no daemon can start at all (no root, no apt, dockerd refuses): the reason is
in pytest's summary. Measured on 2 cores: see the README's "Containers" section.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.cifar_archive import build_archive
from tests.conftest import REPO_ROOT

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.docker,
    pytest.mark.timeout(1800),
]

# Debian's docker.io: its CLI has BuildKit built in (`RUN --mount`), unlike a newer docker CLI
# without the buildx plugin.
DOCKER_CLI = Path("/usr/bin/docker")
DOCKERD = Path("/usr/sbin/dockerd")
COMPOSE_V1 = Path("/usr/bin/docker-compose")
DEBIAN_PACKAGES = ("docker.io", "debootstrap", "iptables", "docker-compose")
# Kept between runs on one machine: the daemon's data root (base images, BuildKit's uv cache).
CACHE = Path(os.environ.get("CIFAR10_DOCKER_CACHE", "/var/cache/cifar10-pipeline-tests"))
# Our own daemon's socket, exec root and pid file: short paths (a socket path has a length limit).
OWN_RUN = Path("/run/cifar10-tests-docker")
OWN_SOCKET = f"unix://{OWN_RUN}.sock"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
APP_UID = 10001
IMAGE = "cifar10-pipeline:test"
STAGES = sorted(
    p.stem for p in (REPO_ROOT / "stages").glob("*.py") if p.stem not in {"__init__", "cli"}
)
# What a Python that imports GitPython prints when there is no git executable.
GIT_WARNING = "Bad git executable"


@dataclass
class Docker:
    """A Docker daemon to talk to, through Debian's CLI."""

    env: dict[str, str]
    own_process: subprocess.Popen[bytes] | None = None

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 600, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        """``docker ARGS``; raises with the output when ``check`` and it fails."""
        result = subprocess.run(
            [str(DOCKER_CLI), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,  # type: ignore[arg-type]
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def has_image(self, tag: str) -> bool:
        """Whether the daemon holds an image of that name."""
        return self("image", "inspect", tag, check=False, timeout=60).returncode == 0


def log(message: str) -> None:
    """A progress line on the terminal (pytest -s) and in the captured output of a failure."""
    print(f"[test_images {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def answers(env: dict[str, str]) -> bool:
    """Whether a daemon answers ``docker info`` in this environment."""
    try:
        result = subprocess.run([str(DOCKER_CLI), "info"], env=env, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def install_debian_packages() -> str | None:
    """Install what this module uses from Debian when missing; the reason it could not, or None."""
    needed = [DOCKER_CLI, DOCKERD, COMPOSE_V1, Path("/usr/sbin/debootstrap")]
    if all(path.exists() for path in needed):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"Docker tools missing ({', '.join(map(str, needed))}) and no root apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"installing {' '.join(DEBIAN_PACKAGES)} from Debian")
    for args in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *DEBIAN_PACKAGES],
    ):
        result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            return f"{' '.join(args)} failed: {result.stderr.strip()[-500:]}"
    return None


def start_own_daemon() -> tuple[Docker | None, str]:
    """Start dockerd with this module's socket and data root; (daemon, "") or (None, reason)."""
    if os.geteuid() != 0:
        return None, "no Docker daemon answers and starting one needs root"
    env = {**os.environ, "DOCKER_HOST": OWN_SOCKET, "DOCKER_BUILDKIT": "1"}
    pidfile = Path(f"{OWN_RUN}.pid")
    if answers(env) and pidfile.is_file():
        # Ours, left running by a run that was killed: adopt it, so it is stopped at the end.
        log(f"adopting this module's dockerd left running (pid {pidfile.read_text().strip()})")
        return Docker(env, own_process=None), ""
    CACHE.mkdir(parents=True, exist_ok=True)
    logfile = CACHE / "dockerd.log"
    command = [
        str(DOCKERD),
        "--data-root", str(CACHE / "docker"),
        "--exec-root", str(OWN_RUN),
        "--pidfile", str(pidfile),
        "--host", OWN_SOCKET,
    ]  # fmt: skip
    with logfile.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if answers(env):
            log(f"own dockerd up (pid {process.pid}, data root {CACHE / 'docker'})")
            return Docker(env, own_process=process), ""
        if process.poll() is not None:
            break
        time.sleep(1)
    stop_process(process)
    tail = logfile.read_text(errors="replace").strip().splitlines()[-5:]
    return None, "dockerd did not start: " + " | ".join(tail)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to that one process (dockerd stops its containers), SIGKILL if it hangs."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def stop_adopted_daemon() -> None:
    """Stop a dockerd of this module that an earlier, killed run left, by its pid file."""
    pidfile = Path(f"{OWN_RUN}.pid")
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        if Path(f"/proc/{pid}/exe").resolve() == DOCKERD.resolve():
            os.kill(pid, signal.SIGTERM)
            for _ in range(60):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(1)


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    """A daemon: the one that answers already, else this module's own (stopped at the end)."""
    reason = install_debian_packages()
    if reason is not None:
        pytest.skip(f"no Docker daemon can start here: {reason}")
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    if answers(env):
        log("using the Docker daemon that already runs (left running afterwards)")
        daemon: Docker | None = Docker(env)
    else:
        daemon, reason = start_own_daemon()
        if daemon is None:
            pytest.skip(f"no Docker daemon can start here: {reason}")
    assert daemon is not None
    # kfp.local's DockerRunner talks to the daemon through docker-py, which reads DOCKER_HOST.
    previous = os.environ.get("DOCKER_HOST")
    if "DOCKER_HOST" in daemon.env:
        os.environ["DOCKER_HOST"] = daemon.env["DOCKER_HOST"]
    try:
        yield daemon
    finally:
        if previous is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = previous
        if daemon.own_process is not None:
            # Only in our own daemon: old builds of this image, and build cache beyond what a
            # warm rebuild uses (the lock's environment and uv's download cache, about 6 GB).
            daemon("image", "prune", "--force", check=False)
            daemon("builder", "prune", "--force", "--keep-storage", "8GB", check=False)
            stop_process(daemon.own_process)
        elif daemon.env.get("DOCKER_HOST") == OWN_SOCKET:
            stop_adopted_daemon()


def python_base_image(docker: Docker) -> str:
    """Debian bookworm (minbase) with Debian's python3, made here; reused while its inputs hold."""
    recipe = f"bookworm minbase python3 ca-certificates netbase {DEBIAN_MIRROR} v1"
    key = hashlib.sha256(recipe.encode() + HOST_CA_BUNDLE.read_bytes()).hexdigest()[:12]
    tag = f"cifar10-tests/python:bookworm-{key}"
    if docker.has_image(tag):
        log(f"base image {tag} (cached)")
        return tag
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
        pytest.fail("debootstrap is missing: apt-get install debootstrap")
    started = time.monotonic()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix="rootfs-"))
    try:
        rootfs = tmp / "rootfs"
        result = subprocess.run(
            ["/usr/sbin/debootstrap", "--variant=minbase",
             "--include=python3,ca-certificates,netbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
            capture_output=True, text=True, timeout=1200,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        # The host's CA bundle, so TLS through a proxy that re-signs (as the host's may) works.
        shutil.copy(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/host-ca-certificates.crt")
        tar = subprocess.Popen(
            ["tar", "--one-file-system", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
        )
        docker(
            "import",
            "--change", "ENV LANG=C.UTF-8",
            "--change", "ENV SSL_CERT_FILE=/etc/ssl/certs/host-ca-certificates.crt",
            "--change", 'CMD ["python3"]',
            "-", tag,
            stdin=tar.stdout, timeout=600,
        )  # fmt: skip
        assert tar.wait(timeout=60) == 0
    finally:
        remove_rootfs(tmp)
    log(f"base image {tag} made in {time.monotonic() - started:.0f} s")
    return tag


def remove_rootfs(folder: Path) -> None:
    """Delete a debootstrap target, after unmounting what a failed debootstrap left mounted in
    it (/proc, /sys, maybe the host's /dev bound): deleting through those would reach the host."""
    inside = str(folder.resolve()) + "/"
    mounts = [
        line.split()[1].encode().decode("unicode_escape")
        for line in Path("/proc/mounts").read_text().splitlines()
    ]
    for mount in sorted((m for m in mounts if m.startswith(inside)), reverse=True):
        subprocess.run(["umount", "--lazy", mount], check=False)
    still = [m for m in Path("/proc/mounts").read_text().split() if m.startswith(inside)]
    if still:
        log(f"left {folder} in place: {still} still mounted")
        return
    shutil.rmtree(folder, ignore_errors=True)


def uv_image(docker: Docker) -> str:
    """``FROM scratch`` with the Makefile's uv at /uv, as ghcr.io/astral-sh/uv has it."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    (version,) = (
        line.split(":=")[1].strip()
        for line in makefile.splitlines()
        if line.startswith("UV_VERSION")
    )
    uv = REPO_ROOT / ".tools" / "bin" / "uv"
    found = subprocess.run([str(uv), "--version"], capture_output=True, text=True, check=True)
    assert found.stdout.split()[1] == version, f"{uv} is not the Makefile's uv {version}"
    tag = f"cifar10-tests/uv:{version}"
    if docker.has_image(tag):
        return tag
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("uv", "uvx"):
            shutil.copy2(uv.with_name(name), Path(tmp) / name)
        (Path(tmp) / "Dockerfile").write_text('FROM scratch\nCOPY uv uvx /\nENTRYPOINT ["/uv"]\n')
        docker("build", "--quiet", "--tag", tag, tmp)
    return tag


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
    run = pipeline(
        data_url=str(archive),
        data_md5=md5,
        preprocess_val_size=50,
        train_epochs=1,
        train_batch_size=64,
        register_min_accuracy=0.0,
    )
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
