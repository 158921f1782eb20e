"""Build small CIFAR-10 archives in the official binary layout, with known pixels.

Used by the tests instead of the real 163 MiB archive.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
RECORD_BYTES = 3073
PREFIX = "cifar-10-batches-bin"


@dataclass
class TinyCifar:
    """What an archive holds, in model layout: x is uint8 HWC, y uint8."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def encode_records(x: np.ndarray, y: np.ndarray) -> bytes:
    """HWC uint8 images + labels -> official records (label, 1024 R, 1024 G, 1024 B)."""
    planes = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
    return np.concatenate([y.reshape(-1, 1).astype(np.uint8), planes], axis=1).tobytes()


def random_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random pixels, labels cycling over the ten classes so every split is balanced."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    y = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(y)
    return x, y


def archive_members(
    per_batch: int = 60, n_test: int = 50, seed: int = 0
) -> tuple[TinyCifar, dict[str, bytes]]:
    """What a valid archive holds, and its members (names relative to the batches folder).

    Five train batches of ``per_batch`` records, a test batch of ``n_test``, the class names.
    """
    train_x, train_y = random_images(5 * per_batch, seed)
    test_x, test_y = random_images(n_test, seed + 1)
    files: dict[str, bytes] = {
        f"data_batch_{i + 1}.bin": encode_records(
            train_x[i * per_batch : (i + 1) * per_batch],
            train_y[i * per_batch : (i + 1) * per_batch],
        )
        for i in range(5)
    }
    files["test_batch.bin"] = encode_records(test_x, test_y)
    files["batches.meta.txt"] = ("\n".join(CLASSES) + "\n\n").encode()
    files["readme.html"] = b"<html>tiny test archive</html>"
    return TinyCifar(train_x, train_y, test_x, test_y), files


def build_archive(
    path: Path,
    per_batch: int = 60,
    n_test: int = 50,
    seed: int = 0,
    members: dict[str, bytes] | None = None,
) -> TinyCifar:
    """Write a .tar.gz at ``path``: five train batches of ``per_batch`` records, a test batch.

    ``members`` replaces or adds archive members (names relative to the batches folder), to
    inject bad content.
    """
    known, files = archive_members(per_batch, n_test, seed)
    files.update(members or {})
    write_tar_gz(path, {f"{PREFIX}/{name}": data for name, data in files.items()})
    return known


def write_tar_gz(path: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (member name -> bytes) as a gzip'd tar with fixed mtimes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
