"""Where a model came from: code version, data checksums and software versions, as MLflow tags."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from pipeline.core.checksums import file_md5

UNKNOWN = "unknown"
# The tags that say which code and data made a model; the registry copies them onto versions.
CODE_AND_DATA_TAGS = ("git.commit", "git.dirty", "data.raw_md5", "data.prepared_md5")
# Set by `dvc exp run` (and its queue/temp modes) in every stage's environment.
DVC_EXP_NAME = "DVC_EXP_NAME"
DVC_EXP_BASELINE_REV = "DVC_EXP_BASELINE_REV"
# Files DVC itself rewrites: dvc.lock on every repro, the stages' outputs (`dvc exp run` stages
# the cache: false ones in git), params.yaml for `dvc exp run -S`. Changes to them are not code
# changes; the params are logged as run params anyway.
DVC_WRITTEN = ("dvc.lock",)
DVC_EXP_WRITTEN = ("params.yaml",)
DIRTY_PATHS_SHOWN = 10
DVC_TAGS = ("dvc.experiment", "dvc.baseline_rev")


def dvc_experiment() -> tuple[str, str] | None:
    """(experiment name, baseline commit) when run by ``dvc exp run``, else None."""
    name = os.environ.get(DVC_EXP_NAME)
    if not name:
        return None
    return name, os.environ.get(DVC_EXP_BASELINE_REV) or UNKNOWN


def dirty_paths(repo: Path) -> list[str] | None:
    """Tracked files modified in the checkout at ``repo``, minus DVC's own edits; None outside git.

    Untracked files (data, runs) are not code changes. dvc.lock is always DVC's; params.yaml is
    DVC's under ``dvc exp run`` (it applies ``-S`` there first), a hand edit otherwise.
    """
    try:
        # Not stripped: the status column of the first entry may start with a space.
        status = _git(repo, "status", "--porcelain", "--untracked-files=no", "-z", strip=False)
    except (OSError, subprocess.CalledProcessError):
        return None
    ignored = set(DVC_WRITTEN) | stage_outputs(repo / "dvc.yaml")
    ignored |= set(DVC_EXP_WRITTEN) if dvc_experiment() else set()
    entries, paths = iter(status.split("\0")), []
    for entry in entries:
        if len(entry) > 3:
            paths.append(entry[3:])  # "XY path"
            if entry[0] in "RC":
                next(entries, None)  # a rename or copy is followed by its old path
    return [path for path in paths if path not in ignored]


def stage_outputs(dvc_yaml: Path) -> set[str]:
    """Paths of every stage's outs, metrics and plots, and the top-level metrics, in dvc.yaml."""
    import yaml

    try:
        spec = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return set()
    entries = list(spec.get("metrics") or [])
    for stage in (spec.get("stages") or {}).values():
        for kind in ("outs", "metrics", "plots"):
            entries += (stage or {}).get(kind) or []
    # An entry is a path, or a one-key mapping from the path to its options.
    return {entry if isinstance(entry, str) else next(iter(entry)) for entry in entries if entry}


def git_tags(repo: Path) -> dict[str, str]:
    """git.commit, git.dirty and (when dirty) git.dirty_paths of the checkout at ``repo``."""
    try:
        commit = _git(repo, "rev-parse", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return {"git.commit": UNKNOWN, "git.dirty": UNKNOWN}
    paths = dirty_paths(repo)
    if paths is None:
        return {"git.commit": commit, "git.dirty": UNKNOWN}
    tags = {"git.commit": commit, "git.dirty": str(bool(paths)).lower()}
    if paths:
        # Which files, so a reader can judge the dirt without the machine.
        shown = paths[:DIRTY_PATHS_SHOWN] + (["..."] if len(paths) > DIRTY_PATHS_SHOWN else [])
        tags["git.dirty_paths"] = " ".join(shown)
    return tags


def dvc_tags() -> dict[str, str]:
    """Tags naming the DVC experiment and its baseline commit; none outside ``dvc exp run``."""
    experiment = dvc_experiment()
    if experiment is None:
        return {}
    return dict(zip(DVC_TAGS, experiment, strict=True))


def lineage_tags(
    repo: Path, raw_archive: Path, prepared_md5: str, mixed_precision: bool
) -> dict[str, str]:
    """The tags that tie a run to its code, data and software."""
    # Imported here: the registry reads CODE_AND_DATA_TAGS without loading a Keras backend.
    import keras

    from pipeline.core import keras_backend as backend

    return {
        **git_tags(repo),
        "data.raw_md5": file_md5(raw_archive) if raw_archive.is_file() else UNKNOWN,
        "data.prepared_md5": prepared_md5,
        "python.version": platform.python_version(),
        "keras.version": keras.__version__,
        "keras.backend": backend.name(),
        "backend.version": backend.version(),
        "device": backend.device_description(),
        "train.mixed_precision_used": str(mixed_precision).lower(),
        **dvc_tags(),
    }


def _git(repo: Path, *args: str, strip: bool = True) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return result.stdout.strip() if strip else result.stdout
