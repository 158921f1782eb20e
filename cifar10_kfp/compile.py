"""``python -m cifar10_kfp.compile``: write the pipelines as KFP v2 YAML (``make kfp``).

Two pipelines: the single run (cifar10_pipeline.yaml) and the sweep (cifar10_sweep_pipeline.yaml,
cifar10_kfp.sweep); ``--output`` or ``--sweep-output`` writes only the one it names.

The pipelines' parameters are params.yaml's sections; their defaults come from the committed
params.yaml: one that differs from HEAD (``dvc exp run -S`` edits it in place) is
refused, unless ``--params`` names a file. The images and the MLflow secret come from the
options, else from KFP_IMAGE, KFP_GPU_IMAGE and KFP_MLFLOW_SECRET, else the placeholders in
cifar10_kfp/pipeline.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import ParamsError
from pipeline.core.paths import REPO_ROOT
from stages.cli import call_stage

if TYPE_CHECKING:
    from cifar10_kfp.pipeline import Settings

OUTPUT = REPO_ROOT / "cifar10_kfp" / "cifar10_pipeline.yaml"
SWEEP_OUTPUT = REPO_ROOT / "cifar10_kfp" / "cifar10_sweep_pipeline.yaml"

log = logging.getLogger("pipeline")


def compile_pipeline(output: Path, settings: Settings | None = None) -> Path:
    """Compile the pipeline for ``settings`` (cifar10_kfp.pipeline.Settings) to ``output``."""
    from cifar10_kfp.pipeline import build_pipeline

    return _write(build_pipeline(settings), output)


def compile_sweep_pipeline(
    output: Path, settings: Settings | None = None, parallelism: int | None = None
) -> Path:
    """Compile the sweep pipeline (cifar10_kfp.sweep) to ``output``, at most ``parallelism``
    trainings at once (DEFAULT_PARALLELISM if None)."""
    from cifar10_kfp.sweep import DEFAULT_PARALLELISM, build_sweep_pipeline

    pipeline = build_sweep_pipeline(settings, parallelism or DEFAULT_PARALLELISM)
    return _write(pipeline, output)


def _write(pipeline: Any, output: Path) -> Path:
    from kfp import compiler

    # Written beside and renamed: a failed compile leaves the previous YAML as it was. The temp
    # name keeps the .yaml suffix, which tells KFP the format.
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.stem}.partial.yaml")
    try:
        compiler.Compiler().compile(pipeline, str(partial))
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return output


def committed_params(root: Path = REPO_ROOT) -> Path:
    """``root``'s params.yaml, after checking that it is the one HEAD holds.

    The compiled YAML is committed and its defaults are everyone's: `dvc exp run -S` values (a
    local archive path, 2 epochs) left in the working copy must not end up there. ParamsError
    when the file differs from HEAD; outside a git checkout (the images hold no .git) the file
    is taken as it is.
    """
    path = root / "params.yaml"
    try:
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all", "--", path.name],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except FileNotFoundError:  # no git installed
        status = None
    if status is None or status.returncode != 0:
        lines = status.stderr.strip().splitlines() if status else ["git not found"]
        reason = lines[0] if lines else f"git status exited {status.returncode}"
        log.info("%s: no commit to compare with (%s), compiled as it is", path, reason)
        return path
    if status.stdout.strip():
        raise ParamsError(
            f"{path.name} differs from HEAD (uncommitted edits, e.g. from `dvc exp run -S`); "
            "the compiled pipeline takes its defaults from committed params only: commit it, "
            f"or restore it with `git checkout {path.name}`, or pass --params FILE"
        )
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m cifar10_kfp.compile``."""
    parser = argparse.ArgumentParser(
        prog="python -m cifar10_kfp.compile",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=f"write the pipeline here (alone, unless --sweep-output too); default {OUTPUT.name}",
    )
    parser.add_argument(
        "--sweep-output",
        type=Path,
        help="write the sweep pipeline here (alone, unless --output too); default "
        f"{SWEEP_OUTPUT.name}",
    )
    parser.add_argument(
        "--sweep-parallelism",
        type=int,
        help="trainings at once in the sweep pipeline (submit --parallelism changes it per run; "
        "default 2)",
    )
    parser.add_argument(
        "--params",
        type=Path,
        help="defaults of the parameters (default: params.yaml, refused if it differs from HEAD)",
    )
    parser.add_argument("--image", help="CPU image of the components (env KFP_IMAGE)")
    parser.add_argument("--gpu-image", help="GPU image of the train component (env KFP_GPU_IMAGE)")
    parser.add_argument(
        "--mlflow-secret", help="Kubernetes secret with MLFLOW_TRACKING_URI (env KFP_MLFLOW_SECRET)"
    )
    parser.add_argument(
        "--cpu-only",
        action="store_true",
        help="train in the CPU image with train.device=cpu and no GPU request",
    )
    args = parser.parse_args(argv)

    def work() -> None:
        from cifar10_kfp.pipeline import Settings

        settings = Settings.from_env(
            image=args.image,
            gpu_image=args.gpu_image,
            mlflow_secret=args.mlflow_secret,
            params_file=args.params or committed_params(),
            gpu=not args.cpu_only,
        )
        from cifar10_kfp.trials import check_parallelism

        if args.sweep_parallelism is not None:
            check_parallelism(args.sweep_parallelism)
        # Neither named: both, where `make kfp` keeps them.
        both = args.output is None and args.sweep_output is None
        written = []
        if args.output or both:
            written.append(compile_pipeline(args.output or OUTPUT, settings))
        if args.sweep_output or both:
            output = args.sweep_output or SWEEP_OUTPUT
            written.append(compile_sweep_pipeline(output, settings, args.sweep_parallelism))
        train_image = settings.gpu_image if settings.gpu else settings.image
        for path in written:
            log.info("wrote %s (images %s, train %s)", path, settings.image, train_image)

    call_stage(work)


if __name__ == "__main__":
    main()
