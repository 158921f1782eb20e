"""The benchmarks cannot rot: each runs end to end at toy size, and the report is built from them.

Nothing here times anything: speed is only ever reported by `make bench`, never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.overhead import HEAVY_MODULES, heavy_imports
from pipeline.core.params import architecture_names, load_params
from pipeline.core.profiles import known_profiles, load_profile
from tests.cifar_archive import build_archive
from tests.conftest import QUIET_ENV, REPO_ROOT

STAGES = ("download", "preprocess", "train", "evaluate")


@pytest.mark.e2e
@pytest.mark.parametrize("stage", STAGES)
def test_help_and_params_errors_answer_without_tensorflow(stage: str) -> None:
    code, loaded = heavy_imports(stage, "--help")
    assert code == 0 and loaded == [], f"--help loaded {loaded}"
    code, loaded = heavy_imports(stage, "--set", "train.epochs=0")
    assert code == 2 and loaded == [], f"a params error loaded {loaded}"


@pytest.mark.e2e
def test_predict_help_and_params_errors_answer_without_tensorflow(tmp_path: Path) -> None:
    code, loaded = heavy_imports("predict", "--help")
    assert code == 0 and loaded == [], f"--help loaded {loaded}"
    code, loaded = heavy_imports("predict", str(tmp_path), "--set", "predict.batch_size=0")
    assert code == 2 and loaded == [], f"a params error loaded {loaded}"
    code, loaded = heavy_imports("predict", str(tmp_path))  # an empty folder
    assert code == 2 and loaded == [], f"an empty folder loaded {loaded}"


@pytest.mark.e2e
def test_probe_sees_tensorflow_when_a_stage_loads_it(tmp_path: Path) -> None:
    # The probe above must be able to fail: a real training run does load TensorFlow.
    code, loaded = heavy_imports("train", "--prepared-dir", str(tmp_path / "missing"))
    assert code == 1 and "tensorflow" in loaded and set(loaded) <= set(HEAVY_MODULES)


@pytest.mark.parametrize("name", known_profiles())
def test_profiles_are_valid_params_and_keep_the_architectures(name: str) -> None:
    params = load_params(REPO_ROOT / "params.yaml", load_profile(name).overrides)
    reference = load_params(REPO_ROOT / "params.yaml")
    # A profile picks an architecture (model.arch), its recipe elements (model.<arch>.*) and
    # how it trains; every other architecture stays as params.yaml defines it, but for
    # switching its augmentation on.
    for arch in set(architecture_names()) - {params.model.arch}:
        assert getattr(params.model, arch).model_dump(exclude={"augment"}) == getattr(
            reference.model, arch
        ).model_dump(exclude={"augment"})
    assert params.train != reference.train


def test_report_says_not_measured_for_missing_results(tmp_path: Path) -> None:
    text = report.build(tmp_path)
    assert "## Targets" in text and "## Machine" in text
    # throughput, precision, time to accuracy, overhead, serving, batch prediction
    assert text.count("Not measured.") == 6


def _fit_file(folder: Path, key: str, seed: int, scores: list[float], tta: bool) -> dict:
    """A time-to-accuracy run's file as benchmarks.fit_run writes it: 100 s an epoch."""
    rows = []
    for epoch, score in enumerate(scores, start=1):
        row = {"epoch": epoch, "seconds": 100.0, "test_accuracy": score - 0.01}
        rows.append(row | ({"test_accuracy_flip_tta": score} if tta else {"test_accuracy": score}))
    fit = {
        "profile": key.split("@")[0], "epochs_planned": len(scores), "overrides": [],
        "params": {"train": {"epochs": len(scores), "seed": seed}}, "policy": "float32",
        "n_train": 100, "epochs": rows, "complete": True,
    }  # fmt: skip
    (folder / f"tta-{key}.json").write_text(json.dumps(fit))
    return {"file": f"tta-{key}.json", "profile": key.split("@")[0]}


@pytest.mark.parametrize(
    ("last_scores", "status"), [((0.91, 0.90, 0.92), "**met**"), ((0.91, 0.88, 0.90), "**missed**")]
)
def test_fast_net_target_is_a_mean_over_seeds_within_the_references_time(
    tmp_path: Path, last_scores: tuple[float, ...], status: str
) -> None:
    from benchmarks.common import machine_info

    # The reference: 50 epochs of 100 s, 5,000 s. Each seed: 60 epochs of 100 s, so only its
    # first 50 count, and its 60th (0.99) must not.
    configs = {"reference-config": _fit_file(tmp_path, "reference-config", 42, [0.8] * 50, False)}
    for seed, last in zip((42, 43, 44), last_scores, strict=True):
        scores = [0.5] * 49 + [last] + [0.99] * 10
        configs[f"fast-resnet@{seed}"] = _fit_file(
            tmp_path, f"fast-resnet@{seed}", seed, scores, True
        )
    tta = {"machine": machine_info(), "target": 0.755, "configs": configs}
    (tmp_path / "time_to_accuracy.json").write_text(json.dumps(tta))
    text = report.build(tmp_path)
    (row,) = [line for line in text.splitlines() if line.startswith("| `fast-resnet` reaches 0.91")]
    mean = sum(last_scores) / 3
    budget = "best within reference-config's 50-epoch time (5000 s)"
    assert f"3 seeds, scored with flip TTA: {budget} {mean:.4f} ± " in row
    assert row.endswith(f"| {status} |")
    assert "| fast-resnet | 42, 43, 44 | flip TTA |" in text


