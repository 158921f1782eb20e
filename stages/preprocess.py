"""Stage preprocess: the downloaded archive -> prepared train/val/test arrays and data reports.

Decodes the CIFAR-10 binary archive, carves a stratified validation split from the training
batches, and writes train/val/test.npz, the class names, a data summary, a preview grid and a
data report (duplicates, train/test overlap, blank images), stopping with one line before writing
anything when the report breaches a `checks` threshold of params.yaml.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core import paths
from pipeline.core.params import Params
from stages.cli import stage_main

PATH_OPTIONS = ("archive", "prepared_dir", "reports_dir")


def run(
    params: Params,
    archive: Path = paths.RAW_ARCHIVE,
    prepared_dir: Path = paths.PREPARED_DIR,
    reports_dir: Path = paths.REPORTS_DIR,
) -> None:
    """Turn ``archive`` into the prepared splits in ``prepared_dir`` and data reports."""
    from pipeline.data.preprocess import run_preprocess

    run_preprocess(archive, prepared_dir, reports_dir, params.preprocess, params.checks)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m stages.preprocess``."""
    stage_main("preprocess", __doc__, run, PATH_OPTIONS, argv)


if __name__ == "__main__":
    main()
