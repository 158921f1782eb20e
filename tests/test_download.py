"""The download stage against a real HTTP server in this process, real files and real sockets."""

from __future__ import annotations

import hashlib
import http.server
import logging
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.core.checksums import file_md5
from pipeline.core.errors import ParamsError, PipelineError
from pipeline.data.download import fetch_archive
from tests.cifar_archive import build_archive
from tests.conftest import REPO_ROOT, free_port, run_stage

# Tiny backoff so retries cost milliseconds; a timeout long enough for a loaded CI machine.
FAST = {"attempts": 3, "backoff_s": 0.01, "timeout_s": 10.0}


class ArchiveServer(http.server.ThreadingHTTPServer):
    """Serves one body at any path, following ``plan``: one action per request, then "ok".

    Actions: "ok"; "drop" (full Content-Length, half the bytes, then close); "stall" (half the
    bytes, then ``stall_s`` of silence, past the client's timeout); or a status code such as "500".
    """

    daemon_threads = True

    def __init__(self, body: bytes) -> None:
        super().__init__(("127.0.0.1", 0), ArchiveHandler)
        self.body = body
        self.plan: list[str] = []
        self.ranges: list[str | None] = []
        self.honour_range = True
        self.stall_s = 1.0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/cifar-10-binary.tar.gz"


