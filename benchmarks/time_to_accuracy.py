"""Epochs and training time until test accuracy first reaches the target, and final accuracy.

Trains each configuration through the project's code (``benchmarks.fit_run``), scoring the test
split after every epoch outside the timed part: ``reference-config`` is params.yaml as committed,
the others are profiles under profiles/. Time to target is the sum of the epoch times (training
plus validation, as the train stage logs them) up to the first epoch at or above the target;
process start-up is reported apart. Each configuration's rows are written as its epochs finish,
so an interrupted benchmark still reports what it measured.

    python -m benchmarks.time_to_accuracy --prepared-dir D --out tta.json [--configs ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import check, machine_info, module, read_json, run_measured, write_json

# The seed tutorial's 50-epoch test accuracy.
TARGET = 0.755
REFERENCE = "reference-config"
# The fast residual net's targets (profiles/fast-resnet.yaml): each configuration's time to them.
ACCURACY_MARKS = (0.90, 0.94)


def summarise(result: dict, base: Path) -> dict:
    """Per configuration: epochs/seconds to target, final accuracy; ratios to the reference."""
    summary: dict = {}
    for name, entry in result["configs"].items():
        path = base / entry["file"]
        if not path.is_file():
            continue
        fit = read_json(path)
        rows, seconds, reached = fit["epochs"], 0.0, None
        marks: dict[str, dict | None] = {f"{mark:.2f}": None for mark in ACCURACY_MARKS}
        for row in rows:
            seconds += row["seconds"]
            if reached is None and row["test_accuracy"] >= result["target"]:
                reached = {"epoch": row["epoch"], "seconds": seconds}
            for mark in ACCURACY_MARKS:
                if marks[f"{mark:.2f}"] is None and row["test_accuracy"] >= mark:
                    marks[f"{mark:.2f}"] = {"epoch": row["epoch"], "seconds": seconds}
        summary[name] = {
            "policy": fit["policy"],
            "overrides": fit["overrides"],
            "epochs_run": len(rows),
            "epochs_planned": fit["epochs_planned"],
            "epochs_capped_to": fit["params"]["train"]["epochs"],
            "complete": bool(fit.get("complete")),
            "train_seconds": seconds,
            "startup_s": fit.get("startup_s"),
            "final_test_accuracy": rows[-1]["test_accuracy"] if rows else None,
            "best_test_accuracy": max((row["test_accuracy"] for row in rows), default=None),
            "test_accuracy_per_epoch": [row["test_accuracy"] for row in rows],
            "seconds_per_epoch": [row["seconds"] for row in rows],
            "reached": reached,
            "reached_marks": marks,
            # The process's CPU seconds (start-up and test scoring included), when recorded.
            "process_cpu_s": rows[-1].get("process_cpu_s") if rows else None,
            # Merged in from another session (its own machine record): not this run's conditions.
            "other_session": "machine" in entry,
        }
    reference = summary.get(REFERENCE, {}).get("reached")
    for entry in summary.values():
        if reference and entry["reached"]:
            entry["time_ratio_to_reference"] = entry["reached"]["seconds"] / reference["seconds"]
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--configs", nargs="+", default=[REFERENCE, "fast", "augment", "fast-resnet"],
        metavar="NAME[:EPOCHS]",
        help="configurations, each optionally capped to EPOCHS (a time budget)",
    )  # fmt: skip
    parser.add_argument("--target", type=float, default=TARGET)
    parser.add_argument(
        "--max-epochs", type=int, help="cap every configuration's train.epochs (time budget)"
    )
    parser.add_argument(
        "--stop-at-target", nargs="*", default=[], metavar="CONFIG",
        help="configurations to stop as soon as they reach the target",
    )  # fmt: skip
    args = parser.parse_args(argv)
    result: dict = {"machine": machine_info(), "target": args.target, "configs": {}}
    for config in args.configs:
        name, _, cap = config.partition(":")
        fit_file = f"{args.out.stem}-{name}.json"
        command = module(
            "benchmarks.fit_run", "--prepared-dir", args.prepared_dir,
            "--out", args.out.with_name(fit_file), "--eval-test",
        )  # fmt: skip
        if name != REFERENCE:
            command += ["--profile", name]
        if cap or args.max_epochs:
            command += ["--max-epochs", cap or str(args.max_epochs)]
        if name in args.stop_at_target:
            command += ["--stop-at", str(args.target)]
        result["configs"][name] = {"file": fit_file, "command": command[1:], "cap": cap or None}
        write_json(args.out, result)
        check(run_measured(command), f"training {name}")
        result["summary"] = summarise(result, args.out.parent)
        write_json(args.out, result)


if __name__ == "__main__":
    main()
