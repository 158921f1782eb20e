"""A Docker daemon and registry-free base images for the tests that build and run images.

Used by tests/test_images.py (the pipeline's CPU image) and tests/test_compose.py (the team
stack), through the ``docker`` fixture of tests/conftest.py. When no daemon answers, Debian's
``docker.io`` is installed and our own ``dockerd`` started (own socket, own data root under
CACHE, stopped by its PID at the end; a daemon that was already running is used and left alone).
No image registry is needed: the base images the Dockerfiles name are made here and passed as
build arguments, a Debian bookworm from ``debootstrap --variant=minbase`` with Debian's python3
(trusting the host's CA certificates, so ``uv`` in a build reaches PyPI through whatever proxy the
host uses) and ``FROM scratch`` with the Makefile's uv. Both stay in the data root: a later run
reuses them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.core.paths import REPO_ROOT

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
    print(f"[docker {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def answers(env: dict[str, str]) -> bool:
    """Whether a daemon answers ``docker info`` in this environment."""
    try:
        result = subprocess.run([str(DOCKER_CLI), "info"], env=env, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def install_debian_packages() -> str | None:
    """Install Docker, Compose v1 and debootstrap from Debian when missing; why not, or None."""
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
    """Start our dockerd (own socket, own data root); (daemon, "") or (None, reason)."""
    if os.geteuid() != 0:
        return None, "no Docker daemon answers and starting one needs root"
    env = {**os.environ, "DOCKER_HOST": OWN_SOCKET, "DOCKER_BUILDKIT": "1"}
    pidfile = Path(f"{OWN_RUN}.pid")
    if answers(env) and pidfile.is_file():
        # Ours, left running by a run that was killed: adopt it, so it is stopped at the end.
        log(f"adopting our dockerd left running (pid {pidfile.read_text().strip()})")
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
    """Stop our dockerd that an earlier, killed run left running, by its pid file."""
    pidfile = Path(f"{OWN_RUN}.pid")
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        if Path(f"/proc/{pid}/exe").resolve() == DOCKERD.resolve():
            os.kill(pid, signal.SIGTERM)
            for _ in range(60):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(1)


@contextlib.contextmanager
def running_daemon() -> Iterator[Docker]:
    """A daemon: the one that answers already, else our own (stopped by its PID at the end).

    Skips the calling test (with the reason) only when no daemon can start at all.
    """
    reason = install_debian_packages()
    if reason is not None:
        pytest.skip(f"no Docker daemon can start here: {reason}")
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    if answers(env):
        log("using the Docker daemon that already runs (left running afterwards)")
        with daemon_environment(Docker(env)) as daemon:
            yield daemon
        return
    with exclusive_own_daemon():
        daemon, reason = start_own_daemon()
        if daemon is None:
            pytest.skip(f"no Docker daemon can start here: {reason}")
        with daemon_environment(daemon):
            yield daemon


@contextlib.contextmanager
def exclusive_own_daemon(wait_s: float = 3600) -> Iterator[None]:
    """Hold CACHE/daemon.lock while our dockerd runs: a second test session on this machine
    waits here instead of adopting that daemon (and stopping it under the first one's feet)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "daemon.lock").open("w") as lock:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test session held our dockerd for {wait_s:.0f} s")
                if deadline - time.monotonic() >= wait_s - 1:
                    log("another test session uses our dockerd: waiting for it to finish")
                time.sleep(5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def daemon_environment(daemon: Docker) -> Iterator[Docker]:
    """DOCKER_HOST set for this process while the block runs; our daemon stopped afterwards."""
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
