"""The typed schema of params.yaml, validated once when a stage starts.

Every hyperparameter of the pipeline is declared here with its default and its range. Errors come
out as one line that names the key, what is wrong and the value given, e.g.
``params.yaml: preprocess.val_size: must be between 10 and 25000 (got 0)``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import ParamsError


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)


class DataParams(Section):
    url: str = Field("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", min_length=1)
    # null skips the checksum, with a warning.
    md5: str | None = "c32a1d4ab5d03f1284b67883e8d87530"

    @field_validator("md5")
    @classmethod
    def _md5_is_hex(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", value):
            raise ValueError("must be 32 hex digits, or null to skip the check")
        return value.lower() if value else value


class PreprocessParams(Section):
    val_size: int = Field(5000, ge=10, le=25000)
    # null: every training image left after the validation split.
    max_train_images: int | None = Field(None, ge=10)
    seed: int = Field(42, ge=0)


class ModelParams(Section):
    # Each block is conv(same) -> conv(valid) -> max-pool, with this many filters.
    conv_filters: list[int] = Field([32, 64, 64], min_length=1, max_length=3)
    kernel_size: int = Field(3, ge=1, le=5)
    dense_units: int = Field(512, ge=1, le=8192)
    dropout_conv: float = Field(0.25, ge=0.0, lt=1.0)
    dropout_dense: float = Field(0.5, ge=0.0, lt=1.0)
    augment: bool = False


class TrainParams(Section):
    epochs: int = Field(50, ge=1, le=10000)
    batch_size: int = Field(256, ge=1, le=65536)
    optimizer: Literal["rmsprop", "adam", "sgd"] = "rmsprop"
    learning_rate: float = Field(0.001, gt=0.0, le=1e4)
    seed: int = Field(42, ge=0)
    deterministic: bool = True
    mixed_precision: Literal["auto", "on", "off"] = "auto"
    lr_schedule: Literal["constant", "cosine", "one_cycle"] = "constant"
    restore_best: bool = False
    # auto: a GPU when one is visible; gpu: fail unless one is; cpu: hide the GPUs.
    device: Literal["auto", "cpu", "gpu"] = "auto"
    # Training steps per compiled call: more cuts per-step dispatch overhead on a fast GPU.
    steps_per_execution: int = Field(1, ge=1, le=10000)


class MlflowParams(Section):
    experiment_name: str = Field("cifar10-cnn", min_length=1)
    registered_model_name: str = Field("cifar10-cnn", min_length=1)


class RegisterParams(Section):
    min_accuracy: float = Field(0.70, ge=0.0, le=1.0)
    min_improvement: float = Field(0.0, ge=0.0, le=1.0)
    allow_champion: bool = True


class Params(Section):
    """All of params.yaml."""

    data: DataParams = DataParams()
    preprocess: PreprocessParams = PreprocessParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    mlflow: MlflowParams = MlflowParams()
    # "register" would shadow BaseModel.register, hence the alias.
    registration: RegisterParams = Field(RegisterParams(), alias="register")


def load_params(
    path: str | os.PathLike[str] = "params.yaml", overrides: list[str] | None = None
) -> Params:
    """Read ``path``, apply ``key=value`` overrides and validate the result.

    Raises ParamsError with a one-line message on any problem.
    """
    label = Path(path).name
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{label}: not valid YAML: {_one_line(str(exc))}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{label}: must be a mapping of sections (got {_show(raw)})")
    for override in overrides or []:
        _apply_override(raw, override, label)
    return validate_params(raw, label)


def validate_params(raw: dict[str, Any], label: str = "params") -> Params:
    """Validate a nested mapping of sections; ParamsError names ``label``, the key and the value."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(f"{label}: {_describe(exc.errors()[0])}") from None


def flatten_params(params: Params) -> dict[str, Any]:
    """Params as ``{"train.epochs": 50, ...}``, the way MLflow logs them."""
    flat: dict[str, Any] = {}
    for section, values in params.model_dump(by_alias=True).items():
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat


def _apply_override(raw: dict[str, Any], override: str, label: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ParamsError(f"--set {override}: expected key=value, e.g. train.epochs=2")
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ParamsError(f"{label}: {where}: is a value, not a section (--set {override})")
        node = child
    node[parts[-1]] = value


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    given = error.get("input")
    if kind == "extra_forbidden":
        return f"{key}: unknown key (got {_show(given)})"
    if kind == "missing":
        return f"{key}: missing"
    bounds = _field_bounds(error["loc"])
    if kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"} and bounds:
        return f"{key}: {bounds} (got {_show(given)})"
    message = error["msg"].removeprefix("Value error, ")
    message = message.replace("Input should be", "must be").replace("Value should", "must")
    message = message.replace("String should", "must").replace("List should", "must")
    return f"{key}: {message[0].lower() + message[1:]} (got {_show(given)})"


def _field_bounds(loc: tuple[Any, ...]) -> str | None:
    """Say the full allowed range of the field at ``loc``, e.g. 'must be between 10 and 25000'."""
    model: type[BaseModel] = Params
    field = None
    for part in loc:
        fields = {info.alias or name: info for name, info in model.model_fields.items()}
        if not isinstance(part, str) or part not in fields:
            break
        field = fields[part]
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            model = field.annotation
    if field is None:
        return None
    low = high = None
    low_op = high_op = ""
    for rule in field.metadata:
        for attr, op in (("ge", ">="), ("gt", ">")):
            if getattr(rule, attr, None) is not None:
                low, low_op = getattr(rule, attr), op
        for attr, op in (("le", "<="), ("lt", "<")):
            if getattr(rule, attr, None) is not None:
                high, high_op = getattr(rule, attr), op
    if low is not None and high is not None and low_op == ">=" and high_op == "<=":
        return f"must be between {low} and {high}"
    parts = [f"{op} {value}" for op, value in ((low_op, low), (high_op, high)) if value is not None]
    return f"must be {' and '.join(parts)}" if parts else None


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value)
    return _one_line(str(value))


def _one_line(text: str) -> str:
    return " ".join(text.split())
