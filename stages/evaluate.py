"""Stage evaluate: test the trained model, report, and register it in the MLflow Model Registry.

Writes metrics, the confusion matrix and a report, logs them to the training run and registers
the model (alias challenger; champion if it passes the register.* gate).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core import paths
from pipeline.core.params import Params
from stages.cli import stage_main

PATH_OPTIONS = ("prepared_dir", "models_dir", "reports_dir")


def run(
    params: Params,
    prepared_dir: Path = paths.PREPARED_DIR,
    models_dir: Path = paths.MODELS_DIR,
    reports_dir: Path = paths.REPORTS_DIR,
) -> None:
    """Evaluate ``models_dir/model.keras`` on ``prepared_dir/test.npz``; reports and registry."""
    # Imported here so --help and params errors answer without loading TensorFlow.
    from pipeline.core.quiet import filtered_native_stderr

    with filtered_native_stderr():
        import keras  # noqa: F401  (loads TensorFlow here, inside the filter)

        from pipeline.evaluate.evaluate import run_evaluation

    run_evaluation(params, prepared_dir, models_dir, reports_dir)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m stages.evaluate``."""
    stage_main("evaluate", __doc__, run, PATH_OPTIONS, argv)


if __name__ == "__main__":
    main()
