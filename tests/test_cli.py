"""The command line every stage shares: how failures reach the user."""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Iterator

import pytest

from stages.cli import call_stage


@pytest.fixture(autouse=True)
def _keep_sigterm() -> Iterator[None]:
    # call_stage turns SIGTERM into KeyboardInterrupt for the stage: not for the test process.
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


def fail_with(error: OSError) -> None:
    raise error


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/app/data/raw"),
         f"error: cannot write /app/data/raw: Permission denied; this process runs as uid "
         f"{os.getuid()}: make the folder writable by it"),
        (OSError(errno.EROFS, "Read-only file system", "reports/metrics.json"),
         "error: cannot write reports/metrics.json: Read-only file system"),
        (OSError(errno.ENOSPC, "No space left on device"),
         "error: cannot write: No space left on device"),
    ],
)  # fmt: skip
def test_a_machine_error_is_one_line_not_a_traceback(
    error: OSError, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A root-owned volume on /app/data once ended the stage in a PermissionError traceback.
    with pytest.raises(SystemExit) as exit_:
        call_stage(lambda: fail_with(error))
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [shown]


def test_any_other_os_error_is_a_bug_and_keeps_its_traceback() -> None:
    with pytest.raises(FileNotFoundError):
        call_stage(lambda: fail_with(FileNotFoundError(errno.ENOENT, "No such file", "x")))