def test_a_run_scored_after_its_last_epoch_only_reports_that_score(tmp_path: Path) -> None:
    from benchmarks.time_to_accuracy import summarise

    entry = _fit_file(tmp_path, "fast-resnet@42", 42, [0.5, 0.6, 0.93], True)
    fit = json.loads((tmp_path / entry["file"]).read_text())
    for row in fit["epochs"][:-1]:  # --final-only: the epochs before the last are not scored
        del row["test_accuracy"], row["test_accuracy_flip_tta"]
    (tmp_path / entry["file"]).write_text(json.dumps(fit))
    (row,) = summarise({"target": 0.755, "configs": {"fast-resnet@42": entry}}, tmp_path).values()
    assert row["test_accuracy_per_epoch"] == [None, None, 0.93]
    assert row["final_test_accuracy"] == row["best_test_accuracy"] == 0.93
    assert row["reached_marks"]["0.91"] == {"epoch": 3, "seconds": 300.0}
    assert row["final_by_scoring"] == {"flip TTA": 0.93, "one view": 0.92}


def test_a_seed_scored_at_its_end_past_the_budget_fails_the_claim_by_name(tmp_path: Path) -> None:
    from benchmarks.common import machine_info

    # The reference: 50 epochs of 100 s. Seed 43 trains 51 epochs, so its only score comes
    # 100 s after the budget: it has none within it, however high.
    configs = {"reference-config": _fit_file(tmp_path, "reference-config", 42, [0.8] * 50, False)}
    for seed, epochs in ((42, 50), (43, 51)):
        scores = [0.5] * (epochs - 1) + [0.95]
        entry = _fit_file(tmp_path, f"fast-resnet@{seed}", seed, scores, True)
        fit = json.loads((tmp_path / entry["file"]).read_text())
        for row in fit["epochs"][:-1]:  # --final-only
            del row["test_accuracy"], row["test_accuracy_flip_tta"]
        (tmp_path / entry["file"]).write_text(json.dumps(fit))
        configs[f"fast-resnet@{seed}"] = entry
    tta = {"machine": machine_info(), "target": 0.755, "configs": configs}
    (tmp_path / "time_to_accuracy.json").write_text(json.dumps(tta))
    (row,) = [
        line for line in report.build(tmp_path).splitlines()
        if line.startswith("| `fast-resnet` reaches 0.91")
    ]  # fmt: skip
    assert "0.4750 ± " in row and "no score within the budget for seed 43 (counted as 0)" in row
    assert row.endswith("| **missed** |")


