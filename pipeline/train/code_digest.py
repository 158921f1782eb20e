"""The md5 of each Python file a stage runs, as ``dvc.yaml`` declares it.

One source: the ``.py`` deps of the stage in ``dvc.yaml`` (a folder dep counts every ``.py``
under it), the same list that tells DVC to rerun the stage. A copy of the code without
``dvc.yaml`` (an installed image) falls back to every module of ``pipeline/`` and ``stages/``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.core.checksums import file_md5
from pipeline.core.errors import PipelineError

FALLBACK_PACKAGES = ("pipeline", "stages")


def stage_code_md5s(repo: Path, stage: str) -> dict[str, str]:
    """``{"pipeline/train/model.py": md5, ...}`` for the code of ``stage``, relative to ``repo``."""
    files = _declared_code(repo, stage)
    if files is None:
        files = [path for package in FALLBACK_PACKAGES for path in (repo / package).rglob("*.py")]
    return {path.relative_to(repo).as_posix(): file_md5(path) for path in sorted(set(files))}


def changed_files(before: dict[str, str], now: dict[str, str]) -> list[str]:
    """The files added, removed or edited between two ``stage_code_md5s`` results."""
    return sorted(name for name in before.keys() | now.keys() if before.get(name) != now.get(name))


def _declared_code(repo: Path, stage: str) -> list[Path] | None:
    """The .py files among the stage's dvc.yaml deps; None when there is no dvc.yaml."""
    dvc_yaml = repo / "dvc.yaml"
    if not dvc_yaml.is_file():
        return None
    try:
        deps = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"][stage]["deps"]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise PipelineError(f"{dvc_yaml}: cannot read the deps of stage {stage} ({exc})") from None
    files: list[Path] = []
    for dep in deps:
        path = repo / str(dep)
        if path.is_dir():
            files += path.rglob("*.py")
        elif path.suffix == ".py" and path.is_file():
            files.append(path)
    return files
