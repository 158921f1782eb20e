"""Stage download: fetch the CIFAR-10 binary archive named by data.url and verify data.md5."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli import run_stage, stage_parser
from pipeline.download import fetch_archive
from pipeline.params import Params
from pipeline.paths import RAW_ARCHIVE


def _run(args: argparse.Namespace, params: Params) -> None:
    fetch_archive(params.data.url, params.data.md5, args.out)


def main() -> None:
    """Entry point of ``python -m stages.download``."""
    parser = stage_parser(
        "download",
        "Download the CIFAR-10 binary archive from data.url (http(s)://, file:// or a local "
        "path), check its md5 against data.md5 and write it to --out.",
    )
    parser.add_argument("--out", type=Path, default=RAW_ARCHIVE, help="where to write the archive")
    run_stage(parser, _run)


if __name__ == "__main__":
    main()
