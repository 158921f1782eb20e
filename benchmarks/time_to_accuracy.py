"""Epochs and training time until test accuracy first reaches the target, and final accuracy.

Trains each configuration through the project's code (``benchmarks.fit_run``), scoring the test
split after every epoch outside the timed part: ``reference-config`` is params.yaml as committed,
the others are profiles under profiles/. Time to target is the sum of the epoch times (training
plus validation, as the train stage logs them) up to the first epoch at or above the target;
process start-up is reported apart. ``--fit-to-reference PROFILE`` sizes a profile's epochs to
the reference's training time measured first in the same run. Each configuration's rows are
written as its epochs finish, so an interrupted benchmark still reports what it measured.

    python -m benchmarks.time_to_accuracy --prepared-dir D --out tta.json [--configs ...]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

from benchmarks.common import check, machine_info, module, read_json, run_measured, write_json
from pipeline.core.errors import ParamsError
from pipeline.core.profiles import load_profile

# The seed tutorial's 50-epoch test accuracy.
TARGET = 0.755
REFERENCE = "reference-config"
# The fast residual net's targets (profiles/fast-resnet.yaml): each configuration's time to them.
ACCURACY_MARKS = (0.91, 0.94)
# --fit-to-reference: the share of the reference's training time a sized profile plans to use;
# the rest absorbs the host's bursts (epochs of one process vary by ~10% on a shared VM).
BUDGET_SHARE = 0.95


# The richest scoring an epoch row holds first: its configuration's evaluate.* TTA settings.
SCORINGS = (
    ("test_accuracy_translate_tta", "mirror + translate TTA"),
    ("test_accuracy_flip_tta", "flip TTA"),
    ("test_accuracy", "one view"),
)


def score(row: dict) -> float | None:
    """An epoch's test accuracy as its configuration is scored (mirror-plus-translate or flip
    test-time augmentation when its params set them, else one view); None if not scored."""
    return next((row[key] for key, _ in SCORINGS if key in row), None)


def scored_with(row: dict) -> str:
    """How :func:`score` scored ``row``."""
    return next((label for key, label in SCORINGS if key in row), "not scored")


def parse_config(spec: str) -> tuple[str, str | None, str | None]:
    """``NAME[:EPOCHS][@SEED]`` -> (profile name, epoch cap, seed)."""
    rest, _, seed = spec.partition("@")
    name, _, cap = rest.partition(":")
    for label, value in (("EPOCHS", cap), ("SEED", seed)):
        if value and not value.isdigit():
            raise SystemExit(
                f"error: --configs {spec}: {label} must be a whole number, not {value!r}"
            )
    return name, cap or None, seed or None


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
            value = score(row)
            if value is None:  # --final-only: the epochs before the last are not scored
                continue
            if reached is None and value >= result["target"]:
                reached = {"epoch": row["epoch"], "seconds": seconds}
            for mark in ACCURACY_MARKS:
                if marks[f"{mark:.2f}"] is None and value >= mark:
                    marks[f"{mark:.2f}"] = {"epoch": row["epoch"], "seconds": seconds}
        scores = [score(row) for row in rows]
        scored = [value for value in scores if value is not None]
        summary[name] = {
            "profile": entry.get("profile", name),
            "seed": fit["params"]["train"]["seed"],
            "scored_with": scored_with(rows[-1]) if rows else "not scored",
            "policy": fit["policy"],
            "overrides": fit["overrides"],
            "epochs_run": len(rows),
            "epochs_planned": fit["epochs_planned"],
            "epochs_capped_to": fit["params"]["train"]["epochs"],
            "complete": bool(fit.get("complete")),
            "train_seconds": seconds,
            "startup_s": fit.get("startup_s"),
            "final_test_accuracy": scores[-1] if rows else None,
            "best_test_accuracy": max(scored, default=None),
            "test_accuracy_per_epoch": scores,
            # False for --final-only: a mark "reached" at the last epoch is then an upper bound.
            "scored_every_epoch": None not in scores,
            # One view per image, whatever the scoring: what the served model answers.
            "one_view_per_epoch": [row.get("test_accuracy") for row in rows],
            # The last epoch under each scoring it has: a TTA's gain on the same weights.
            "final_by_scoring": {
                label: rows[-1][key] for key, label in SCORINGS if rows and key in rows[-1]
            },
            "cumulative_seconds": list(itertools.accumulate(row["seconds"] for row in rows)),
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
        # A ratio is measured side by side: never across sessions (loads and CPUs differ).
        if reference and entry["reached"] and not entry["other_session"]:
            entry["time_ratio_to_reference"] = entry["reached"]["seconds"] / reference["seconds"]
    return summary


def within_budget(row: dict, budget_s: float) -> float | None:
    """The best score a summary row reached by ``budget_s`` seconds of training (None if its
    first epoch took longer)."""
    pairs = zip(row["test_accuracy_per_epoch"], row["cumulative_seconds"], strict=True)
    scores = [value for value, seconds in pairs if seconds <= budget_s and value is not None]
    return max(scores, default=None)


def seed_groups(summary: dict) -> dict[str, dict]:
    """Per profile run with more than one seed: the mean, spread and values of its best score,
    of its score within the reference's whole training time (when that is in the summary), and
    how many seeds reached each accuracy mark."""
    groups: dict[str, list[dict]] = {}
    for row in summary.values():
        groups.setdefault(row["profile"], []).append(row)
    reference = summary.get(REFERENCE)
    budget = reference["train_seconds"] if reference and reference["complete"] else None
    out: dict[str, dict] = {}
    for profile, rows in groups.items():
        if len(rows) < 2:
            continue
        best = [row["best_test_accuracy"] for row in rows if row["best_test_accuracy"] is not None]
        group = {
            "seeds": [row["seed"] for row in rows],
            "complete": all(row["complete"] for row in rows),
            "scored_with": rows[0]["scored_with"],
            "best": _spread(best),
            "train_seconds": _spread([row["train_seconds"] for row in rows]),
            "marks_reached": {
                mark: sum(1 for row in rows if row["reached_marks"].get(mark))
                for mark in rows[0]["reached_marks"]
            },
        }
        labels = {label for row in rows for label in row.get("final_by_scoring", {})}
        group["final_by_scoring"] = {
            label: _spread([row["final_by_scoring"][label] for row in rows])
            for _, label in SCORINGS
            if label in labels and all(label in row.get("final_by_scoring", {}) for row in rows)
        }
        if budget is not None:
            within = [within_budget(row, budget) for row in rows]
            group["budget_s"] = budget
            # No score by the budget (a first epoch longer than it, or a run scored after its
            # last epoch only that ended past it) counts as 0: the claim failed for that seed.
            pairs = zip(rows, within, strict=True)
            group["over_budget"] = [row["seed"] for row, value in pairs if value is None]
            group["within_budget"] = _spread([value or 0.0 for value in within])
        out[profile] = group
    return out


def _spread(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values) if values else None,
        "stdev": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values, default=None),
        "max": max(values, default=None),
        "values": values,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--configs", nargs="+", default=[REFERENCE, "fast", "augment", "fast-resnet"],
        metavar="NAME[:EPOCHS][@SEED]",
        help="configurations, each optionally capped to EPOCHS (a time budget) and run with "
        "train.seed=SEED (NAME@42 NAME@43 NAME@44: a mean over seeds)",
    )  # fmt: skip
    parser.add_argument("--target", type=float, default=TARGET)
    parser.add_argument(
        "--max-epochs", type=int, help="cap every configuration's train.epochs (time budget)"
    )
    parser.add_argument(
        "--final-only", nargs="*", default=[], metavar="CONFIG",
        help="configurations scored after their last epoch only (the evaluate stage's view)",
    )  # fmt: skip
    parser.add_argument(
        "--fit-to-reference", nargs="*", default=[], metavar="PROFILE",
        help=f"profiles run for as many epochs as fit in {REFERENCE}'s training time, measured "
        "first in this run (then one epoch of the profile is timed)",
    )  # fmt: skip
    parser.add_argument(
        "--stop-at-target", nargs="*", default=[], metavar="CONFIG",
        help="configurations to stop as soon as they reach the target",
    )  # fmt: skip
    args = parser.parse_args(argv)
    result: dict = {"machine": machine_info(), "target": args.target, "configs": {}}
    # All checked before the first (long) training: a typo in the last one stops nothing half-way.
    configs = [parse_config(config) for config in args.configs]
    for name in {name for name, _, _ in configs} - {REFERENCE}:
        try:
            load_profile(name)
        except ParamsError as exc:
            # The loader names its option; here the name came from --configs.
            raise SystemExit(f"error: {exc}".replace("--profile", "--configs", 1)) from None
    sized = set(args.fit_to_reference)
    if sized and (
        not configs or configs[0][0] != REFERENCE or not sized <= {n for n, _, _ in configs}
    ):
        raise SystemExit(
            f"error: --fit-to-reference needs {REFERENCE} first in --configs and each of its "
            "profiles among them"
        )
    for name, cap, seed in configs:
        key = f"{name}@{seed}" if seed else name
        if name in sized and name not in result.get("sizing", {}):
            result.setdefault("sizing", {})[name] = size_to_reference(name, result, args)
        # Plain file names (no @): fast-resnet@42 -> ...-fast-resnet-seed42.json
        fit_file = f"{args.out.stem}-{key.replace('@', '-seed')}.json"
        command = fit_command(name, args.prepared_dir, args.out.with_name(fit_file))
        if seed:
            command += ["--set", f"train.seed={seed}"]
        if name in sized:
            command += ["--set", f"train.epochs={result['sizing'][name]['epochs']}"]
        if cap or args.max_epochs:
            command += ["--max-epochs", cap or str(args.max_epochs)]
        if name in args.final_only:
            command += ["--final-only"]
        if name in args.stop_at_target:
            command += ["--stop-at", str(args.target)]
        result["configs"][key] = {
            "file": fit_file, "command": command[1:], "cap": cap, "profile": name,
        }  # fmt: skip
        write_json(args.out, result)
        check(run_measured(command), f"training {name}")
        result["summary"] = summarise(result, args.out.parent)
        write_json(args.out, result)


def fit_command(name: str, prepared_dir: Path, out: Path, scored: bool = True) -> list[str]:
    """The ``benchmarks.fit_run`` command that trains configuration ``name`` (scoring the test
    split when ``scored``)."""
    command = module("benchmarks.fit_run", "--prepared-dir", prepared_dir, "--out", out)
    command += ["--eval-test"] if scored else []
    return command if name == REFERENCE else [*command, "--profile", name]


def size_to_reference(name: str, result: dict, args: argparse.Namespace) -> dict:
    """Profile ``name``'s epoch count for this machine, by measurement: as many of its epochs
    as fit in ``BUDGET_SHARE`` of the reference's training time measured in this run, an epoch
    timed as the first of a one-epoch training (graph tracing included, so the longest)."""
    reference = result.get("summary", {}).get(REFERENCE)
    if not reference or not reference["complete"]:
        raise SystemExit(f"error: --fit-to-reference {name}: {REFERENCE} did not complete")
    out = args.out.with_name(f"{args.out.stem}-{name}-sizing.json")
    command = [*fit_command(name, args.prepared_dir, out, scored=False), "--set", "train.epochs=1"]
    check(run_measured(command), f"timing an epoch of {name}")
    epoch_s = read_json(out)["epochs"][0]["seconds"]
    budget_s = reference["train_seconds"]
    return {
        "reference_train_s": budget_s,
        "budget_share": BUDGET_SHARE,
        "first_epoch_s": epoch_s,
        "epochs": max(1, int(BUDGET_SHARE * budget_s // epoch_s)),
        "file": out.name,
    }


if __name__ == "__main__":
    main()