class ArchiveHandler(http.server.BaseHTTPRequestHandler):
    server: ArchiveServer

    def do_GET(self) -> None:
        srv = self.server
        asked = self.headers.get("Range")
        with srv.lock:
            srv.ranges.append(asked)
            action = srv.plan.pop(0) if srv.plan else "ok"
        if action.isdigit():
            self.send_error(int(action))
            return
        body, status = srv.body, 200
        match = re.fullmatch(r"bytes=(\d+)-", asked or "")
        if match and srv.honour_range:
            start = int(match[1])
            body, status = srv.body[start:], 206
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(srv.body) - 1}/{len(srv.body)}")
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if action == "ok":
            self.wfile.write(body)
            return
        self.wfile.write(body[: len(body) // 2])
        if action == "stall":
            time.sleep(srv.stall_s)
        # Returning closes the socket (HTTP/1.0): the client sees EOF short of Content-Length.

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "cifar-10-binary.tar.gz"
    build_archive(path, per_batch=20, n_test=50)
    return path


@pytest.fixture
def server(archive: Path) -> Iterator[ArchiveServer]:
    srv = ArchiveServer(archive.read_bytes())
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def assert_nothing_written(dest: Path) -> None:
    assert not dest.exists()
    leftovers = list(dest.parent.iterdir()) if dest.parent.exists() else []
    assert leftovers == [], f"temp files left beside the output: {leftovers}"


def test_dropped_connection_resumes_with_range(server, tmp_path, caplog):
    server.plan = ["drop"]
    dest = tmp_path / "raw" / "a.tar.gz"
    half = len(server.body) // 2
    with caplog.at_level(logging.INFO, logger="pipeline"):
        digest = fetch_archive(server.url, md5_of(server.body), dest, **FAST)
    assert server.ranges == [None, f"bytes={half}-"]
    assert dest.read_bytes() == server.body
    assert digest == file_md5(dest) == md5_of(server.body)
    assert f"from byte {half}" in caplog.text
    assert [p.name for p in dest.parent.iterdir()] == ["a.tar.gz"]


def test_stalled_connection_times_out_and_resumes(server, tmp_path):
    server.plan = ["stall"]
    dest = tmp_path / "a.tar.gz"
    fetch_archive(server.url, md5_of(server.body), dest, attempts=3, backoff_s=0.01, timeout_s=0.2)
    assert server.ranges == [None, f"bytes={len(server.body) // 2}-"]
    assert dest.read_bytes() == server.body


def test_http_5xx_is_retried(server, tmp_path, caplog):
    server.plan = ["500", "503"]
    dest = tmp_path / "a.tar.gz"
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        fetch_archive(server.url, md5_of(server.body), dest, **FAST)
    assert len(server.ranges) == 3
    assert dest.read_bytes() == server.body
    assert "HTTP 500" in caplog.text and "HTTP 503" in caplog.text


def test_http_5xx_every_time_gives_up(server, tmp_path):
    server.plan = ["500"] * 10
    dest = tmp_path / "a.tar.gz"
    with pytest.raises(PipelineError, match=r"after 3 attempts \(HTTP 500"):
        fetch_archive(server.url, None, dest, **FAST)
    assert len(server.ranges) == 3
    assert_nothing_written(dest)


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.plan = ["drop"]
    server.honour_range = False
    dest = tmp_path / "a.tar.gz"
    fetch_archive(server.url, md5_of(server.body), dest, **FAST)
    assert server.ranges == [None, f"bytes={len(server.body) // 2}-"]
    assert dest.read_bytes() == server.body


def test_wrong_md5_writes_nothing(server, tmp_path):
    dest = tmp_path / "raw" / "a.tar.gz"
    wrong = "0" * 32
    with pytest.raises(PipelineError) as err:
        fetch_archive(server.url, wrong, dest, **FAST)
    message = str(err.value)
    assert wrong in message and md5_of(server.body) in message and "data.md5" in message
    assert "\n" not in message
    assert_nothing_written(dest)


def test_http_404_fails_at_once(server, tmp_path):
    server.plan = ["404"]
    dest = tmp_path / "raw" / "a.tar.gz"
    with pytest.raises(PipelineError, match="HTTP 404") as err:
        fetch_archive(server.url, None, dest, **FAST)
    assert server.url in str(err.value)
    assert len(server.ranges) == 1
    assert_nothing_written(dest)


def test_failure_keeps_previous_output_intact(server, tmp_path):
    dest = tmp_path / "a.tar.gz"
    dest.write_bytes(b"previous run")
    server.plan = ["drop"] * 10
    with pytest.raises(PipelineError, match="connection dropped"):
        fetch_archive(server.url, None, dest, **FAST)
    assert dest.read_bytes() == b"previous run"
    assert list(tmp_path.iterdir()) == [dest]


def test_connection_refused_points_at_local_copy(tmp_path, caplog):
    port = free_port()
    dest = tmp_path / "raw" / "a.tar.gz"
    with caplog.at_level(logging.WARNING, logger="pipeline"), pytest.raises(PipelineError) as err:
        fetch_archive(f"http://127.0.0.1:{port}/x.tar.gz", None, dest, **FAST)
    message = str(err.value)
    assert "after 3 attempts" in message and "refused" in message.lower()
    assert "local copy" in message and "data.url=" in message
    assert caplog.text.count("retrying") == 2
    assert_nothing_written(dest)


def test_file_url_and_local_paths(archive, tmp_path, monkeypatch):
    expected = file_md5(archive)
    by_url = tmp_path / "url.tar.gz"
    assert fetch_archive(archive.as_uri(), expected, by_url) == expected
    monkeypatch.chdir(archive.parent)
    relative = tmp_path / "rel.tar.gz"
    assert fetch_archive(archive.name, expected, relative) == expected
    assert by_url.read_bytes() == relative.read_bytes() == archive.read_bytes()
    with pytest.raises(PipelineError, match="md5 mismatch"):
        fetch_archive(archive.name, "f" * 32, tmp_path / "bad" / "x.tar.gz")
    assert_nothing_written(tmp_path / "bad" / "x.tar.gz")


def test_unsupported_scheme_is_a_params_error(tmp_path):
    with pytest.raises(ParamsError, match=r"^data.url: unsupported URL scheme 'ftp' in ftp://x;"):
        fetch_archive("ftp://x", None, tmp_path / "a.tar.gz")
    assert ParamsError.exit_code == 2
    assert_nothing_written(tmp_path / "a.tar.gz")


def test_md5_none_warns_and_writes(archive, tmp_path, caplog):
    dest = tmp_path / "a.tar.gz"
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        digest = fetch_archive(str(archive), None, dest)
    assert "skipping the checksum" in caplog.text
    assert digest == file_md5(archive)
    assert dest.read_bytes() == archive.read_bytes()


def test_missing_local_file(tmp_path):
    dest = tmp_path / "raw" / "a.tar.gz"
    with pytest.raises(PipelineError, match="no such file"):
        fetch_archive(str(tmp_path / "nope.tar.gz"), None, dest)
    assert_nothing_written(dest)


def run_download(*args: str, params: Path) -> subprocess.CompletedProcess[str]:
    return run_stage("download", "--params", str(params), *args, timeout=60)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    # Every key must be set (params.yaml is the one source of values): the repo's file, with a
    # data.url nobody serves.
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["url"] = "https://example.invalid/unused.tar.gz"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


@pytest.mark.e2e
def test_stage_cli(archive, tmp_path, params_file):
    out = tmp_path / "raw" / "x.tar.gz"
    good = file_md5(archive)
    done = run_download(
        *("--set", f"data.url={archive}", "--set", f"data.md5={good}", "--archive", str(out)),
        params=params_file,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == archive.read_bytes()
    assert "B/s" in done.stderr  # the progress bar, with its speed

    out.unlink()
    bad = run_download(
        *("--set", f"data.url={archive}", "--set", f"data.md5={'a' * 32}", "--archive", str(out)),
        params=params_file,
    )
    assert bad.returncode == 1
    assert len(error_lines(bad.stderr)) == 1 and "md5 mismatch" in bad.stderr
    assert_nothing_written(out)

    invalid = run_download("--set", "data.md5=zz", "--archive", str(out), params=params_file)
    assert invalid.returncode == 2
    assert error_lines(invalid.stderr) == [
        "error: params.yaml: data.md5: must be 32 hex digits, or null to skip the check (got 'zz')"
    ]


def test_full_disk(archive, tmp_path, params_file):
    """A real 64 KiB tmpfs, mounted in a private user+mount namespace (no root needed)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    mount = f"mount -t tmpfs -o size=64k tmpfs {mnt}"
    unshare = shutil.which("unshare")
    probe = unshare and subprocess.run([unshare, "-rm", "sh", "-c", mount], capture_output=True)
    if not probe or probe.returncode != 0:
        pytest.skip("unprivileged user namespaces with tmpfs mounts are not available here")
    out = mnt / "raw" / "x.tar.gz"
    stage = [sys.executable, "-m", "stages.download", "--params", str(params_file)]
    stage += ["--set", f"data.url={archive}", "--set", "data.md5=null", "--archive", str(out)]
    # The tmpfs lives only as long as the namespace, so list what is left from inside it.
    script = f'{mount} || exit 99; "$@"; rc=$?; echo "left:$(ls -A {mnt}/raw)"; exit $rc'
    done = subprocess.run(
        [unshare, "-rm", "sh", "-c", script, "sh", *stage],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert error_lines(done.stderr) == [f"error: no space left on device writing {out}"]
    assert done.stdout.strip() == "left:"


@pytest.mark.e2e
def test_leftover_of_a_killed_download_is_removed_by_the_next_run(server, tmp_path, params_file):
    server.plan = ["stall"]
    server.stall_s = 20.0  # the kill lands while the first half sits in the temp file
    out = tmp_path / "raw" / "x.tar.gz"
    args = ["--set", f"data.url={server.url}", "--set", "data.md5=null", "--archive", str(out)]
    stage = [sys.executable, "-m", "stages.download", "--params", str(params_file), *args]
    process = subprocess.Popen(
        stage, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    partial: list[Path] = []
    try:
        deadline = time.monotonic() + 60
        while not partial and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
            if out.parent.is_dir():
                partial = [p for p in out.parent.glob(".x.tar.gz.*.tmp") if p.stat().st_size]
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)
    assert partial, "the download never wrote its temp file"

    done = run_download(*args, params=params_file)
    assert done.returncode == 0, done.stderr
    assert f"removing {partial[0]}, left by an interrupted download" in done.stderr
    assert out.read_bytes() == server.body
    assert [p.name for p in out.parent.iterdir()] == ["x.tar.gz"]


def test_archive_path_naming_a_folder_is_one_line(archive, tmp_path, params_file):
    folder = tmp_path / "raw"
    folder.mkdir()
    done = run_download(
        "--set", f"data.url={archive}", "--archive", str(folder), params=params_file
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: --archive {folder}: is a folder, expected a file"
    ]
    with pytest.raises(PipelineError, match="is a folder: the archive path must name a file"):
        fetch_archive(str(archive), None, folder)
    assert list(folder.iterdir()) == []
