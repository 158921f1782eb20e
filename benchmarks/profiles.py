"""Params profiles under profiles/: partial params files applied over params.yaml.

``python -m benchmarks.profiles fast`` prints the profile as ``--set key=value`` options, so any
stage takes it: ``python -m stages.train $(python -m benchmarks.profiles fast)``; with DVC,
``dvc exp run $(python -m benchmarks.profiles fast --dvc)``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


def profile_overrides(name: str) -> list[str]:
    """``key=value`` overrides of profile ``name`` (profiles/NAME.yaml), flattened."""
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
        raise SystemExit(f"error: no profile {name!r} (known: {known})")
    return _flatten(yaml.safe_load(path.read_text()) or {})


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[str]:
    overrides = []
    for key, value in tree.items():
        if isinstance(value, dict):
            overrides.extend(_flatten(value, f"{prefix}{key}."))
        else:
            # JSON is valid YAML: lists and null survive the --set round trip.
            overrides.append(f"{prefix}{key}={json.dumps(value)}")
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name")
    parser.add_argument("--dvc", action="store_true", help="print -S options for dvc exp run")
    args = parser.parse_args()
    flag = "-S" if args.dvc else "--set"
    print(" ".join(f"{flag} {item}" for item in profile_overrides(args.name)))


if __name__ == "__main__":
    main()
