"""pipeline/core/paths.py names every stage output once; dvc.yaml must declare the same files."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pipeline.core import paths
from tests.conftest import REPO_ROOT

DVC = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))


def declared_outputs(stage: str) -> set[str]:
    """Every out, metric and plot file of ``stage`` in dvc.yaml, as repo-relative paths."""
    spec = DVC["stages"][stage]
    entries = [*spec.get("outs", []), *spec.get("metrics", []), *spec.get("plots", [])]
    return {next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries}


def test_every_named_output_is_declared_by_its_stage() -> None:
    models, reports = paths.MODELS_DIR, paths.REPORTS_DIR
    expected = {
        "preprocess": {
            paths.PREPARED_DIR / paths.CLASSES_FILE,
            reports / paths.DATA_SUMMARY_FILE,
            reports / paths.DATA_PREVIEW_FILE,
            reports / paths.DATA_CHECKS_FILE,
        },
        "train": {
            models / paths.MODEL_FILE,
            models / paths.RUN_INFO_FILE,
            reports / paths.HISTORY_FILE,
            reports / paths.TRAIN_METRICS_FILE,
            reports / paths.MODEL_SUMMARY_FILE,
        },
        "evaluate": {reports / name for name in paths.EVALUATE_FILES.values()},
    }
    for stage, files in expected.items():
        missing = {f.as_posix() for f in files} - declared_outputs(stage)
        assert not missing, f"dvc.yaml stage {stage} does not declare {sorted(missing)}"
    assert DVC["stages"]["download"]["outs"] == [paths.RAW_ARCHIVE.as_posix()]


def test_the_repository_root_is_defined_once() -> None:
    # Every other module takes REPO_ROOT from pipeline.core.paths rather than recomputing it,
    # except two that run where the project's packages cannot be imported: the team server in its
    # own image (deploy/mlflow.Dockerfile copies deploy/ alone) and the GPU check, run as a plain
    # script on a machine where the project is not installed.
    standalone = ["benchmarks/gpu_check.py", "deploy/server.py"]
    defined = [
        path.relative_to(REPO_ROOT).as_posix()
        for folder in ("pipeline", "stages", "cifar10_kfp", "benchmarks", "deploy", "tests")
        for path in (REPO_ROOT / folder).rglob("*.py")
        if re.search(r"^REPO_ROOT = ", path.read_text(encoding="utf-8"), re.MULTILINE)
    ]
    assert sorted(defined) == sorted(["pipeline/core/paths.py", *standalone])
    assert Path(paths.REPO_ROOT, "dvc.yaml").is_file()
