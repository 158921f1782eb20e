"""Predict the classes of a folder of images, or of a CIFAR-10 batch file, with a registered model.

Not a DVC stage: it reads the user's images, not the pipeline's data. PATH is a folder of PNG or
JPEG files (searched recursively; any size or mode) or a CIFAR-10 binary batch file. Each image
is converted to 8-bit RGB (greyscale copied to the three channels, palette expanded, alpha
dropped) and, unless it is 32x32 already, stretched to 32x32 (aspect ratio not kept, nothing
cropped) with Pillow's antialiased bilinear filter. A file in a subfolder named like a class
(cat/x.png) is labelled with it, and the batch reports its accuracy. A file that cannot be read is
listed as skipped with its reason and the batch goes on. Writes predictions.csv (file, class,
probability, top 3), a report and figures into --output, compares the batch with the training
run's reference statistics (drift, PSI over predict.drift_psi), and logs it all to a
batch-inference MLflow run linked to the model version. Exit codes: 0 done (drift or not, unless
--fail-on-drift), 1 failure, 2 bad usage or params (an empty folder), 3 drift with --fail-on-drift.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.params import Params, load_params
from stages.cli import build_parser, call_stage, command_line_overrides

DEFAULT_OUTPUT = Path("reports/predict")
DEFAULT_MODEL = "@champion"


def run(
    params: Params,
    input_path: Path,
    output_dir: Path = DEFAULT_OUTPUT,
    model: str = DEFAULT_MODEL,
    fail_on_drift: bool = False,
) -> dict[str, Any]:
    """Predict every image under ``input_path`` with ``model``; return the batch's summary."""
    # Imported here so --help and params errors answer without loading TensorFlow.
    from pipeline.predict.batch import run_prediction

    return run_prediction(params, input_path, output_dir, model, fail_on_drift)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m stages.predict PATH``."""
    parser = build_parser("predict", __doc__, [])
    parser.add_argument("path", type=Path, metavar="PATH", help="folder of images or batch file")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="@ALIAS, a version number, a training run id, or a models:/ or runs:/ URI "
        "(of mlflow.registered_model_name)",
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="folder for the CSV, report, figures"
    )
    parser.add_argument(
        "--fail-on-drift",
        action="store_true",
        help="exit 3 when the batch drifts from the training data (for CI)",
    )
    args = parser.parse_args(argv)

    def work() -> dict[str, Any]:
        params = load_params(args.params, command_line_overrides(args))
        return run(params, args.path, args.output, args.model, args.fail_on_drift)

    call_stage(work)


if __name__ == "__main__":
    main()
