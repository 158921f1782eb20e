"""Read the official CIFAR-10 binary archive into numpy arrays, in memory.

The archive is streamed member by member: nothing is extracted to disk (so a hostile member name
can never write outside the project) and nothing is unpickled (the binary release needs no pickle).
Nor can a small archive that expands to gigabytes cost more than the real one: member sizes are
checked from the tar headers before a byte is read, and the whole stream is capped.
"""

from __future__ import annotations

import gzip
import os
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.shapes import CHANNELS, IMAGE_SIZE, NUM_CLASSES

# 1 label byte, then the red, green and blue planes of a 32x32 image.
RECORD_BYTES = 1 + CHANNELS * IMAGE_SIZE * IMAGE_SIZE

TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_BATCH = "test_batch.bin"
META_FILE = "batches.meta.txt"
REQUIRED_MEMBERS = (*TRAIN_BATCHES, TEST_BATCH, META_FILE)

# The limits of the official release, read from its tar headers: a batch holds 10,000 records
# (30,730,000 bytes), batches.meta.txt is 61 bytes, readme.html 570; nine entries in all, and the
# gzip stream expands to 184,391,680 bytes. Anything beyond is refused before it is read.
MAX_BATCH_BYTES = 10_000 * RECORD_BYTES
MAX_OTHER_MEMBER_BYTES = 1 << 20
MAX_MEMBERS = 64
MAX_EXPANDED_BYTES = 200_000_000

# Read in 1 MiB chunks when draining the rest of the gzip stream.
_CHUNK = 1 << 20
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")

# One decoded batch: images (N x 32 x 32 x 3) and labels (N).
Batch = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class CifarData:
    """The whole data set in model layout: x is uint8 N x 32 x 32 x 3 (HWC, RGB), y is uint8 N."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]


def read_cifar_archive(path: str | os.PathLike[str]) -> CifarData:
    """Read ``cifar-10-binary.tar.gz`` at ``path`` and decode its six batches and class names.

    Training batches are concatenated in order 1..5. Raises PipelineError, naming the member,
    for a missing or unreadable archive, unsafe or missing members, and malformed contents.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: archive not found; run `dvc repro download` first")
    batches, classes = _read_members(path)
    train = [batches[name] for name in TRAIN_BATCHES]
    test_x, test_y = batches[TEST_BATCH]
    return CifarData(
        train_x=np.concatenate([x for x, _ in train]),
        train_y=np.concatenate([y for _, y in train]),
        test_x=test_x,
        test_y=test_y,
        classes=classes,
    )


