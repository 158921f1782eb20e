"""The real CIFAR-10 data, prepared once by the project's own preprocess code into a cache.

``python -m benchmarks.data [--archive PATH] [--size N]`` writes
``benchmarks/.cache/prepared-<size>/`` (git-ignored) unless it is already there.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.params import PreprocessParams
from pipeline.data.preprocess import run_preprocess

CACHE = Path(__file__).resolve().parent / ".cache"
# The download stage's output; make bench ARCHIVE=... points elsewhere.
DEFAULT_ARCHIVE = Path("data/raw/cifar-10-binary.tar.gz")


def prepared_dir(
    archive: Path, size: int | None, val_size: int = 5000, cache: Path = CACHE
) -> Path:
    """Prepared train/val/test arrays for ``size`` training images (None: all that are left).

    Keyed by the archive's size and mtime as well, so another archive never reuses a cache.
    """
    if not archive.is_file():
        raise SystemExit(
            f"error: {archive}: archive not found; run `dvc repro download` or pass ARCHIVE=PATH"
        )
    stat = archive.stat()
    key = f"{stat.st_size}-{int(stat.st_mtime)}-{size or 'all'}-val{val_size}"
    folder = cache / f"prepared-{key}"
    if (folder / "classes.json").is_file():
        return folder
    params = PreprocessParams(val_size=val_size, max_train_images=size, seed=42)
    try:
        run_preprocess(archive, folder, folder / "reports", params)
    except PipelineError as exc:
        raise SystemExit(f"error: {exc}") from None
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--size", type=int, default=None, help="training images (default: all)")
    parser.add_argument("--val-size", type=int, default=5000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(prepared_dir(args.archive, args.size, args.val_size))


if __name__ == "__main__":
    main()
