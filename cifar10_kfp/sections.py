"""Params as Kubeflow pipeline parameters: one JSON text per params.yaml section.

A section travels as JSON text, not as a KFP struct: KFP 2.17 cannot compile a null inside a
struct's default, and hands a struct's numbers to the pod as floats (50 -> 50.0), which the
strict schema refuses. JSON text keeps null, ints and floats as params.yaml has them, so a new
params key needs no code here: params.yaml and the schema (pipeline/core/params.py) carry it.

No kfp and no TensorFlow here: submit, compile and the pods all use it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.errors import ParamsError
from pipeline.core.params import Params, load_params, validate_params
from pipeline.core.paths import REPO_ROOT

SCHEMA_SECTIONS = tuple(field.alias or name for name, field in Params.model_fields.items())
# Read by no pipeline stage: batch prediction runs on a user's images (stages.predict).
NOT_IN_PIPELINE = ("predict",)
# params.yaml's sections, in file order: the pipeline's parameters have these names.
SECTIONS = tuple(name for name in SCHEMA_SECTIONS if name not in NOT_IN_PIPELINE)


def to_arguments(params: Params) -> dict[str, str]:
    """``params`` as pipeline arguments: section name -> the section as JSON text."""
    sections = params.model_dump(by_alias=True)
    return {name: json.dumps(sections[name]) for name in SECTIONS}


def from_arguments(arguments: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Pipeline arguments (section -> JSON text) back to sections; ParamsError for bad text."""
    sections: dict[str, dict[str, Any]] = {}
    for name, text in arguments.items():
        try:
            value = json.loads(text)
        except (TypeError, ValueError):
            value = None
        if not isinstance(value, dict):
            raise ParamsError(
                f"pipeline parameter {name}: expected the params.yaml section {name} as a JSON "
                f"object, got {str(text)[:60]!r}"
            )
        sections[name] = value
    return sections


def with_overrides(
    sections: Mapping[str, dict[str, Any]], overrides: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """A copy of ``sections`` with each dotted key (``model.reference.dense_units``) set.

    Unknown keys stay for the schema to name; ParamsError for a key below a plain value.
    """
    changed = copy.deepcopy(dict(sections))
    for key, value in overrides.items():
        node: Any = changed
        parts = str(key).split(".")
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                where = ".".join(parts[: depth + 1])
                raise ParamsError(f"{key}: {where} is a value, not a section")
        node[parts[-1]] = value
    return changed


def validated(
    sections: Mapping[str, dict[str, Any]],
    label: str = "pipeline parameters",
    base_file: Path = REPO_ROOT / "params.yaml",
) -> Params:
    """The schema's Params from ``sections``; a section not given is ``base_file``'s.

    In a pod the base is the image's params.yaml: a stage never reads the sections it is not
    handed (dvc.yaml lists what it reads), they only complete the Params the stage takes.
    """
    missing = [name for name in SCHEMA_SECTIONS if name not in sections]
    base = load_params(base_file).model_dump(by_alias=True) if missing else {}
    return validate_params(base | dict(sections), label)


def stage_entries(stage: str, dvc_file: Path = REPO_ROOT / "dvc.yaml") -> list[str]:
    """The params entries (sections or dotted keys) that dvc.yaml lists for ``stage``.

    The one list of what a stage reads: the components' section parameters are checked
    against it (tests/test_kubeflow.py) and a sweep's trials may vary what train reads.
    """
    import yaml

    try:
        stages = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))["stages"]
        entries = stages[stage].get("params") or []
    except FileNotFoundError:
        raise ParamsError(f"{dvc_file}: file not found") from None
    except (yaml.YAMLError, KeyError, TypeError, AttributeError):
        raise ParamsError(f"{dvc_file.name}: no stage {stage} with a `params:` list") from None
    return [entry for entry in entries if isinstance(entry, str)]
