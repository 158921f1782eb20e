"""Read what ``predict`` is pointed at into model-ready uint8 images, never stopping on a bad file.

Two kinds of input:

- a folder of PNG or JPEG files (searched recursively, hidden files and folders left out), any
  size or mode. Colour policy: every image becomes 8-bit RGB (greyscale is copied into the three
  channels, a palette is expanded, an alpha channel is dropped, CMYK is converted by Pillow).
  Resize policy: an image that is not 32x32 is stretched to 32x32, the aspect ratio not kept and
  nothing cropped, with Pillow's bilinear filter over the whole source (antialiased, so a large
  photo is averaged, not sampled). A file in a subfolder named like a class (``cat/x.png``) has
  that class as its label, so the batch also reports accuracy.
- a CIFAR-10 binary batch file (``test_batch.bin``: records of 1 label byte + 3,072 pixel bytes);
  its labels come with it.

A file that cannot be read is kept as a skipped entry with its reason, never dropped silently.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError, UsageError
from pipeline.core.shapes import IMAGE_SHAPE, IMAGE_SIZE
from pipeline.data.cifar import RECORD_BYTES, decode_records

READ_FORMATS = ("PNG", "JPEG")
# Far above any photo a user means to classify (a 100-megapixel camera), far below what a crafted
# "decompression bomb" would expand to in memory.
MAX_PIXELS = 120_000_000
# A CIFAR batch larger than this is not one (the official ones are 30,730,000 bytes).
MAX_BATCH_FILE_BYTES = 1 << 30


@dataclass
class Batch:
    """The images read (uint8 N x 32 x 32 x 3, RGB), their names, their labels if known (-1
    where not), the skipped files with their reasons, and a digest of everything read."""

    names: list[str]
    images: np.ndarray
    labels: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)
    digest: str = ""

    @property
    def has_labels(self) -> bool:
        """Whether every image read has a known label."""
        return len(self.labels) > 0 and bool(np.all(self.labels >= 0))


def read_batch(
    path: Path, classes: Sequence[str], progress: Callable[[int], None] | None = None
) -> Batch:
    """Read the folder or CIFAR batch file at ``path``; a UsageError (exit 2) if it has nothing."""
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    if path.is_dir():
        return read_folder(path, classes, progress)
    return read_cifar_batch(path)


def image_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` in sorted order, hidden files and folders left out."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def read_folder(
    folder: Path, classes: Sequence[str], progress: Callable[[int], None] | None = None
) -> Batch:
    """Read every image file under ``folder``; see the module docstring for the policies."""
    files = image_files(folder)
    if not files:
        raise UsageError(f"{folder}: no files to predict (the folder is empty)")
    names: list[str] = []
    images: list[np.ndarray] = []
    labels: list[int] = []
    skipped: list[tuple[str, str]] = []
    digest = hashlib.sha256()
    label_of = {name: index for index, name in enumerate(classes)}
    for file in files:
        name = file.relative_to(folder).as_posix()
        try:
            data = file.read_bytes()
            image = decode_image(data)
        except (OSError, ValueError) as exc:
            skipped.append((name, _reason(exc)))
        else:
            names.append(name)
            images.append(image)
            labels.append(label_of.get(file.parent.name, -1) if file.parent != folder else -1)
            # Names and contents: the same pictures under other names are another batch.
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        if progress is not None:
            progress(1)
    stacked = np.stack(images) if images else np.zeros((0, *IMAGE_SHAPE), np.uint8)
    return Batch(names, stacked, np.asarray(labels, np.int64), skipped, digest.hexdigest())


def decode_image(data: bytes) -> np.ndarray:
    """A PNG or JPEG file's bytes as a uint8 32 x 32 x 3 RGB array; ValueError if it is not one."""
    from PIL import Image

    with warnings.catch_warnings():
        # Pillow warns, then refuses, past its own limit: refuse at ours, with a reason.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in READ_FORMATS:
                    raise ValueError(f"a {image.format} image; only PNG and JPEG are read")
                if image.width * image.height > MAX_PIXELS:
                    raise ValueError(
                        f"{image.width}x{image.height} pixels, more than {MAX_PIXELS:,}"
                    )
                rgb = image.convert("RGB")
                if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
                    rgb = rgb.resize(
                        (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR, reducing_gap=None
                    )
                return np.asarray(rgb, dtype=np.uint8).copy()
        except Image.UnidentifiedImageError:
            raise ValueError("not an image Pillow recognises") from None
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ValueError(f"too large: {exc}") from None
        except (SyntaxError, EOFError) as exc:
            # Pillow raises these for some truncated or malformed files.
            raise ValueError(f"corrupt image ({exc})") from None


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, OSError) and not isinstance(exc, ValueError):
        # Pillow reports a truncated file as OSError("image file is truncated ...").
        return f"unreadable: {exc.strerror or text}"
    return text


def read_cifar_batch(path: Path) -> Batch:
    """A CIFAR-10 binary batch file: every record's image and label; names are ``FILE#INDEX``."""
    size = path.stat().st_size
    if size == 0:
        raise UsageError(f"{path}: empty file, nothing to predict")
    if size > MAX_BATCH_FILE_BYTES:
        raise UsageError(f"{path}: {size:,} bytes, too large for a CIFAR-10 batch file")
    if size % RECORD_BYTES:
        raise UsageError(
            f"{path}: not a folder of images nor a CIFAR-10 batch file ({size:,} bytes is not a "
            f"multiple of the {RECORD_BYTES:,}-byte record)"
        )
    data = path.read_bytes()
    try:
        images, labels = decode_records(data, str(path))
    except PipelineError as exc:
        raise UsageError(str(exc)) from None
    names = [f"{path.name}#{index}" for index in range(len(images))]
    return Batch(names, images, labels.astype(np.int64), [], hashlib.sha256(data).hexdigest())