@pytest.mark.e2e
# Some 15 fresh interpreters, a DVC pipeline, a model server: minutes on 2 cores, many more on a
# loaded machine, hence the margin.
@pytest.mark.timeout(2400)
def test_every_benchmark_runs_at_toy_size_and_feeds_the_report(tmp_path: Path) -> None:
    archive = tmp_path / "cifar-10-binary.tar.gz"
    build_archive(archive, per_batch=60, n_test=50)
    results, doc = tmp_path / "results", tmp_path / "benchmarks.md"
    command = [
        sys.executable, "-m", "benchmarks", "--archive", str(archive),
        "--size", "200", "--val-size", "50", "--epochs", "2", "--rounds", "1",
        "--precision-epochs", "1", "--seeds", "42", "--tta-max-epochs", "1",
        # The budget's configuration and the one a target is set for prove the harness; the
        # other profiles run the same code (their params are checked above).
        "--tta-configs", "reference-config", "fast-resnet",
        # As the claim's run does: sized to the reference's time, scored as evaluate scores.
        "--tta-fit-to-reference", "fast-resnet", "--tta-final-only", "fast-resnet",
        "--overhead-train-size", "100", "--repeats", "1", "--requests", "2",
        "--serve-workers", "1", "--serve-seconds", "0", "--serve-requests", "1",
        "--predict-images", "60",
        "--results", str(results), "--report", str(doc), "--cache", str(tmp_path / "cache"),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO_ROOT, env={**os.environ, **QUIET_ENV},
        capture_output=True, text=True, timeout=2300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]

    throughput = json.loads((results / "train_throughput.json").read_text())
    (measured_round,) = throughput["rounds"]
    assert measured_round["reference"]["peak_rss_mb"] > 0
    assert len(measured_round["stage"]["images_per_s_per_epoch"]) == 2
    assert measured_round["stage_speed_ratio"] > 0 and measured_round["stage_rss_ratio"] > 0

    precision = json.loads((results / "precision.json").read_text())
    assert [run["mode"] for run in precision["runs"]] == ["off", "on"]
    assert {run["policy"] for run in precision["runs"]} == {"float32", "mixed_bfloat16"}

    tta = json.loads((results / "time_to_accuracy.json").read_text())
    summary = tta["summary"]
    assert set(summary) == {"reference-config", "fast-resnet"}
    assert all(row["epochs_run"] == 1 and row["complete"] for row in summary.values())
    assert set(summary["fast-resnet"]["reached_marks"]) == {"0.91", "0.94"}
    assert summary["fast-resnet"]["process_cpu_s"] > 0
    assert tta["sizing"]["fast-resnet"]["epochs"] >= 1
    assert (
        tta["sizing"]["fast-resnet"]["reference_train_s"]
        == summary["reference-config"]["train_seconds"]
    )
    assert summary["fast-resnet"]["scored_with"] == "mirror + translate TTA"
    assert set(summary["fast-resnet"]["final_by_scoring"]) == {
        "mirror + translate TTA", "flip TTA", "one view",
    }  # fmt: skip
    assert all(0.0 <= row["final_test_accuracy"] <= 1.0 for row in summary.values())

    overhead = json.loads((results / "overhead.json").read_text())
    assert overhead["pipeline"]["noop_repro_s"] > 0 and overhead["pipeline"]["test_images"] == 50
    assert overhead["serving"]["batch_256"]["p99_ms"] >= overhead["serving"]["batch_256"]["p50_ms"]
    assert all(overhead["startup"][stage]["help_imports"] == [] for stage in STAGES)

    serving = json.loads((results / "serving.json").read_text())
    assert set(serving["servers"]) == {"1"} and len(serving["servers"]["1"]) == 12
    assert all(cell["requests"] >= 1 for cell in serving["servers"]["1"].values())
    assert serving["summary"]["best_workers"] == 1 and serving["predict"]["256"]["images_per_s"] > 0
    predict = json.loads((results / "predict.json").read_text())
    assert predict["images"] == 60 and predict["wall_s"] > 0

    text = doc.read_text()
    assert "Not measured." not in text
    assert "| 256 images/request, base64 PNG: >= 70% of predict |" in text
    assert "| `fast-resnet` reaches 0.91 (mean of 3 seeds) within reference-config" in text
    for heading in ("## Targets", "## Train stage against the reference way", "## Time to accuracy",
                    "## float32 against bfloat16", "## Fixed costs", "## Serving",
                    "## Batch prediction"):  # fmt: skip
        assert heading in text


def test_a_bench_run_writes_the_committed_figures_only_when_asked() -> None:
    from benchmarks.__main__ import COMMITTED_REPORT, SCRATCH, output_paths
    from benchmarks.common import RESULTS_DIR

    results, report = output_paths(update=False, results=None, report=None)
    assert results.is_relative_to(SCRATCH) and report.is_relative_to(SCRATCH)
    assert output_paths(update=True, results=None, report=None) == (RESULTS_DIR, COMMITTED_REPORT)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(report)], cwd=REPO_ROOT, check=False)
    assert ignored.returncode == 0, "the scratch report must be git-ignored"


def test_time_to_accuracy_configs_are_checked_before_any_training(tmp_path: Path) -> None:
    from benchmarks.time_to_accuracy import main, parse_config

    assert parse_config("fast-resnet:12@43") == ("fast-resnet", "12", "43")
    assert parse_config("fast") == ("fast", None, None)
    with pytest.raises(SystemExit, match="SEED must be a whole number, not 'abc'"):
        main(["--prepared-dir", str(tmp_path), "--out", str(tmp_path / "t.json"),
              "--configs", "fast", "fast-resnet@abc"])  # fmt: skip
    assert not (tmp_path / "t.json").exists()  # nothing started, nothing written
    with pytest.raises(SystemExit, match=r"^error: --configs fast-resnett: no such profile in"):
        main(["--prepared-dir", str(tmp_path), "--out", str(tmp_path / "t.json"),
              "--configs", "fast", "fast-resnett:3"])  # fmt: skip
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize(
    "configs", [["fast-resnet", "reference-config"], ["reference-config", "fast"]]
)
def test_fit_to_reference_needs_the_reference_first_and_the_profile_run(
    tmp_path: Path, configs: list[str]
) -> None:
    from benchmarks.time_to_accuracy import main

    # Refused before any training: a sized profile needs the reference's time measured first.
    with pytest.raises(SystemExit, match=r"^error: --fit-to-reference needs reference-config"):
        main(["--prepared-dir", str(tmp_path), "--out", str(tmp_path / "tta.json"),
              "--configs", *configs, "--fit-to-reference", "fast-resnet"])  # fmt: skip
    assert not (tmp_path / "tta.json").exists()
