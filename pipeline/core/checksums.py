"""MD5 digests of files: the archive check and the data lineage tags use the same ones."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK_BYTES = 1 << 20


def file_md5(path: Path) -> str:
    """MD5 hex digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def files_md5(paths: list[Path]) -> str:
    """One MD5 over several files (their names and digests), stable for the same bytes."""
    digest = hashlib.md5()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(f"{path.name}:{file_md5(path)}\n".encode())
    return digest.hexdigest()
