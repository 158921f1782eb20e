"""``dvc exp run`` with a profile, checked first: not a stage, the way to run one as an experiment.

    python -m stages.exp_run --profile fast-resnet [-S key=value ...] [other dvc exp run options]

The profile (profiles/NAME.yaml) and every ``-S``/``--set`` are validated by the params schema
over params.yaml; only then is ``dvc exp run`` started (in this process's place, same
interpreter), with the profile's values and the overrides as its ``-S`` options, the overrides
last so they win. An unknown profile or a refused value is one ``error:`` line and exit 2, and
DVC never starts: ``dvc exp run $(...)`` cannot do that, since a failed command substitution
leaves an empty word list and the default experiment runs. Options this command does not know
(``--queue``, ``-n NAME``, ``--temp``, ...) go to ``dvc exp run`` as given.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.params import load_params
from stages.cli import add_override_option, add_profile_option, call_stage, profile_overrides


def build_parser() -> argparse.ArgumentParser:
    """The options this command reads; everything else is passed on to ``dvc exp run``."""
    parser = argparse.ArgumentParser(
        prog="python -m stages.exp_run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params file dvc exp run edits"
    )
    add_profile_option(parser)
    add_override_option(parser, "override one param, as dvc exp run -S does (repeatable)")
    # DVC's own spelling of the same option, checked the same way.
    parser.add_argument(
        "-S", "--set-param", dest="overrides", action="append", help=argparse.SUPPRESS
    )
    return parser


def dvc_command(argv: Sequence[str] | None = None) -> list[str]:
    """The ``dvc exp run`` command line for ``argv``, once its params are validated.

    Raises ParamsError (exit 2) for an unknown profile or a refused value.
    """
    args, passed_on = build_parser().parse_known_args(argv)
    overrides = [*profile_overrides(args, args.params), *args.overrides]
    load_params(args.params, overrides)  # the whole result, as the stages will read it
    # One -S per key, the last value given (a --set over the profile's): DVC gets no duplicates.
    latest = {override.partition("=")[0]: override for override in overrides}
    sets = [part for override in latest.values() for part in ("-S", override)]
    return [sys.executable, "-m", "dvc", "exp", "run", *sets, *passed_on]


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m stages.exp_run``: check, then become ``dvc exp run``."""
    command = call_stage(lambda: dvc_command(argv))
    sys.stdout.flush()
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
