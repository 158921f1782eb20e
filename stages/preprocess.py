"""Stage preprocess: the downloaded archive -> prepared train/val/test arrays and data reports.

``python -m stages.preprocess [--params FILE] [--set preprocess.KEY=VALUE ...] [path options]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import paths
from pipeline.cli import run_stage, stage_parser
from pipeline.params import Params
from pipeline.preprocess import run_preprocess


def build_parser() -> argparse.ArgumentParser:
    """The stage's command line: the shared options plus its input and output paths."""
    parser = stage_parser(
        "preprocess",
        "Decode the CIFAR-10 binary archive, carve a stratified validation split from the"
        " training batches, and write train/val/test arrays, the class names, a data summary"
        " and a preview grid.",
    )
    parser.add_argument(
        "--archive", type=Path, default=paths.RAW_ARCHIVE, help="CIFAR-10 binary .tar.gz to read"
    )
    parser.add_argument(
        "--prepared-dir",
        type=Path,
        default=paths.PREPARED_DIR,
        help="folder for train/val/test.npz and classes.json",
    )
    parser.add_argument(
        "--reports-dir",
        type=Path,
        default=paths.REPORTS_DIR,
        help="folder for data_summary.json and data_preview.png",
    )
    return parser


def _body(args: argparse.Namespace, params: Params) -> None:
    run_preprocess(args.archive, args.prepared_dir, args.reports_dir, params.preprocess)


def main() -> None:
    """Entry point of ``python -m stages.preprocess``."""
    run_stage(build_parser(), _body)


if __name__ == "__main__":
    main()
