"""Train stage against the reference way, side by side: images/s per epoch and peak RSS.

Each round runs, one after the other in fresh processes, the reference way
(``benchmarks.reference``), the train stage as ``dvc repro`` runs it (``python -m stages.train``,
MLflow tracking included, params.yaml defaults), the stage with the other steps_per_execution
(1 where the defaults use more) and, on a CPU with native bf16, the stage in the precision its
defaults did not pick. The order rotates every round so drift in the machine's load does not
favour one side. Peak RSS is each child's own ``ru_maxrss`` (``wait4``).

    python -m benchmarks.train_throughput --prepared-dir D --epochs 2 --rounds 2 --out t.json
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import (
    REPO_ROOT,
    check,
    gpu_info,
    machine_info,
    python,
    read_json,
    run_measured,
    write_json,
)
from pipeline.core.params import TrainParams, load_params
from pipeline.train.precision import cpu_bf16_flags, resolve_precision_policy

# The steps_per_execution that doubled GPU throughput (benchmarks/results/gpu-h200/).
SPE_CANDIDATE = 16


def steps_per_execution_side(train: TrainParams) -> int:
    """The steps_per_execution to compare the defaults with: 1 if they use more, else 16."""
    return 1 if train.steps_per_execution != 1 else SPE_CANDIDATE


def run_reference(prepared: Path, epochs: int, work: Path) -> dict:
    out = work / "reference.json"
    measured = check(
        run_measured(
            [
                python(),
                "-m",
                "benchmarks.reference",
                "--prepared-dir",
                str(prepared),
                "--epochs",
                str(epochs),
                "--out",
                str(out),
            ]
        ),
        "the reference way",
    )
    rows = read_json(out)["epochs"]
    return _row(rows, measured)


def run_stage(prepared: Path, epochs: int, work: Path, overrides: list[str]) -> dict:
    sets = [
        item for override in [f"train.epochs={epochs}", *overrides] for item in ("--set", override)
    ]
    measured = check(
        run_measured(
            [
                python(),
                "-m",
                "stages.train",
                # Run from a scratch folder (MLflow's artifacts land there), on the repo's params.
                "--params",
                str(REPO_ROOT / "params.yaml"),
                "--prepared-dir",
                str(prepared),
                "--models-dir",
                str(work / "models"),
                "--reports-dir",
                str(work / "reports"),
                "--checkpoints-dir",
                str(work / "checkpoints"),
                "--archive",
                str(work / "none"),
                *sets,
            ],
            env={"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"},
            cwd=work,
        ),
        "the train stage",
    )
    with open(work / "reports" / "history.csv", newline="") as f:
        rows = [{key: float(value) for key, value in row.items()} for row in csv.DictReader(f)]
    return _row(rows, measured)


def steady_images_per_s(per_epoch: list[float]) -> float:
    """A side's speed: its best epoch.

    The best, not the mean: graph tracing can only slow the first epoch down, and another
    tenant of a shared machine any epoch; one slowed epoch in a short run would otherwise
    decide the ratio.
    """
    return max(per_epoch)


def add_ratios(measured_round: dict, names: list[str]) -> None:
    """Each side's speed and peak-RSS ratio to the reference side of the same round."""
    reference = measured_round["reference"]
    for name in names:
        if name == "reference":
            continue
        side = measured_round[name]
        measured_round[f"{name}_speed_ratio"] = side["images_per_s"] / reference["images_per_s"]
        measured_round[f"{name}_rss_ratio"] = side["peak_rss_mb"] / reference["peak_rss_mb"]


def _row(epochs: list[dict], measured) -> dict:  # type: ignore[no-untyped-def]
    per_epoch = [row["images_per_s"] for row in epochs]
    return {
        "images_per_s_per_epoch": per_epoch,
        "images_per_s": steady_images_per_s(per_epoch),
        "peak_rss_mb": measured.peak_rss_mb,
        "wall_s": measured.wall_s,
        # Whole process (start-up included): a load-independent view of the cost.
        "cpu_s": measured.cpu_s,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--first-round", type=int, default=1, help="number of the first round (sets the order)"
    )
    args = parser.parse_args(argv)
    prepared = args.prepared_dir.resolve()
    sides = {"reference": None, "stage": []}
    # On a CPU with bf16 the stage also runs in the precision its defaults did not pick: float32
    # shows what the data path alone is worth, bf16 what the precision would add.
    flags = cpu_bf16_flags()
    default = resolve_precision_policy("auto", bool(gpu_info()), flags)
    if flags:
        other = "float32" if default != "float32" else "bf16"
        sides[f"stage_{other}"] = [
            f'train.mixed_precision="{"off" if other == "float32" else "on"}"'
        ]
    # The defaults with the other steps_per_execution: the evidence for that default.
    other_spe = steps_per_execution_side(load_params(REPO_ROOT / "params.yaml").train)
    sides[f"stage_spe{other_spe}"] = [f"train.steps_per_execution={other_spe}"]
    result: dict = {
        "machine": machine_info(),
        "epochs": args.epochs,
        "stage_default_policy": default,
        "rounds": [],
    }
    names = list(sides)
    for index in range(args.first_round - 1, args.first_round - 1 + args.rounds):
        # Rotate the order each round: reference first, then stage first, ...
        order = names[index % len(names) :] + names[: index % len(names)]
        measured_round: dict = {"round": index + 1, "order": order}
        for name in order:
            with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
                work = Path(tmp)
                if sides[name] is None:
                    measured_round[name] = run_reference(prepared, args.epochs, work)
                else:
                    measured_round[name] = run_stage(prepared, args.epochs, work, sides[name])
        add_ratios(measured_round, names)
        result["rounds"].append(measured_round)
        result["summary"] = summary(result["rounds"], names)
        write_json(args.out, result)


def summary(rounds: list[dict], names: list[str]) -> dict:
    """Per side: mean images/s and peak RSS over rounds; ratios to the reference (mean, range)."""
    sides: dict = {}
    for name in names:
        sides[name] = {
            "images_per_s": statistics.mean(r[name]["images_per_s"] for r in rounds),
            "peak_rss_mb": statistics.mean(r[name]["peak_rss_mb"] for r in rounds),
        }
        if name != "reference":
            for kind in ("speed", "rss"):
                ratios = [r[f"{name}_{kind}_ratio"] for r in rounds]
                sides[name][f"{kind}_ratio"] = statistics.mean(ratios)
                sides[name][f"{kind}_ratio_range"] = [min(ratios), max(ratios)]
    return sides


if __name__ == "__main__":
    main()
