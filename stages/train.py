"""Stage train: the model that model.arch names, trained and tracked as one MLflow run.

Resumes an interrupted training from its checkpoint; writes models/model.keras, models/run.json
and the training reports. The archive is only read for its md5 lineage tag.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core import paths
from pipeline.core.params import Params
from stages.cli import stage_main

PATH_OPTIONS = ("prepared_dir", "models_dir", "reports_dir", "checkpoints_dir", "archive")


def run(
    params: Params,
    prepared_dir: Path = paths.PREPARED_DIR,
    models_dir: Path = paths.MODELS_DIR,
    reports_dir: Path = paths.REPORTS_DIR,
    checkpoints_dir: Path = paths.CHECKPOINTS_DIR,
    archive: Path = paths.RAW_ARCHIVE,
) -> dict[str, float]:
    """Train, write the stage outputs and return the final metrics."""
    # Imported here so --help and params errors answer without loading TensorFlow.
    from pipeline.core.quiet import filtered_native_stderr

    with filtered_native_stderr():
        import keras  # noqa: F401  (loads TensorFlow here, inside the filter)

        from pipeline.train.train import TrainOutputs, run_training

    outputs = TrainOutputs(models_dir, reports_dir)
    return run_training(params, prepared_dir, outputs, checkpoints_dir, archive)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m stages.train``."""
    stage_main("train", __doc__, run, PATH_OPTIONS, argv)


if __name__ == "__main__":
    main()
