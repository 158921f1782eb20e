"""``make sweep SWEEP=NAME``: the trials of one sweep, best first, from the MLflow store.

A sweep is the training runs tagged ``sweep=NAME`` (params.yaml's ``mlflow.sweep``), e.g. a DVC
grid ``dvc exp run --queue -S mlflow.sweep=NAME -S 'train.learning_rate=0.0005,0.001,0.002'``
run by ``dvc queue start -j 2``. One line per trial: run name, experiment, status, the kept
epoch's validation accuracy, test accuracy, macro F1 and the params that differ, ranked by test
accuracy (by validation accuracy while a trial has no test figure). The store is the stages'
own: ``MLFLOW_TRACKING_URI``, else the workspace's mlflow.db.

    python -m views.sweep NAME
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.redact import redact


def main(argv: list[str] | None = None) -> int:
    """Print the sweep's table; one ``error:`` line and a non-zero exit when there is none."""
    parser = argparse.ArgumentParser(
        prog="python -m views.sweep", description=__doc__.splitlines()[0]
    )
    parser.add_argument("sweep", help="the sweep's name (mlflow.sweep of its trainings)")
    args = parser.parse_args(argv)
    if not args.sweep:
        print("error: name the sweep: make sweep SWEEP=NAME", file=sys.stderr)
        return 2
    try:
        print(show(args.sweep))
    except PipelineError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    return 0


def show(sweep: str) -> str:
    """The sweep's table as text; PipelineError when the store or the sweep is missing."""
    from pipeline.compare.sweeps import SWEEP_TAG, check_sweep_name, format_table, sweep_table
    from pipeline.tracking.runs import credentials_to_environment

    check_sweep_name(sweep)  # before MLflow loads: a bad name costs no seconds
    import mlflow

    uri = credentials_to_environment()
    db = Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("sqlite:///") and not db.is_file():
        # Reading must not create an empty store where none was (MLflow would).
        raise PipelineError(f"no MLflow store at {db}: nothing was trained there yet")
    table = sweep_table(mlflow.MlflowClient(uri), sweep)
    if not table.trials:
        raise PipelineError(
            f"no run tagged {SWEEP_TAG}={sweep} in {redact(uri)}: "
            f"train with -S mlflow.sweep={sweep}"
        )
    return format_table(table)


if __name__ == "__main__":
    sys.exit(main())
