"""The command-line contract every stage follows.

``python -m stages.NAME [--params FILE] [--set key=value ...] [path options]``

``--set`` overrides go through the same schema as params.yaml. Path options default to the paths
in dvc.yaml, so ``dvc repro`` passes none while MLproject and Kubeflow pass their own.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.params import Params, load_params


def stage_parser(name: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every stage shares; add path options to it."""
    parser = argparse.ArgumentParser(
        prog=f"python -m stages.{name}",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params file to read"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one param, e.g. --set train.epochs=2 (repeatable; validated like the file)",
    )
    return parser


def run_stage(
    parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace, Params], None]
) -> None:
    """Parse the command line, validate params once, run ``body`` and exit with a clean status.

    A PipelineError becomes one ``error:`` line on stderr and its exit code (2 for params);
    Ctrl-C or SIGTERM exits 130. Anything else is a bug and keeps its traceback.
    """
    args = parser.parse_args()
    # A SIGTERM (kill, CI cancel, Kubernetes) unwinds like Ctrl-C, so open MLflow runs get closed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        params = load_params(args.params, args.overrides)
        body(args, params)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
