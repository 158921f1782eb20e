"""Write outputs so that a failure never leaves a half-written file at the target path."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path beside ``target``; rename it into place only if the block succeeds.

    The temp file lives in the same folder so the final ``os.replace`` is atomic. ``suffix`` is
    the temp file's, for writers that insist on one (Keras wants ``.keras``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file 0600; outputs get the usual umask-based mode instead.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Atomically write ``text`` to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike[str], data: Any) -> None:
    """Atomically write ``data`` as pretty JSON with a trailing newline."""
    write_text(target, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_keras_atomically(model: Any, target: Path) -> None:
    """``model.save(target)`` through a temp file beside it, so ``target`` is whole or absent.

    A ``.keras`` file is a zip written by Python (its HDF5 part is built in memory), so a full
    disk is an ordinary OSError here, never a crash in h5py.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    # Keras insists on the .keras suffix, so the temp file keeps it.
    partial = target.with_name(f".{target.stem}.{os.getpid()}.partial.keras")
    try:
        model.save(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def check_writable(folder: str | os.PathLike[str]) -> None:
    """Raise a one-line PipelineError unless a file can be written in ``folder``.

    Stages call it before hours of work, not after (a read-only mount, a full quota). It leaves
    nothing behind: a missing folder is judged by its nearest existing parent.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(existing))
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise PipelineError(f"cannot write to {folder}: {exc.strerror or exc}") from None
