"""Evaluate the trained model on the test split and register it in the MLflow Model Registry.

python -m stages.evaluate [--params FILE] [--set key=value ...] [path options]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli import run_stage, stage_parser
from pipeline.params import Params
from pipeline.paths import MODELS_DIR, PREPARED_DIR, REPORTS_DIR


def main() -> None:
    """Entry point of ``python -m stages.evaluate``."""
    parser = stage_parser(
        "evaluate",
        "Evaluate models/model.keras on the test split, write metrics, the confusion matrix and "
        "a report, log them to the training run and register the model in the MLflow Model "
        "Registry (alias challenger; champion if it passes the register.* gate).",
    )
    parser.add_argument(
        "--prepared-dir", type=Path, default=PREPARED_DIR, help="test.npz and classes.json"
    )
    parser.add_argument(
        "--models-dir", type=Path, default=MODELS_DIR, help="model.keras and run.json"
    )
    parser.add_argument(
        "--reports-dir", type=Path, default=REPORTS_DIR, help="history.csv in, reports out"
    )

    def evaluate(args: argparse.Namespace, params: Params) -> None:
        # Imported here so --help and params errors answer without loading TensorFlow.
        from pipeline.evaluation_run import run_evaluation

        run_evaluation(params, args.prepared_dir, args.models_dir, args.reports_dir)

    run_stage(parser, evaluate)


if __name__ == "__main__":
    main()