def decode_records(data: bytes, where: str = "records") -> tuple[np.ndarray, np.ndarray]:
    """Decode official records (label, 1024 R, 1024 G, 1024 B bytes) to HWC uint8 images + labels.

    ``where`` names the source in error messages.
    """
    if not data:
        raise PipelineError(f"{where}: holds no records")
    if len(data) % RECORD_BYTES:
        raise PipelineError(
            f"{where}: size {len(data):,} bytes is not a multiple of the {RECORD_BYTES:,}-byte"
            " record; the file is truncated or not a CIFAR-10 batch"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].copy()
    _check_labels(labels, where)
    # Each record stores whole colour planes (CHW); the model wants pixels with their channels last.
    planes = records[:, 1:].reshape(-1, CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
    images = np.ascontiguousarray(planes.transpose(0, 2, 3, 1))
    return images, labels


def _check_labels(labels: np.ndarray, where: str) -> None:
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        first = int(bad[0])
        raise PipelineError(
            f"{where}: record {first} has label {int(labels[first])}; labels must be 0-9"
            f" ({bad.size} bad record(s))"
        )


def _read_members(path: Path) -> tuple[dict[str, Batch], list[str]]:
    """Stream the archive once; decode each batch as it arrives and parse the class names.

    Decoding member by member keeps at most one member's raw bytes in memory.
    """
    batches: dict[str, Batch] = {}
    classes: list[str] = []
    seen: dict[str, str] = {}  # file name -> full member name, to report duplicates
    where = "at the start of the archive"
    try:
        # gzip.open rather than tarfile's own "r|gz" so the CRC in the gzip trailer is checked.
        with gzip.open(path, "rb") as raw:
            gz = _CappedStream(raw, path)
            with tarfile.open(fileobj=gz, mode="r|") as tar:
                for count, member in enumerate(tar, start=1):
                    where = f"while reading member {member.name!r}"
                    if count > MAX_MEMBERS:
                        raise PipelineError(
                            f"{path}: holds more than {MAX_MEMBERS} members (the CIFAR-10 binary"
                            " release has 9); refusing this archive"
                        )
                    _check_member(path, member)
                    name = PurePosixPath(member.name).name
                    if not member.isreg() or name not in REQUIRED_MEMBERS:
                        continue
                    if name in seen:
                        raise PipelineError(
                            f"{path}: member {name} appears twice, as {seen[name]!r}"
                            f" and {member.name!r}"
                        )
                    seen[name] = member.name
                    data = _read_member(path, tar, member)
                    context = f"{path}: member {member.name!r}"
                    if name == META_FILE:
                        classes = _parse_classes(data, context)
                    else:
                        batches[name] = decode_records(data, context)
                where = "after the last member"
                # Drain the stream: gzip verifies its CRC only once the end is reached.
                while gz.read(_CHUNK):
                    pass
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        # gzip.BadGzipFile is an OSError.
        raise PipelineError(
            f"{path}: not a valid .tar.gz, or truncated ({where}): {exc}; delete it and run"
            " `dvc repro download` again"
        ) from None
    _check_complete(path, seen)
    return batches, classes


def _read_member(path: Path, tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    stream = tar.extractfile(member)
    if stream is None:  # pragma: no cover - isreg() members always have a stream
        raise PipelineError(f"{path}: member {member.name!r}: cannot be read")
    data = stream.read()
    if len(data) != member.size:
        raise PipelineError(
            f"{path}: member {member.name!r}: ends after {len(data):,} of {member.size:,} bytes"
        )
    return data


class _CappedStream:
    """The decompressed archive, refused once it expands beyond what the real one does."""

    def __init__(self, raw: gzip.GzipFile, path: Path) -> None:
        self._raw = raw
        self._path = path
        self._total = 0

    def read(self, size: int = -1) -> bytes:
        allowed = MAX_EXPANDED_BYTES + 1 - self._total
        data = self._raw.read(allowed if size < 0 else min(size, allowed))
        self._total += len(data)
        if self._total > MAX_EXPANDED_BYTES:
            raise PipelineError(
                f"{self._path}: expands to more than {MAX_EXPANDED_BYTES:,} bytes (the CIFAR-10"
                " binary release: 184,391,680); refusing this archive"
            )
        return data


def _check_member(path: Path, member: tarfile.TarInfo) -> None:
    """Refuse members that could escape a folder, are not plain data, or are bigger than any
    member of the official release, even though we never extract: such an archive is not the
    official one and should not be trusted. Runs on the header, before the member is read."""
    name = member.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(name):
        raise PipelineError(f"{path}: member {name!r}: absolute path; refusing this archive")
    if ".." in parts:
        raise PipelineError(f"{path}: member {name!r}: path contains '..'; refusing this archive")
    if member.issym() or member.islnk():
        raise PipelineError(f"{path}: member {name!r}: is a link; refusing this archive")
    if not (member.isreg() or member.isdir()):
        raise PipelineError(
            f"{path}: member {name!r}: is a device, fifo or other special file;"
            " refusing this archive"
        )
    is_batch = PurePosixPath(name).name in (*TRAIN_BATCHES, TEST_BATCH)
    limit = MAX_BATCH_BYTES if is_batch else MAX_OTHER_MEMBER_BYTES
    if member.size > limit:
        raise PipelineError(
            f"{path}: member {name!r}: declares {member.size:,} bytes, more than the {limit:,}"
            " of any such member of the CIFAR-10 binary release; refusing this archive"
        )


def _check_complete(path: Path, seen: dict[str, str]) -> None:
    missing = [name for name in REQUIRED_MEMBERS if name not in seen]
    if missing:
        others = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise PipelineError(
            f"{path}: member {missing[0]} is missing{others}; this is not the CIFAR-10"
            " binary release"
        )
    folders = sorted({str(PurePosixPath(full).parent) for full in seen.values()})
    if len(folders) > 1:
        raise PipelineError(
            f"{path}: the batches are spread over several folders ({', '.join(folders)});"
            " expected them all in one, e.g. cifar-10-batches-bin/"
        )


def _parse_classes(data: bytes, where: str) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PipelineError(f"{where}: not UTF-8 text") from None
    # The official file ends with blank lines; anything else blank is a malformed list.
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if len(names) != NUM_CLASSES or not all(names):
        raise PipelineError(
            f"{where}: expected {NUM_CLASSES} non-empty class names, one per line"
            f" (got {len([n for n in names if n])} names in {len(names)} lines)"
        )
    if len(set(names)) != NUM_CLASSES:
        raise PipelineError(f"{where}: class names must be distinct (got {names})")
    return names
