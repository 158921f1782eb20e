"""Where a model came from: code version, data checksums and software versions, as MLflow tags."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

from pipeline.checksums import file_md5

UNKNOWN = "unknown"
# The tags that say which code and data made a model; the registry copies them onto versions.
CODE_AND_DATA_TAGS = ("git.commit", "git.dirty", "data.raw_md5", "data.prepared_md5")


def git_state(repo: Path) -> tuple[str, bool | None]:
    """(commit sha, dirty) of the git checkout at ``repo``; ("unknown", None) outside git."""
    try:
        commit = _git(repo, "rev-parse", "HEAD")
        # Untracked files (data, runs) are not code changes; modified tracked files are.
        dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return UNKNOWN, None
    return commit, dirty


def lineage_tags(
    repo: Path, raw_archive: Path, prepared_md5: str, mixed_precision: bool
) -> dict[str, str]:
    """The tags that tie a run to its code, data and software."""
    # Imported here: the registry reads CODE_AND_DATA_TAGS without loading a Keras backend.
    import keras

    from pipeline import backend

    commit, dirty = git_state(repo)
    return {
        "git.commit": commit,
        "git.dirty": UNKNOWN if dirty is None else str(dirty).lower(),
        "data.raw_md5": file_md5(raw_archive) if raw_archive.is_file() else UNKNOWN,
        "data.prepared_md5": prepared_md5,
        "python.version": platform.python_version(),
        "keras.version": keras.__version__,
        "keras.backend": backend.name(),
        "backend.version": backend.version(),
        "device": backend.device_description(),
        "train.mixed_precision_used": str(mixed_precision).lower(),
    }


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return result.stdout.strip()
