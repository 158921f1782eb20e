"""The typed schema of params.yaml, validated once when a stage starts.

Every hyperparameter of the pipeline is declared here with its type and its range; the values
live only in params.yaml, which must set every key (a missing key is an error that names it).
Types are strict (``true`` is not an epoch count, ``1e20`` is not a seed) and the YAML is read
the way DVC writes it: YAML 1.2 scalars, duplicate keys refused. Errors come out as one line that
names the key, what is wrong and the value given, e.g.
``params.yaml: preprocess.val_size: must be between 10 and 25000 (got 0)``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from pipeline.core.errors import ParamsError
from pipeline.core.shapes import IMAGE_SIZE

# numpy and TensorFlow seeds are unsigned 32-bit.
MAX_SEED = 2**32 - 1


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, and so are values of another type.

    Strict: a bool is not an int (``epochs: true`` would train 1 epoch), a float is not an int.
    """

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class DataParams(Section):
    url: str = Field(min_length=1)
    # null skips the checksum, with a warning.
    md5: str | None

    @field_validator("md5")
    @classmethod
    def _md5_is_hex(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", value):
            raise ValueError("must be 32 hex digits, or null to skip the check")
        return value.lower() if value else value


class PreprocessParams(Section):
    val_size: int = Field(ge=10, le=25000)
    # null: every training image left after the validation split.
    max_train_images: int | None = Field(ge=10)
    seed: int = Field(ge=0, le=MAX_SEED)


class ModelParams(Section):
    # Each block is conv(same) -> conv(valid) -> max-pool, with this many filters.
    conv_filters: list[Annotated[int, Field(ge=1, le=4096)]] = Field(min_length=1, max_length=3)
    kernel_size: int = Field(ge=1, le=5)
    dense_units: int = Field(ge=1, le=8192)
    dropout_conv: float = Field(ge=0.0, lt=1.0)
    dropout_dense: float = Field(ge=0.0, lt=1.0)
    augment: bool

    @model_validator(mode="after")
    def _image_survives_the_blocks(self) -> ModelParams:
        # Checked here, before TensorFlow loads: Keras would fail deep in model building.
        side = IMAGE_SIZE
        for block in range(1, len(self.conv_filters) + 1):
            after_conv = side - (self.kernel_size - 1)  # the "valid" conv trims kernel_size - 1
            if after_conv < 2:
                raise ValueError(
                    f"kernel_size {self.kernel_size} with {len(self.conv_filters)} conv blocks"
                    f" shrinks the {IMAGE_SIZE}x{IMAGE_SIZE} image to nothing (block {block}"
                    f" gets {side}x{side}, too small to convolve and pool); use a smaller"
                    " model.kernel_size or fewer model.conv_filters"
                )
            side = after_conv // 2
        return self


class TrainParams(Section):
    epochs: int = Field(ge=1, le=10000)
    batch_size: int = Field(ge=1, le=65536)
    optimizer: Literal["rmsprop", "adam", "sgd"]
    learning_rate: float = Field(gt=0.0, le=1e4)
    seed: int = Field(ge=0, le=MAX_SEED)
    deterministic: bool
    mixed_precision: Literal["auto", "on", "off"]
    lr_schedule: Literal["constant", "cosine", "one_cycle"]
    restore_best: bool
    # auto: a GPU when one is visible; gpu: fail unless one is; cpu: hide the GPUs.
    device: Literal["auto", "cpu", "gpu"]
    # Training steps per compiled call: more cuts per-step dispatch overhead on a fast GPU.
    steps_per_execution: int = Field(ge=1, le=10000)


class MlflowParams(Section):
    experiment_name: str = Field(min_length=1)
    registered_model_name: str = Field(min_length=1)


class RegisterParams(Section):
    min_accuracy: float = Field(ge=0.0, le=1.0)
    min_improvement: float = Field(ge=0.0, le=1.0)
    allow_champion: bool


class Params(Section):
    """All of params.yaml."""

    data: DataParams
    preprocess: PreprocessParams
    model: ModelParams
    train: TrainParams
    mlflow: MlflowParams
    # "register" would shadow BaseModel.register, hence the alias.
    registration: RegisterParams = Field(alias="register")


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, read the way DVC (ruamel, YAML 1.2) reads and writes params.yaml.

    YAML 1.2 scalars: ``1e-3`` and ``1e20`` are floats (YAML 1.1 reads them as strings), only
    true/false are booleans (``on`` stays the string "on"). A key given twice is an error: the
    later value would silently win.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(f"duplicate key {key!r} (lines {seen[key]} and {line})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(yaml.YAMLError):
    pass


_BOOL_TAG = "tag:yaml.org,2002:bool"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ParamsLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# After the int resolver (added to each first character's list later): "1" stays an int.
_ParamsLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    # A SafeLoader subclass: builds plain scalars, lists and dicts only.
    return yaml.load(text, Loader=_ParamsLoader)


def load_params(
    path: str | os.PathLike[str] = "params.yaml", overrides: list[str] | None = None
) -> Params:
    """Read ``path``, apply ``key=value`` overrides and validate the result.

    The file must set every key: there are no defaults outside it. Raises ParamsError with a
    one-line message on any problem.
    """
    label = Path(path).name
    try:
        raw = _yaml_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ParamsError(f"{path}: is a folder, not a params file") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ParamsError(f"{label}: not UTF-8 text") from None
    except _DuplicateKey as exc:
        raise ParamsError(f"{label}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{label}: not valid YAML: {_one_line(str(exc))}") from None
    if raw is None:
        raise ParamsError(
            f"{label}: is empty; it must set every param (see the repo's params.yaml)"
        )
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
        value = _yaml_load(text) if text else None
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
        return f"{key}: missing; the params file must set every key"
    if kind == "value_error" and isinstance(given, dict):
        # A check across a whole section: its message names the keys involved.
        return f"{key}: {error['msg'].removeprefix('Value error, ')}"
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
    rules: list[Any] = []
    for part in loc:
        if isinstance(part, int) and field is not None and get_origin(field.annotation) is list:
            # An item of a list field: its bounds sit on the item type, Annotated[int, Field()].
            (item,) = get_args(field.annotation)
            rules = _annotated_rules(item)
            break
        fields = {info.alias or name: info for name, info in model.model_fields.items()}
        if not isinstance(part, str) or part not in fields:
            break
        field = fields[part]
        rules = list(field.metadata)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            model = field.annotation
    if field is None:
        return None
    low = high = None
    low_op = high_op = ""
    for rule in rules:
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


def _annotated_rules(annotation: Any) -> list[Any]:
    if get_origin(annotation) is not Annotated:
        return []
    rules: list[Any] = []
    for extra in get_args(annotation)[1:]:
        rules.extend(extra.metadata if isinstance(extra, FieldInfo) else [extra])
    return rules


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
