"""float32 against bfloat16 on this CPU: images/s and final test accuracy, seeds alternated.

Trains the reference configuration through the project's code (``benchmarks.fit_run``) with
``train.mixed_precision`` off and on, alternating, for each seed. The ``mixed_precision: auto``
decision rests on these figures: bf16 is worth it only with the same final test accuracy within
the seed-to-seed spread.

    python -m benchmarks.precision --prepared-dir D --epochs 10 --seeds 42 43 --out precision.json
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks.common import check, machine_info, python, read_json, run_measured, write_json

MODES = ("off", "on")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    args = parser.parse_args(argv)
    result: dict = {"machine": machine_info(), "epochs": args.epochs, "runs": []}
    for seed in args.seeds:
        for mode in MODES:
            fit_json = args.out.with_name(f"{args.out.stem}-{mode}-{seed}.json")
            measured = check(
                run_measured(
                    [
                        python(),
                        "-m",
                        "benchmarks.fit_run",
                        "--prepared-dir",
                        str(args.prepared_dir),
                        "--out",
                        str(fit_json),
                        "--eval-test",
                        "--set",
                        f"train.epochs={args.epochs}",
                        "--set",
                        f"train.seed={seed}",
                        "--set",
                        f'train.mixed_precision="{mode}"',
                    ]
                ),
                f"training with mixed_precision={mode}, seed {seed}",
            )
            fit = read_json(fit_json)
            epochs = fit["epochs"]
            # Epoch 1 carries graph tracing and warm-up: speed is the mean of the later epochs.
            steady = epochs[1:] or epochs
            result["runs"].append(
                {
                    "mode": mode,
                    "policy": fit["policy"],
                    "seed": seed,
                    "images_per_s": statistics.mean(row["images_per_s"] for row in steady),
                    "train_seconds": sum(row["seconds"] for row in epochs),
                    "final_test_accuracy": epochs[-1]["test_accuracy"],
                    "test_accuracy_per_epoch": [row["test_accuracy"] for row in epochs],
                    "peak_rss_mb": measured.peak_rss_mb,
                }
            )
            result["summary"] = summarise(result["runs"])
            write_json(args.out, result)


def summarise(runs: list[dict]) -> dict:
    """Per mode: mean images/s and final test accuracy; bf16/float32 ratios per seed."""
    summary: dict = {}
    for mode in MODES:
        mine = [run for run in runs if run["mode"] == mode]
        if mine:
            accs = [run["final_test_accuracy"] for run in mine]
            summary[mode] = {
                "runs": len(mine),
                "images_per_s": statistics.mean(run["images_per_s"] for run in mine),
                "final_test_accuracy_mean": statistics.mean(accs),
                "final_test_accuracy_range": [min(accs), max(accs)],
            }
    pairs = []
    for seed in sorted({run["seed"] for run in runs}):
        by_mode = {run["mode"]: run for run in runs if run["seed"] == seed}
        if len(by_mode) == len(MODES):
            pairs.append(
                {
                    "seed": seed,
                    "speed_ratio": by_mode["on"]["images_per_s"] / by_mode["off"]["images_per_s"],
                    "accuracy_delta": by_mode["on"]["final_test_accuracy"]
                    - by_mode["off"]["final_test_accuracy"],
                }
            )
    summary["pairs"] = pairs
    off_accs = [run["final_test_accuracy"] for run in runs if run["mode"] == "off"]
    # Seed-to-seed spread of float32 itself: the noise a bf16 difference is judged against.
    summary["float32_seed_spread"] = max(off_accs) - min(off_accs) if len(off_accs) > 1 else None
    return summary


if __name__ == "__main__":
    main()
