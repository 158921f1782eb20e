"""Stage download: fetch the CIFAR-10 binary archive named by data.url and verify data.md5.

data.url may be http(s)://, file:// or a local path; interrupted downloads resume.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core import paths
from pipeline.core.params import Params
from stages.cli import stage_main

PATH_OPTIONS = ("archive",)


def run(params: Params, archive: Path = paths.RAW_ARCHIVE) -> str:
    """Download ``params.data.url`` to ``archive``, check ``params.data.md5``; return its md5."""
    from pipeline.data.download import fetch_archive

    return fetch_archive(params.data.url, params.data.md5, archive)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m stages.download``."""
    stage_main("download", __doc__, run, PATH_OPTIONS, argv)


if __name__ == "__main__":
    main()
