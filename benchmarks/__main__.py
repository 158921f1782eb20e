"""Run every benchmark on the real data, then write docs/benchmarks.md (``make bench``).

    python -m benchmarks [--archive A] [--size N] [--epochs 3] [--rounds 2] [--only ...]

Defaults are the full measurement: all 45,000 training images, the configurations' own epoch
counts (50 for params.yaml). ``--size``, ``--tta-max-epochs`` and friends shrink it to fit a time
budget; docs/benchmarks.md states what was run. Results go to ``--results`` as JSON, written as
they come in, so an interrupted run still reports what it measured.

Without ``--update`` the JSON and the report go to the git-ignored ``benchmarks/.scratch/``, so a
quick or partial run never overwrites the committed figures; ``--update`` (``make bench
UPDATE=1``) writes ``benchmarks/results/`` and ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from benchmarks.common import REPO_ROOT, RESULTS_DIR, check, module, run_measured
from benchmarks.data import DEFAULT_ARCHIVE, prepared_dir

BENCHMARKS = ("throughput", "precision", "tta", "overhead", "serving", "predict")
COMMITTED_REPORT = REPO_ROOT / "docs" / "benchmarks.md"
# Git-ignored: where a run that is not meant to update the committed figures writes.
SCRATCH = REPO_ROOT / "benchmarks" / ".scratch"


def output_paths(update: bool, results: Path | None, report: Path | None) -> tuple[Path, Path]:
    """Where the JSON results and the report go: the committed ones only when ``update``."""
    if update:
        return results or RESULTS_DIR, report or COMMITTED_REPORT
    return results or SCRATCH / "results", report or SCRATCH / "benchmarks.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--size", type=int, help="training images (default: all)")
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=3, help="per side, throughput benchmark")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds")
    parser.add_argument("--precision-epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    parser.add_argument("--tta-max-epochs", type=int, help="cap each configuration's epochs")
    parser.add_argument(
        "--tta-configs", nargs="+", default=["reference-config", "fast", "augment", "fast-resnet"]
    )
    parser.add_argument(
        "--tta-final-only", nargs="*", default=[], metavar="CONFIG",
        help="configurations scored after their last epoch only",
    )  # fmt: skip
    parser.add_argument(
        "--tta-fit-to-reference", nargs="*", default=[], metavar="PROFILE",
        help="profiles given as many epochs as fit in the reference's measured training time",
    )  # fmt: skip
    parser.add_argument("--overhead-train-size", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument(
        "--serve-workers", type=int, nargs="+", default=[1, 2], help="serving: worker counts"
    )
    parser.add_argument("--serve-seconds", type=float, default=6.0, help="serving: per cell")
    parser.add_argument(
        "--serve-requests", type=int, default=200, help="serving: most requests a client and cell"
    )
    parser.add_argument("--predict-images", type=int, default=10_000, help="PNGs to predict")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument(
        "--update",
        action="store_true",
        help="write the committed benchmarks/results/ and docs/benchmarks.md (default: scratch)",
    )
    parser.add_argument("--results", type=Path, help="JSON results folder (overrides --update)")
    parser.add_argument("--report", type=Path, help="the Markdown report (overrides --update)")
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "benchmarks" / ".cache")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.results, args.report = output_paths(args.update, args.results, args.report)
    results = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    archive = args.archive.resolve()
    prepared = prepared_dir(archive, args.size, args.val_size, args.cache.resolve())
    commands = {
        "throughput": module(
            "benchmarks.train_throughput", "--prepared-dir", prepared,
            "--out", results / "train_throughput.json",
            "--epochs", args.epochs, "--rounds", args.rounds,
        ),
        "precision": module(
            "benchmarks.precision", "--prepared-dir", prepared,
            "--out", results / "precision.json", "--epochs", args.precision_epochs,
            "--seeds", *args.seeds,
        ),
        "tta": module(
            "benchmarks.time_to_accuracy", "--prepared-dir", prepared,
            "--out", results / "time_to_accuracy.json", "--configs", *args.tta_configs,
            *(["--max-epochs", args.tta_max_epochs] if args.tta_max_epochs else []),
            *(["--final-only", *args.tta_final_only] if args.tta_final_only else []),
            *(
                ["--fit-to-reference", *args.tta_fit_to_reference]
                if args.tta_fit_to_reference
                else []
            ),
        ),
        "overhead": module(
            "benchmarks.overhead", "--archive", archive, "--out", results / "overhead.json",
            "--train-size", args.overhead_train_size, "--repeats", args.repeats,
            "--requests", args.requests,
        ),
        "serving": module(
            "benchmarks.serving", "--prepared-dir", prepared, "--out", results / "serving.json",
            "--workers", *args.serve_workers, "--seconds", args.serve_seconds,
            "--max-requests", args.serve_requests,
        ),
        "predict": module(
            "benchmarks.predict_throughput", "--archive", archive,
            "--out", results / "predict.json", "--images", args.predict_images,
        ),
    }  # fmt: skip
    for name in args.only:
        logging.info("benchmark %s: %s", name, " ".join(commands[name][1:]))
        measured = check(run_measured(commands[name]), f"benchmark {name}")
        logging.info("benchmark %s: done in %.0f s", name, measured.wall_s)
    check(
        run_measured(module("benchmarks.report", "--results", results, "--out", args.report)),
        "the report",
    )
    logging.info("wrote %s", args.report)


if __name__ == "__main__":
    main()
