"""Train the reference CNN from params.yaml, tracked as one MLflow run.

python -m stages.train [--params FILE] [--set key=value ...] [path options]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import paths
from pipeline.cli import run_stage, stage_parser
from pipeline.params import Params


def main() -> None:
    parser = stage_parser("train", __doc__.splitlines()[0])
    parser.add_argument(
        "--prepared-dir",
        type=Path,
        default=paths.PREPARED_DIR,
        help="folder with train.npz, val.npz, classes.json",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=paths.MODELS_DIR,
        help="where model.keras and run.json go",
    )
    parser.add_argument(
        "--reports-dir",
        type=Path,
        default=paths.REPORTS_DIR,
        help="where history.csv, train_metrics.json and model_summary.txt go",
    )
    parser.add_argument(
        "--checkpoints-dir",
        type=Path,
        default=paths.CHECKPOINTS_DIR,
        help="per-epoch checkpoints for resuming (outside DVC outputs)",
    )
    parser.add_argument(
        "--raw-archive",
        type=Path,
        default=paths.RAW_ARCHIVE,
        help="the downloaded archive, only read for its md5 lineage tag",
    )

    def train(args: argparse.Namespace, params: Params) -> None:
        # Imported here so --help and params errors answer without loading TensorFlow.
        from pipeline.training_run import TrainOutputs, run_training

        outputs = TrainOutputs(args.models_dir, args.reports_dir)
        run_training(params, args.prepared_dir, outputs, args.checkpoints_dir, args.raw_archive)

    run_stage(parser, train)


if __name__ == "__main__":
    main()
