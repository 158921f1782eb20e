"""Params profiles: partial params files under profiles/, applied over params.yaml.

A profile is a mapping of params sections, nested as in params.yaml (``model: {arch:
fast_resnet}``), read by the same hardened YAML reader. It becomes ``key=value`` overrides that
come before any ``--set`` (so ``--set`` wins), and it is validated by the schema over the params
file before anything runs: an unknown name, a file that is not a mapping of sections, or a value
the schema refuses is one ParamsError line (exit 2) naming the profile's file or the known
profiles. The stages take it as ``--profile NAME`` (stages/cli.py), ``dvc exp run`` through
``python -m stages.exp_run --profile NAME``, CI retraining as ``.ci/retrain.py --profile NAME``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import ParamsError
from pipeline.core.params import load_params, parse_params, parse_yaml
from pipeline.core.paths import REPO_ROOT

PROFILES_DIR = REPO_ROOT / "profiles"
# A file name in profiles/, without its .yaml: no path (a name never reaches another folder).
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Profile:
    """A profile read and checked: its name, its file, and its values as ``key=value``."""

    name: str
    path: Path
    overrides: list[str]


def known_profiles(folder: Path | None = None) -> list[str]:
    """The names of the profiles in ``folder`` (default profiles/: its ``*.yaml`` files), sorted."""
    folder = PROFILES_DIR if folder is None else folder
    return sorted(path.stem for path in folder.glob("*.yaml") if path.is_file())


def load_profile(
    name: str,
    params_file: str | os.PathLike[str] | None = "params.yaml",
    folder: Path | None = None,
) -> Profile:
    """Read profile ``name`` (``folder/NAME.yaml``, default profiles/) and, unless
    ``params_file`` is None, validate it by the schema over that params file.

    Raises ParamsError in one line: an unknown name (naming the known ones), a file that is not
    YAML or not a mapping of sections, or a value the schema refuses (naming the profile's file).
    """
    folder = PROFILES_DIR if folder is None else folder
    path = folder / f"{name}.yaml"
    if not PROFILE_NAME.fullmatch(name) or not path.is_file():
        known = ", ".join(known_profiles(folder)) or "none"
        raise ParamsError(
            f"--profile {name}: no such profile in {_shown(folder)}/ (known: {known})"
        )
    label = _shown(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ParamsError(f"{label}: not UTF-8 text") from None
    except OSError as exc:
        raise ParamsError(f"{label}: cannot read: {exc.strerror or exc}") from None
    tree = parse_yaml(text, label)
    if not isinstance(tree, dict) or not tree:
        raise ParamsError(
            f"{label}: must be a mapping of params sections, e.g. train: {{epochs: 10}}"
            f" (got {_kind(tree)})"
        )
    profile = Profile(name, path, _flatten(tree))
    if params_file is not None:
        check_profile(profile, params_file)
    return profile


def check_profile(profile: Profile, params_file: str | os.PathLike[str]) -> None:
    """Validate ``profile`` by the schema over ``params_file``; errors name the profile's file.

    The params file is checked alone first, so its own mistakes keep its name.
    """
    load_params(params_file)
    text = Path(params_file).read_text(encoding="utf-8")
    parse_params(text, _shown(profile.path), profile.overrides)


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[str]:
    overrides = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            overrides.extend(_flatten(value, f"{prefix}{key}."))
        else:
            # JSON is YAML 1.2: lists, null and strings survive the --set round trip as given.
            overrides.append(f"{prefix}{key}={json.dumps(value)}")
    return overrides


def _shown(path: Path) -> str:
    """``path`` relative to the repo when it is inside it (profiles/fast.yaml), else as is."""
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def _kind(value: Any) -> str:
    if value is None or value == {}:
        return "an empty file"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {json.dumps(value, default=str)[:40]}"
