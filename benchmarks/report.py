"""Write docs/benchmarks.md from the benchmarks' JSON outputs.

Every figure in the file comes from a JSON file in the results folder; a benchmark that was not
run (or not run to the end) is reported as such, never filled in.

    python -m benchmarks.report [--results benchmarks/results] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, machine_info, read_json
from benchmarks.serving import report_lines as serving_lines
from benchmarks.time_to_accuracy import REFERENCE, seed_groups, summarise
from benchmarks.train_throughput import (
    add_ratios,
    steady_images_per_s,
    steps_per_execution_side,
)
from benchmarks.train_throughput import summary as throughput_summary
from pipeline.core.params import load_params

NOT_MEASURED = "not measured"


def _load(results: Path, name: str) -> dict | None:
    path = results / f"{name}.json"
    return read_json(path) if path.is_file() else None


def load_throughput(results: Path) -> dict | None:
    """train_throughput.json, plus the rounds of any train_throughput-*.json beside it.

    Rounds may run as separate processes (``--first-round``); the summary is recomputed over all.
    """
    parts = [read_json(path) for path in sorted(results.glob("train_throughput*.json"))]
    parts = [part for part in parts if part.get("rounds")]
    if not parts:
        return None
    merged = {**parts[0], "rounds": [r for part in parts for r in part["rounds"]]}
    merged["rounds"].sort(key=lambda r: r.get("round", 0))
    names = ["reference", *(key for key in merged["rounds"][0]["order"] if key != "reference")]
    # Recomputed from the per-epoch speeds, so files written before a change of the steady
    # speed's definition read the same as new ones.
    for measured in merged["rounds"]:
        for name in names:
            side = measured[name]
            side["images_per_s"] = steady_images_per_s(side["images_per_s_per_epoch"])
        add_ratios(measured, names)
    merged["summary"] = throughput_summary(merged["rounds"], names)
    return merged


def _f(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return NOT_MEASURED
    return f"{value:,.{digits}f}{suffix}"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _status(ok: bool | None) -> str:
    return {True: "**met**", False: "**missed**", None: NOT_MEASURED}[ok]


def machine_section(machine: dict[str, Any]) -> list[str]:
    cpu = machine["cpu"]
    libraries = ", ".join(f"{name} {version}" for name, version in machine["libraries"].items())
    load = ", ".join(f"{value:.1f}" for value in machine.get("load_average", []))
    return [
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {cpu['model']}, {cpu['usable_cores']} usable cores "
        f"({cpu['logical_cores']} logical) |",
        f"| CPU flags that matter | {', '.join(cpu['flags']) or 'none'} |",
        f"| GPU | {', '.join(machine['gpu']) or 'none'} |",
        f"| memory | {_f(machine.get('memory_gb'), 1, ' GB')} |",
        f"| software | Python {machine['python']}, {libraries} |",
        f"| load average at start (1/5/15 min) | {load} |",
        f"| measured | {machine['measured_at']} |",
        "",
    ]


def throughput_section(data: dict | None) -> tuple[list[str], dict]:
    lines = ["## Train stage against the reference way", ""]
    if not data or not data.get("rounds"):
        return [*lines, f"{NOT_MEASURED.capitalize()}.", ""], {}
    lines += [
        f"{len(data['rounds'])} round(s), {data['epochs']} epochs per side per round, each side in "
        "its own process, order rotated every round. images/s: the best epoch (graph tracing can "
        "only slow the first down, other tenants of a shared machine any); peak RSS: the "
        "process's own `ru_maxrss`; process CPU s: user + system time of the whole process, "
        "start-up included.",
        "",
        "| round | side | images/s per epoch | images/s | peak RSS (MB) | process CPU s "
        "| speed ratio | RSS ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, measured in enumerate(data["rounds"], start=1):
        number = measured.get("round", index)
        for side in measured["order"]:
            row = measured[side]
            policy = side_policy(side, data.get("stage_default_policy"))
            per_epoch = ", ".join(f"{value:,.0f}" for value in row["images_per_s_per_epoch"])
            speed = measured.get(f"{side}_speed_ratio")
            rss = measured.get(f"{side}_rss_ratio")
            lines.append(
                f"| {number} | {side} ({policy or '?'}) | {per_epoch} | "
                f"{row['images_per_s']:,.0f} | "
                f"{row['peak_rss_mb']:,.0f} | {_f(row.get('cpu_s'))} | "
                f"{_f(speed, 2, 'x') if speed else '1'} | "
                f"{_f(rss, 2, 'x') if rss else '1'} |"
            )
    summary = data["summary"]
    lines += ["", "| side | mean images/s | mean peak RSS (MB) | speed ratio (range) | RSS ratio |"]
    lines.append("|---|---|---|---|---|")
    for side, row in summary.items():
        ratio = (
            f"{row['speed_ratio']:.2f}x ({row['speed_ratio_range'][0]:.2f}-"
            f"{row['speed_ratio_range'][1]:.2f})"
            if "speed_ratio" in row
            else "1"
        )
        rss = f"{row['rss_ratio']:.2f}x" if "rss_ratio" in row else "1"
        lines.append(
            f"| {side} | {row['images_per_s']:,.0f} | {row['peak_rss_mb']:,.0f} | {ratio} | {rss} |"
        )
    return [*lines, ""], summary


def precision_section(data: dict | None) -> tuple[list[str], dict]:
    lines = ["## float32 against bfloat16 on this CPU (`mixed_precision: auto`)", ""]
    if not data or not data.get("runs"):
        return [*lines, f"{NOT_MEASURED.capitalize()}.", ""], {}
    summary = data["summary"]
    lines += [
        f"The reference configuration through the project's training code, {data['epochs']} "
        "epochs per run, float32 (`off`) and bfloat16 (`on`) alternated per seed; test accuracy "
        "scored after the last epoch.",
        "",
        "| seed | precision | images/s | training s | final test accuracy | peak RSS (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for run in data["runs"]:
        lines.append(
            f"| {run['seed']} | {run['policy']} | {run['images_per_s']:,.0f} | "
            f"{run['train_seconds']:,.0f} | {run['final_test_accuracy']:.4f} | "
            f"{run['peak_rss_mb']:,.0f} |"
        )
    lines += ["", "| seed | bf16 speed ratio | bf16 - float32 test accuracy |", "|---|---|---|"]
    for pair in summary.get("pairs", []):
        lines.append(
            f"| {pair['seed']} | {pair['speed_ratio']:.2f}x | {pair['accuracy_delta']:+.4f} |"
        )
    spread = summary.get("float32_seed_spread")
    lines += [
        "",
        f"Seed-to-seed spread of float32's final test accuracy: {_f(spread, 4)}.",
        "",
        "Test accuracy after each epoch, same seed, float32 against bfloat16 (the epoch-to-epoch "
        "swing of one run is the noise a final-accuracy difference is judged against):",
        "",
        "| seed | epoch | float32 | bfloat16 | difference |",
        "|---|---|---|---|---|",
    ]
    for seed in sorted({run["seed"] for run in data["runs"]}):
        by_mode = {run["mode"]: run for run in data["runs"] if run["seed"] == seed}
        if set(by_mode) != {"off", "on"}:
            continue
        curves = zip(
            by_mode["off"]["test_accuracy_per_epoch"],
            by_mode["on"]["test_accuracy_per_epoch"],
            strict=False,
        )
        for epoch, (f32, bf16) in enumerate(curves, start=1):
            lines.append(f"| {seed} | {epoch} | {f32:.4f} | {bf16:.4f} | {bf16 - f32:+.4f} |")
    return [*lines, ""], summary


def tta_section(data: dict | None, base: Path) -> tuple[list[str], dict]:
    lines = ["## Time to accuracy", ""]
    if not data or not data.get("configs"):
        return [*lines, f"{NOT_MEASURED.capitalize()}.", ""], {}
    summary = summarise(data, base)
    target = data["target"]
    lines += [
        f"Target: test accuracy {target:.1%} (the seed tutorial's 50-epoch result). Test "
        "accuracy is scored after every epoch (or after the last only, as evaluate scores: then "
        "a time to a mark is at most the figure marked <=), outside the timed part; time is the "
        "sum of epoch times (training + validation) up to the first epoch at or above the target. "
        "One run per configuration, one after the other in this run of the benchmark.",
        "",
        "| configuration | precision | epochs run / planned | epochs to target | "
        "seconds to target | ratio to reference-config | final test accuracy | best |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        reached = row["reached"]
        ratio = row.get("time_ratio_to_reference")
        planned = f"{row['epochs_run']} / {row['epochs_planned']}"
        if row["epochs_capped_to"] < row["epochs_planned"]:
            planned += f" (capped to {row['epochs_capped_to']})"
        if not row["complete"]:
            planned += " (interrupted)"
        elif row["epochs_run"] < row["epochs_capped_to"]:
            planned += " (stopped at target)"
        bound = "" if row.get("scored_every_epoch", True) else "<= "
        lines.append(
            f"| {name} | {row['policy']} | {planned} | "
            f"{bound}{reached['epoch'] if reached else 'not reached'} | "
            f"{bound}{_f(reached['seconds'], 0) if reached else '-'} | "
            f"{bound}{_f(ratio, 3) if ratio else '-'} | {_f(row['final_test_accuracy'], 4)} | "
            f"{_f(row['best_test_accuracy'], 4)} |"
        )
    for name, entry in data["configs"].items():
        other = entry.get("machine")
        if other and name in summary:
            # Merged in from another session: its conditions are not the run above's.
            lines += [
                "",
                f"`{name}` was measured in another session, from {other['measured_at']}, "
                f"load average {other['load_average'][0]:.1f} at its start "
                f"({other['cpu']['model']}, {other['cpu']['usable_cores']} usable cores); its "
                "wall times are not comparable with the rows above, its process CPU seconds are "
                "closer to.",
            ]
    lines += [
        "",
        "Time to the fast net's marks (profiles/fast-resnet.yaml), the same sums of epoch times; "
        "process CPU seconds include start-up and the per-epoch test scoring:",
        "",
        "| configuration | epochs / seconds to 91% | epochs / seconds to 94% | process CPU s |",
        "|---|---|---|---|",
    ]
    for name, row in summary.items():
        bound = "" if row.get("scored_every_epoch", True) else "<= "
        marks = [
            f"{bound}{mark['epoch']} / {bound}{mark['seconds']:.0f}" if mark else "not reached"
            for mark in (row.get("reached_marks") or {}).values()
        ] or ["-", "-"]
        lines.append(f"| {name} | {' | '.join(marks)} | {_f(row.get('process_cpu_s'), 0)} |")
    groups = seed_groups(summary)
    if groups:
        lines += [
            "",
            "Means over seeds (± the standard deviation, then the lowest and highest seed); "
            '"within budget" is the best score by reference-config\'s total training time in '
            "this run:",
            "",
            "| profile | seeds | scored with | best | within budget | training s (mean) | "
            "reached 91% | reached 94% |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for profile, group in groups.items():
            n, reached = len(group["seeds"]), group["marks_reached"]
            within = group.get("within_budget")
            lines.append(
                f"| {profile} | {', '.join(str(seed) for seed in group['seeds'])} | "
                f"{group['scored_with']} | {_mean_spread(group['best'])} | "
                f"{_mean_spread(within) if within else '-'} | "
                f"{group['train_seconds']['mean']:,.0f} | {reached['0.91']} of {n} | "
                f"{reached['0.94']} of {n} |"
            )
    for profile, group in groups.items():
        by_scoring = group.get("final_by_scoring") or {}
        if len(by_scoring) > 1:
            # The same final weights scored each way: what each test-time augmentation adds.
            views = ", ".join(f"{label} {_mean_spread(v)}" for label, v in by_scoring.items())
            lines += ["", f"`{profile}`'s final weights, scored each way: {views}."]
    for profile, sizing in (data.get("sizing") or {}).items():
        lines += [
            "",
            f"`{profile}` was sized in this run: {sizing['epochs']} epochs = "
            f"{sizing['budget_share']:.2f} x reference-config's "
            f"{sizing['reference_train_s']:.0f} s / {sizing['first_epoch_s']:.1f} s (the epoch of "
            "a one-epoch run, tracing included).",
        ]
    lines += [
        "",
        "Test accuracy per epoch (with TTA: one view per image in brackets; - not scored):",
        "",
    ]
    for name, row in summary.items():
        # "-": an epoch not scored (--final-only scores the last one only).
        scores, one_view = row["test_accuracy_per_epoch"], row["one_view_per_epoch"]
        if len(scores) > 1 and not any(value is not None for value in scores[:-1]):
            # Scored after the last epoch only (--final-only): no curve, one figure.
            scores, one_view = scores[-1:], one_view[-1:]
            curve = f"after epoch {row['epochs_run']} only: "
        else:
            curve = ""
        curve += ", ".join(_score(value) for value in scores)
        if row.get("scored_with") != "one view":
            curve += " (" + ", ".join(_score(v) for v in one_view) + ")"
        lines.append(f"- {name}: {curve}")
    lines += ["", "Profiles:", ""]
    for name, row in summary.items():
        if name != REFERENCE:
            lines.append(f"- `{name}`: {' '.join(row['overrides'])}")
    return [*lines, ""], summary


def overhead_section(data: dict | None) -> tuple[list[str], dict]:
    lines = ["## Fixed costs: start-up, no-op `dvc repro`, evaluate, serving", ""]
    if not data:
        return [*lines, f"{NOT_MEASURED.capitalize()}.", ""], {}
    startup = data["startup"]
    lines += [
        f"Fresh interpreter each time; median of the repeats. A bare `python -c pass` takes "
        f"{startup['python_s']:.2f} s.",
        "",
        "| stage | `--help` s | heavy modules loaded by `--help` / by a params error | "
        "library import s (start-up before work) |",
        "|---|---|---|---|",
    ]
    for stage, row in startup.items():
        if isinstance(row, dict):
            loaded = (
                f"{', '.join(row['help_imports']) or 'none'} / "
                f"{', '.join(row.get('params_error_imports', [])) or 'none'}"
            )
            lines.append(f"| {stage} | {row['help_s']:.2f} | {loaded} | {row['import_s']:.2f} |")
    pipeline = data.get("pipeline")
    if pipeline:
        lines += [
            "",
            f"Scratch copy of the project, pipeline run once ({data['train_size']} training "
            f"images, 1 epoch; first `dvc repro` {pipeline['first_repro_s']:.0f} s):",
            "",
            "| | median s | all runs s |",
            "|---|---|---|",
            f"| no-op `dvc repro` | {pipeline['noop_repro_s']:.2f} | "
            f"{', '.join(f'{v:.2f}' for v in pipeline['noop_repro_all_s'])} |",
            f"| evaluate stage ({pipeline['test_images']:,} test images, report, registry) | "
            f"{pipeline['evaluate_s']:.1f} | "
            f"{', '.join(f'{v:.1f}' for v in pipeline['evaluate_all_s'])} |",
        ]
    serving = data.get("serving")
    if serving:
        lines += [
            "",
            f"`mlflow models serve` of the champion on 127.0.0.1 (`--env-manager local`, 1 "
            f"worker; ready after {serving['startup_s']:.0f} s), sequential JSON requests after "
            "one warm-up request:",
            "",
            "| images per request | requests | p50 ms | p99 ms | images/s |",
            "|---|---|---|---|---|",
        ]
        for key, row in serving.items():
            if key.startswith("batch_"):
                lines.append(
                    f"| {key.removeprefix('batch_')} | {row['requests']} | {row['p50_ms']:.0f} | "
                    f"{row['p99_ms']:.0f} | {row['images_per_s']:,.0f} |"
                )
    return [*lines, ""], data


def predict_section(data: dict | None) -> list[str]:
    """Batch prediction: wall time of ``python -m stages.predict`` on N PNG files."""
    lines = ["## Batch prediction (`python -m stages.predict`)", ""]
    if not data:
        return [*lines, f"{NOT_MEASURED.capitalize()}.", ""]
    return [
        *lines,
        f"{data['images']:,} PNG files of the test split through the champion (params.yaml's "
        f"architecture), the whole command in a fresh interpreter on {data['cpu_cores']} CPU "
        "cores: start-up, model loading, decoding, prediction, CSV, figures, MLflow run.",
        "",
        "| images | wall s | CPU s | images/s | peak RSS MB |",
        "|---|---|---|---|---|",
        f"| {data['images']:,} | {data['wall_s']:.1f} | {data['cpu_s']:.1f} | "
        f"{data['images_per_s']:,.0f} | {data['peak_rss_mb']:,.0f} |",
        "",
        f"Load average when it ran: {_load_average(data['machine'])}. Other processes' load "
        "stretches the wall time; the CPU seconds (user + system, all threads) it hardly moves.",
        "",
    ]


def _load_average(machine: dict[str, Any]) -> str:
    load = machine.get("load_average")
    return f"{load[0]:.1f} (1 min)" if load else "not recorded"


def gpu_runs(results: Path) -> list[dict]:
    """Every timed run of the GPU check (``gpu-*/*.jsonl`` from benchmarks/device_run.sh)."""
    runs = []
    for path in sorted(results.glob("gpu-*/*.jsonl")):
        for line in path.read_text().splitlines():
            run = json.loads(line) if line.strip() else {}
            if run.get("images_per_s"):
                # Training wall time, compile included: each epoch's images over its images/s.
                run["train_s"] = sum(run["images"] / ips for ips in run["images_per_s"])
                run["source"] = _relative(path)
                runs.append(run)
    return runs


def gpu_section(runs: list[dict]) -> list[str]:
    lines = ["## GPU", ""]
    if not runs:
        return [
            *lines,
            "Not measured (no GPU here). `benchmarks/device_run.sh` on a GPU machine writes "
            "`benchmarks/results/gpu-<card>/*.jsonl`; this section shows them once they are there.",
            "",
        ]
    lines += [
        "`benchmarks/gpu_check.py` through the project's training code on synthetic uint8 images "
        "(45,000 per epoch, batch 256), so these runs say nothing about accuracy. Training time "
        "is the sum of each epoch's images over its images/s, the first (compiling) epoch "
        "included.",
        "",
        "Compilation cache: JAX's persistent cache, off, cold (empty: this run fills it) or "
        "warm (filled by the run before). Runs without the field predate the cache: off.",
        "",
        "| card | backend | policy | steps per execution | compilation cache | epochs | "
        "first epoch s | images/s after it | training s | raw |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    cache_order = {"off": 0, "cold": 1, "warm": 2}
    for run in sorted(
        runs,
        key=lambda r: (
            r["epochs"],
            r["steps_per_execution"],
            cache_order[r.get("compile_cache", "off")],
            r["source"],
        ),
    ):
        lines.append(
            f"| {run['device']} | {run['backend']} {run['backend_version']} | {run['policy']} | "
            f"{run['steps_per_execution']} | {run.get('compile_cache', 'off')} | {run['epochs']} | "
            f"{run['first_epoch_s']:.1f} | {run['mean_images_per_s_after_first']:,} | "
            f"{run['train_s']:.1f} | {Path(run['source']).parent.name} |"
        )
    sources = sorted({run["source"] for run in runs})
    return [*lines, "", f"Raw: {', '.join(f'`{s}`' for s in sources)}.", ""]


def side_policy(side: str, stage_default: str | None) -> str | None:
    """The precision a throughput side trained in: the stage's defaults, or the forced one."""
    forced = {"reference": "float32", "stage_float32": "float32", "stage_bf16": "mixed_bfloat16"}
    return forced.get(side, stage_default)


def steps_per_execution_row(rounds: list[dict], gpu: list[dict]) -> tuple[str, str, str]:
    """params.yaml's train.steps_per_execution against 1, on this CPU and on the GPU runs."""
    train = load_params(REPO_ROOT / "params.yaml").train
    chosen, other = train.steps_per_execution, steps_per_execution_side(train)
    found = []
    # Per round (the two sides minutes apart), then the mean: load drifts between rounds.
    side = f"stage_spe{other}"
    ratios = [
        r["stage"]["images_per_s"] / r[side]["images_per_s"]
        for r in rounds
        if side in r and "stage" in r
    ]
    if ratios:
        found.append(
            f"CPU {sum(ratios) / len(ratios):.2f}x the images/s of {other} (rounds: "
            f"{', '.join(f'{ratio:.2f}' for ratio in ratios)})"
        )
    # Pairs from one GPU session (one results folder), both compiling from scratch.
    by_source: dict[tuple[str, int], dict] = {}
    for run in gpu:
        if run["epochs"] >= 50 and run.get("compile_cache", "off") == "off":
            by_source[(str(Path(run["source"]).parent), run["steps_per_execution"])] = run
    for (folder, spe), run in sorted(by_source.items()):
        single = by_source.get((folder, 1))
        if spe == chosen and single:
            ratio = run["mean_images_per_s_after_first"] / single["mean_images_per_s_after_first"]
            found.append(f"{run['device']} {ratio:.2f}x the images/s of 1 ({Path(folder).name})")
    return (
        f"`train.steps_per_execution` default ({chosen}) chosen by measurement",
        "; ".join(found) or NOT_MEASURED,
        "**met**" if found else NOT_MEASURED,
    )


def targets_section(
    rounds: list[dict],
    throughput: dict,
    throughput_policy: str | None,
    tta: dict,
    overhead: dict,
    gpu: list[dict],
) -> list[str]:
    """Every target of the issue with the figure measured for it and whether it is met."""
    rows = []
    # The steps_per_execution side is evidence for that default, not a precision target.
    sides = {
        name: row
        for name, row in throughput.items()
        if name.startswith("stage") and not name.startswith("stage_spe")
    }
    for side, row in sides.items():
        policy = side_policy(side, throughput_policy)
        bf16 = policy == "mixed_bfloat16"
        need = 4.0 if bf16 else 1.5
        label = f"{side} ({policy or 'policy not recorded'})"
        rows.append(
            (
                f"{label} vs reference images/s >= {need}x (CPU {'with' if bf16 else 'without'} "
                "bf16)",
                f"{row['speed_ratio']:.2f}x (rounds: {row['speed_ratio_range'][0]:.2f}-"
                f"{row['speed_ratio_range'][1]:.2f})",
                _status(row["speed_ratio"] >= need),
            )
        )
        rows.append(
            (
                f"{label} peak RSS <= 0.5x reference",
                f"{row['rss_ratio']:.2f}x",
                _status(row["rss_ratio"] <= 0.5),
            )
        )
    if not sides:
        rows.append(("train stage vs reference (speed, RSS)", NOT_MEASURED, _status(None)))
    rows.append(steps_per_execution_row(rounds, gpu))
    fast, reference = tta.get("fast"), tta.get(REFERENCE)
    ratio = fast.get("time_ratio_to_reference") if fast else None
    if ratio is not None:
        rows.append(
            (
                "`fast` reaches 75.5% in <= 1/6 of reference-config's time",
                f"{ratio:.3f} ({fast['reached']['seconds']:.0f} s vs "
                f"{reference['reached']['seconds']:.0f} s)",
                _status(ratio <= 1 / 6),
            )
        )
    else:
        have = []
        if fast:
            have.append(
                f"fast: {fast['reached']['seconds']:.0f} s (epoch {fast['reached']['epoch']})"
                if fast["reached"]
                else f"fast: not reached in {fast['epochs_run']} epochs"
            )
        if reference:
            have.append(
                f"reference-config: not reached in {reference['epochs_run']} epochs"
                if not reference["reached"]
                else f"reference-config: {reference['reached']['seconds']:.0f} s"
            )
        status = _status(None) if not have else "not established (ratio needs both)"
        if fast and fast["reached"] and not reference:
            # Same CNN and batch, so the same time per epoch: the reference configuration
            # reaches the target within its planned epochs, which bounds the ratio from below.
            planned = load_params(REPO_ROOT / "params.yaml").train.epochs
            bound = fast["reached"]["epoch"] / planned
            have.append(f"reference-config not run; in epochs the ratio is >= {bound:.2f}")
            status = "not measured; the bound says **missed**" if bound > 1 / 6 else status
        rows.append(
            (
                "`fast` reaches 75.5% in <= 1/6 of reference-config's time",
                "; ".join(have) or NOT_MEASURED,
                status,
            )
        )
    if reference:
        acc = reference["final_test_accuracy"]
        done = reference["complete"] and reference["epochs_run"] >= 50
        rows.append(
            (
                "reference configuration test accuracy >= 0.79 (50 epochs)",
                f"{acc:.4f} after {reference['epochs_run']} epochs",
                _status(acc >= 0.79) if done else "not established (fewer than 50 epochs run)",
            )
        )
    else:
        rows.append(
            ("reference configuration test accuracy >= 0.79 (50 epochs)", NOT_MEASURED, "-")
        )
    group = seed_groups(tta).get("fast-resnet")
    rows += (
        fast_resnet_seed_rows(group, reference)
        if group
        else fast_resnet_rows(tta.get("fast-resnet"), reference)
    )
    augment = tta.get("augment")
    if not augment:
        rows.append(("`augment` profile: aim 0.85", NOT_MEASURED, "-"))
    else:
        rows.append(
            (
                "`augment` profile: aim 0.85",
                f"{augment['best_test_accuracy']:.4f} best, {augment['final_test_accuracy']:.4f} "
                f"final after {augment['epochs_run']} epochs ({augment['train_seconds']:.0f} s)",
                _status(augment["best_test_accuracy"] >= 0.85),
            )
        )
    pipeline = overhead.get("pipeline") if overhead else None
    if pipeline:
        rows.append(
            (
                "no-op `dvc repro` < 1.5 s",
                f"{pipeline['noop_repro_s']:.2f} s",
                _status(pipeline["noop_repro_s"] < 1.5),
            )
        )
    if overhead:
        loaded = {
            stage: row["help_imports"] + row.get("params_error_imports", [])
            for stage, row in overhead["startup"].items()
            if isinstance(row, dict)
        }
        heavy = {stage: mods for stage, mods in loaded.items() if mods}
        rows.append(
            (
                "no stage imports TensorFlow for `--help` or a params error",
                "none do" if not heavy else f"{heavy}",
                _status(not heavy),
            )
        )
    full = [run for run in gpu if run["epochs"] >= 50]
    if full:
        compiling = [run for run in full if run.get("compile_cache", "off") != "warm"]
        warm = [run for run in full if run.get("compile_cache") == "warm"]
        best = min(compiling or full, key=lambda run: run["train_s"])
        single = [run for run in compiling if run["steps_per_execution"] == 1]
        measured = f"{best['train_s']:.1f} s best compiling from scratch ({best['device']}, "
        measured += f"{best['backend']}, steps_per_execution {best['steps_per_execution']})"
        if warm:
            fastest = min(warm, key=lambda run: run["train_s"])
            measured += f"; {fastest['train_s']:.1f} s with a warm compilation cache"
            best = min(best, fastest, key=lambda run: run["train_s"])
        if single:
            measured += f"; {min(r['train_s'] for r in single):.1f} s with steps_per_execution 1"
        rows.append(
            (
                "GPU: 50 epochs of the reference configuration < 20 s (same accuracy as CPU)",
                measured + "; accuracy not measured (synthetic data)",
                _status(best["train_s"] < 20),
            )
        )
    else:
        rows.append(("GPU: 50 epochs of the reference configuration < 20 s", NOT_MEASURED, "-"))
    lines = ["## Targets", "", "| target | measured | status |", "|---|---|---|"]
    lines += [f"| {target} | {value} | {status} |" for target, value, status in rows]
    return [*lines, ""]


FAST_RESNET_GOAL = (
    "`fast-resnet` reaches 0.91 (mean of 3 seeds) within reference-config's 50-epoch training "
    "time (same run); aim 0.94"
)
FAST_RESNET_LONGER = "a longer CPU profile reaches 0.935 (mean of 3 seeds)"
FAST_RESNET_GPU = (
    "GPU (one H200): `fast-resnet` reaches 0.94 in < 10 s of training",
    NOT_MEASURED,
    "-",
)


def _mean_spread(spread: dict) -> str:
    """``mean ± sd (min-max)`` of a :func:`benchmarks.time_to_accuracy.seed_groups` figure."""
    return f"{spread['mean']:.4f} ± {spread['stdev']:.4f} ({spread['min']:.4f}-{spread['max']:.4f})"


def fast_resnet_seed_rows(group: dict, reference: dict | None) -> list[tuple[str, str, str]]:
    """The fast net's CPU targets from several seeds: claims are means, with their spread."""
    n = len(group["seeds"])
    reached = group["marks_reached"]
    full_reference = bool(reference and reference["complete"] and reference["epochs_run"] >= 50)
    within = group.get("within_budget")
    if within and full_reference:
        measured = (
            f"{n} seeds, scored with {group['scored_with']}: best within reference-config's "
            f"50-epoch time ({group['budget_s']:.0f} s) {_mean_spread(within)}; 0.91 reached by "
            f"{reached['0.91']} of {n}; fast-resnet trained {group['train_seconds']['mean']:.0f} s"
            " on average"
        )
        if group.get("over_budget"):
            seeds = ", ".join(str(seed) for seed in group["over_budget"])
            measured += f"; no score within the budget for seed {seeds} (counted as 0)"
        status = (
            _status(within["mean"] >= 0.91)
            if group["complete"]
            else "not established (interrupted)"
        )
    else:
        measured = f"{n} seeds: best {_mean_spread(group['best'])}"
        status = "not established (reference-config's 50 epochs not in this run)"
    best = group["best"]
    longer = (
        f"{n} seeds: best {_mean_spread(best)}; 0.94 reached by {reached['0.94']} of {n}",
        _status(True) if best["mean"] >= 0.935 else "not established (no longer profile run)",
    )
    return [(FAST_RESNET_GOAL, measured, status), (FAST_RESNET_LONGER, *longer), FAST_RESNET_GPU]


def fast_resnet_rows(fast: dict | None, reference: dict | None) -> list[tuple[str, str, str]]:
    """The fast residual net's CPU targets from one seed: 90% within the reference's 50 epochs,
    and 94%."""
    goal, longer, gpu = FAST_RESNET_GOAL, FAST_RESNET_LONGER, FAST_RESNET_GPU
    if not fast:
        return [(goal, NOT_MEASURED, "-"), (longer, NOT_MEASURED, "-"), gpu]
    marks = fast.get("reached_marks") or {}
    ninety, best = marks.get("0.91"), fast["best_test_accuracy"]
    planned = f"{fast['epochs_run']} of {fast['epochs_capped_to']} epochs"
    # One seed per configuration: the issue asks for means over 3 seeds before claiming a target.
    measured = "one seed: " + (
        f"0.91 at epoch {ninety['epoch']}, {ninety['seconds']:.0f} s"
        if ninety
        else f"not reached in {planned} (best {best:.4f}, {fast['train_seconds']:.0f} s)"
    )
    full_reference = bool(reference and reference["complete"] and reference["epochs_run"] >= 50)
    if not ninety and fast["complete"]:
        # Never reached in the whole profile (sized to the reference's budget): missed, in any
        # run of the reference.
        status = _status(False)
        if reference:
            measured += f"; reference-config's 50 epochs: {reference['train_seconds']:.0f} s"
            if fast.get("other_session"):
                measured += " (wall times of two sessions under different loads)"
    elif full_reference and fast.get("other_session"):
        measured += (
            f"; reference-config's 50 epochs took {reference['train_seconds']:.0f} s in another"
            " session"
        )
        status = "not established (not in the same run)"
    elif full_reference and ninety:
        measured += f" vs reference-config's 50 epochs {reference['train_seconds']:.0f} s"
        status = _status(ninety["seconds"] <= reference["train_seconds"])
    elif full_reference:
        status = _status(False) if fast["complete"] else "not established (interrupted)"
    else:
        status = "not established (reference-config's 50 epochs not in this run)"
    ninety_four = marks.get("0.94")
    return [
        (goal, measured, status),
        (
            longer,
            f"at epoch {ninety_four['epoch']}, {ninety_four['seconds']:.0f} s"
            if ninety_four
            else f"not reached (best {best:.4f} in {planned})",
            _status(True) if ninety_four else "not established (no longer profile run)",
        ),
        gpu,
    ]


def build(results: Path) -> str:
    throughput_data = load_throughput(results)
    precision_data = _load(results, "precision")
    tta_data = _load(results, "time_to_accuracy")
    overhead_data = _load(results, "overhead")
    machine = next(
        (d["machine"] for d in (throughput_data, tta_data, precision_data, overhead_data) if d),
        machine_info(),
    )
    throughput_lines, throughput = throughput_section(throughput_data)
    precision_lines, _ = precision_section(precision_data)
    tta_lines, tta = tta_section(tta_data, results)
    overhead_lines, overhead = overhead_section(overhead_data)
    header = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks.report`) from the JSON files in "
        f"`{_relative(results)}/`; every ratio compares figures measured side by side in the "
        "same run of a benchmark. Absolute timings depend on the machine and its load (see "
        "Machine); the ratios are the figures to compare.",
        "",
        "Run it: `make bench` (full size: all 45,000 training images, each configuration's own "
        "epochs; hours on a CPU). Knobs: `SIZE=` training images, `EPOCHS=`/`ROUNDS=` for the "
        "throughput benchmark, `TTA_EPOCHS=` to cap the time-to-accuracy runs, `ARCHIVE=` the "
        "CIFAR-10 archive (default: the download stage's output), `BENCH_ARGS=` any other "
        "`python -m benchmarks --help` option (e.g. `--only throughput`).",
        "",
        "Profiles (`profiles/*.yaml`) are partial params files applied over `params.yaml`: "
        "`python -m stages.train --profile fast`, or as a DVC experiment "
        "`python -m stages.exp_run --profile fast` (`make exp PROFILE=fast`).",
        "",
    ]
    body = [
        *header,
        *targets_section(
            (throughput_data or {}).get("rounds", []),
            throughput,
            (throughput_data or {}).get("stage_default_policy"),
            tta,
            overhead,
            gpu_runs(results),
        ),
        *machine_section(machine),
        *throughput_lines,
        *precision_lines,
        *tta_lines,
        *overhead_lines,
        *serving_lines(_load(results, "serving")),
        *predict_section(_load(results, "predict")),
        *gpu_section(gpu_runs(results)),
    ]
    notes = results / "NOTES.md"
    if notes.is_file():
        body += ["## Notes on this run", "", notes.read_text().strip(), ""]
    return "\n".join(body).rstrip() + "\n"


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    text = build(args.results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
