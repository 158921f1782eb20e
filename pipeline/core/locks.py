"""Exclusive file locks between processes on one machine, that say who holds them.

``fcntl.flock`` locks die with their process, so a killed holder (even ``kill -9``) never leaves
a stale lock behind. The lock file holds the holder's pid, host and start time, for the message
the next process shows, and is removed on release.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pipeline.core.errors import PipelineError

POLL_S = 0.1


class LockBusy(PipelineError):
    """Another process held the lock for the whole wait."""


@contextlib.contextmanager
def exclusive_lock(path: Path, what: str, wait_s: float, hint: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block, waiting at most ``wait_s`` seconds.

    ``what`` names the locked thing in the error ("the checkpoint of these params"); ``hint``
    says what to do about it. Raises LockBusy naming the holder if the lock stays taken.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                message = f"{what} is locked by {holder(path)} (lock file {path})"
                raise LockBusy(f"{message}; {hint}" if hint else message) from None
            time.sleep(POLL_S)
            continue
        # The previous holder unlinks the file on release: if it did so after we opened it, we
        # locked an orphan inode that nobody else will ever see, so start over.
        if _same_file(fd, path):
            break
        os.close(fd)
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
        # Only for the message of whoever waits: a full disk must not stop the work over it.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(record).encode())
        yield
    finally:
        # Unlink while still holding the lock, so no one can lock the file we are deleting.
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def holder(path: Path) -> str:
    """Who holds the lock at ``path``, as the lock file says: "pid 12 on host h since ..."."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        return f"pid {record['pid']} on host {record['host']} since {record['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        # The holder has the lock but has not written its record yet.
        return "another process"


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
