"""Fetch the raw CIFAR-10 archive from http(s)://, file:// or a local path, verified by md5.

The archive is streamed to a temp file beside the target and renamed into place only once its
md5 matches, so a failed or interrupted download never leaves a partial file at the output path.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pipeline.core.atomic import atomic_path
from pipeline.core.checksums import CHUNK_BYTES
from pipeline.core.errors import ParamsError, PipelineError
from pipeline.core.locks import exclusive_lock

log = logging.getLogger("pipeline")

LOCAL_COPY_HINT = (
    "to use a local copy instead: "
    "dvc exp run -S data.url=/path/to/cifar-10-binary.tar.gz -S data.md5=<its md5>"
)
# A second download to the same file gives up after this long, naming the one in progress.
LOCK_WAIT_S = 3.0
# Failures worth another attempt: URLError covers DNS failures and refused connections, SSLError
# a TLS connection cut short.
_TRANSIENT = (
    urllib.error.URLError,
    ConnectionError,
    TimeoutError,
    http.client.HTTPException,
    ssl.SSLError,
)


def fetch_archive(
    url: str,
    md5: str | None,
    dest: Path,
    *,
    attempts: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
) -> str:
    """Write the file at ``url`` to ``dest`` and return its md5 hex digest.

    ``url`` is http(s)://, file:// or a local path (relative to the cwd). Transient network
    failures are retried ``attempts`` times with exponential backoff from ``backoff_s``,
    resuming with an HTTP Range request where the server allows it. ``md5`` None skips the
    check with a warning. Raises PipelineError on any failure, with nothing written at ``dest``.
    """
    dest = Path(dest)
    if dest.is_dir():
        raise PipelineError(f"{dest} is a folder: the archive path must name a file")
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("", "file", "http", "https"):
        # A bad param like any other: exit 2, like the schema's refusals.
        raise ParamsError(
            f"data.url: unsupported URL scheme {scheme!r} in {url}; "
            "use http(s)://, file:// or a path"
        )
    if md5 is None:
        log.warning("data.md5 is null: skipping the checksum of %s", url)
    source = None if scheme in ("http", "https") else _local_path(url)
    # The lock keeps a second download from writing beside this one, and from deleting its temp
    # file as a leftover.
    with exclusive_lock(
        dest.with_name(f".{dest.name}.lock"),
        f"the download to {dest}",
        LOCK_WAIT_S,
        "another download is writing it: wait for it, or stop it",
    ):
        _remove_leftovers(dest)
        digest = _fetch(url, md5, dest, source, attempts, backoff_s, timeout_s)
    log.info("wrote %s (md5 %s)", dest, digest)
    return digest


def _fetch(
    url: str,
    md5: str | None,
    dest: Path,
    source: Path | None,
    attempts: int,
    backoff_s: float,
    timeout_s: float,
) -> str:
    """Stream ``url`` (or copy ``source``) to a temp file beside ``dest``, check, rename."""
    try:
        with (
            atomic_path(dest) as tmp,
            tmp.open("wb") as out,
            _progress(dest.name) as bar,
            # Retry warnings go above the bar instead of onto its line.
            logging_redirect_tqdm(),
        ):
            if source is None:
                digest = _download(url, out, bar, attempts, backoff_s, timeout_s)
            else:
                digest = _copy_local(source, out, bar)
            # Flush now so a full disk surfaces here, inside the temp file's cleanup.
            out.flush()
            _check_md5(url, md5, digest)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise PipelineError(f"no space left on device writing {dest}") from None
        raise
    return digest


def _remove_leftovers(dest: Path) -> None:
    """Delete the temp files of downloads that were killed (``kill -9`` skips every cleanup)."""
    if not dest.parent.is_dir():
        return
    # The names atomic_path gives its temp files: ".<name>.<random>.tmp".
    prefix = f".{dest.name}."
    for path in dest.parent.iterdir():
        if path.name.startswith(prefix) and path.name.endswith(".tmp") and path.is_file():
            log.warning("removing %s, left by an interrupted download", path)
            path.unlink(missing_ok=True)


def _local_path(url: str) -> Path:
    """The existing file that a file:// URL or plain path names."""
    if url.lower().startswith("file:"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    else:
        path = Path(url).expanduser()
    if not path.is_file():
        raise PipelineError(f"data.url: no such file: {path} (cwd {Path.cwd()})")
    return path


def _progress(name: str) -> tqdm:
    # Kept on when stderr is not a tty too: CI and DVC logs still show size and speed.
    return tqdm(desc=name, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)


def _copy_local(source: Path, out: BinaryIO, bar: tqdm) -> str:
    digest = hashlib.md5()
    bar.reset(total=source.stat().st_size)
    with source.open("rb") as src:
        while chunk := src.read(CHUNK_BYTES):
            out.write(chunk)
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _download(
    url: str, out: BinaryIO, bar: tqdm, attempts: int, backoff_s: float, timeout_s: float
) -> str:
    digest = hashlib.md5()
    reason = "no attempt made"
    for attempt in range(1, attempts + 1):
        try:
            offset = out.tell()
            with _open_stream(url, offset, timeout_s) as response:
                if offset and not _resumes_at(response, offset):
                    log.warning("server did not resume at byte %d: restarting from 0", offset)
                    out.seek(0)
                    out.truncate()
                    digest = hashlib.md5()
                    if response.status != 200:
                        raise http.client.HTTPException(f"unusable {response.status} response")
                _stream(response, out, digest, bar)
            return digest.hexdigest()
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code < 500:
                raise PipelineError(f"HTTP {exc.code} {exc.reason} for {url}") from None
            reason = f"HTTP {exc.code} {exc.reason}"
        except _TRANSIENT as exc:
            reason = _describe(exc, timeout_s)
        if attempt < attempts:
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning(
                "download attempt %d/%d failed: %s; retrying in %.1f s from byte %d",
                *(attempt, attempts, reason, delay, out.tell()),
            )
            time.sleep(delay)
    raise PipelineError(
        f"could not download {url} after {attempts} attempts ({reason}); {LOCAL_COPY_HINT}"
    )


def _open_stream(url: str, offset: int, timeout_s: float) -> http.client.HTTPResponse:
    """GET ``url`` with a timeout, asking for the bytes from ``offset`` on when it is not 0."""
    request = urllib.request.Request(url, headers={"User-Agent": "cifar10-pipeline"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout_s)


def _resumes_at(response: http.client.HTTPResponse, offset: int) -> bool:
    """Whether the body continues the file at ``offset``: a 206 whose Content-Range says so."""
    content_range = response.headers.get("Content-Range", "")
    return response.status == 206 and re.match(rf"bytes {offset}-\d+/", content_range) is not None


def _stream(
    response: http.client.HTTPResponse, out: BinaryIO, digest: hashlib._Hash, bar: tqdm
) -> None:
    length = response.headers.get("Content-Length")
    total = out.tell() + int(length) if length is not None else None
    bar.reset(total=total)
    bar.update(out.tell())
    # read1 hands over what has arrived: read(n) would drop a partly filled chunk on a timeout or
    # reset, and a retry would then resume from further back than it needs to.
    while chunk := response.read1(CHUNK_BYTES):
        out.write(chunk)
        digest.update(chunk)
        bar.update(len(chunk))
    # An early close reads as b"" rather than an error, so count the bytes.
    if total is not None and out.tell() < total:
        raise http.client.IncompleteRead(b"", total - out.tell())


def _describe(exc: Exception, timeout_s: float) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection dropped with {exc.expected} bytes to go"
    if isinstance(exc, TimeoutError):
        return f"no data for {timeout_s:g} s"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _check_md5(url: str, expected: str | None, actual: str) -> None:
    if expected is not None and actual != expected.lower():
        raise PipelineError(
            f"md5 mismatch for {url}: expected {expected}, got {actual}; if this file is the one "
            f"you want, set data.md5: {actual} in params.yaml (or -S data.md5={actual}), "
            "otherwise point data.url at an intact copy"
        )
