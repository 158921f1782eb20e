"""The typed schema of params.yaml, validated once when a stage starts.

Every hyperparameter of the pipeline is declared here with its type and its range; the values
live only in params.yaml, which must set every key (a missing key is an error that names it).
What each key does is said once, in params.yaml's comments, where users read it; comments here
only say why a type, range or check is what it is. Each architecture's section is declared by
its own module under pipeline/train/architectures/.
Types are strict (``true`` is not an epoch count, ``1e20`` is not a seed); the YAML is read by
pipeline/core/yaml_reader.py (YAML 1.2 as DVC reads it, duplicate keys and alias bombs refused).
``--set key=value`` values go through the same reader (:func:`parse_override`) in every command.
Errors come out as one line that names the key, what is wrong and the value given, e.g.
``params.yaml: preprocess.val_size: must be between 10 and 25000 (got 0)``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from pipeline.core.errors import ParamsError
from pipeline.core.section import Section
from pipeline.core.yaml_reader import YamlProblem, load_yaml, one_line

# The architectures' own sections (each module there holds its Params and its builder; none
# imports Keras at import time). The one import of the schema from pipeline/train: the model
# section is theirs to declare.
from pipeline.train.architectures import ARCHITECTURES

# numpy and TensorFlow seeds are unsigned 32-bit.
MAX_SEED = 2**32 - 1


class DataParams(Section):
    url: str = Field(min_length=1)
    md5: str | None

    @field_validator("md5")
    @classmethod
    def _md5_is_hex(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", value):
            raise ValueError("must be 32 hex digits, or null to skip the check")
        return value.lower() if value else value


class PreprocessParams(Section):
    val_size: int = Field(ge=10, le=25000)
    max_train_images: int | None = Field(ge=10)
    seed: int = Field(ge=0, le=MAX_SEED)


class _ModelSection(Section):
    """``model``: which architecture (``arch``), and one params section per architecture.

    The sections are added by :func:`_model_params`, one per module of
    pipeline/train/architectures/ (its ``Params``), so the schema never lists them by hand.
    """

    arch: str

    @model_validator(mode="before")
    @classmethod
    def _not_the_old_layout(cls, raw: Any) -> Any:
        # Before model.arch, the reference's keys sat directly under model: say where they went.
        old_keys = ARCHITECTURES["reference"].params.model_fields
        moved = [key for key in old_keys if isinstance(raw, dict) and key in raw]
        if moved:
            raise ValueError(
                f"{', '.join(moved)} moved under model.reference (model.arch picks the"
                " architecture; see docs/architecture.md, Choosing the model)"
            )
        return raw

    @field_validator("arch")
    @classmethod
    def _arch_is_registered(cls, value: str) -> str:
        names = architecture_names()
        if value not in names:
            raise ValueError(f"must be one of {', '.join(names)}")
        return value

    @property
    def selected(self) -> Section:
        """The params section of the chosen architecture, ``model.<arch>``."""
        return getattr(self, self.arch)


def _model_params() -> type[_ModelSection]:
    """The ``model`` section: ``arch`` plus a required field per registered architecture."""
    sections: dict[str, Any] = {
        name: (architecture.params, ...) for name, architecture in ARCHITECTURES.items()
    }
    return create_model("ModelParams", __base__=_ModelSection, **sections)


ModelParams = _model_params()


def architecture_names() -> list[str]:
    """The architectures ``model.arch`` may name: the modules of pipeline/train/architectures/."""
    return list(ARCHITECTURES)


class TrainParams(Section):
    epochs: int = Field(ge=1, le=10000)
    batch_size: int = Field(ge=1, le=65536)
    optimizer: Literal["rmsprop", "adam", "sgd"]
    learning_rate: float = Field(gt=0.0, le=1e4)
    momentum: float = Field(ge=0.0, lt=1.0)
    nesterov: bool
    weight_decay: float = Field(ge=0.0, le=1.0)
    label_smoothing: float = Field(ge=0.0, lt=1.0)
    seed: int = Field(ge=0, le=MAX_SEED)
    deterministic: bool
    mixed_precision: Literal["auto", "on", "off"]
    lr_schedule: Literal["constant", "cosine", "one_cycle"]
    restore_best: bool
    device: Literal["auto", "cpu", "gpu"]
    steps_per_execution: int = Field(ge=1, le=10000)
    pad_last_batch: bool
    distribution: Literal["none", "data_parallel"]
    # train.devices is one int rather than int | "all": a Kubeflow component parameter has one
    # type.
    devices: int = Field(ge=0, le=4096)

    @model_validator(mode="after")
    def _momentum_needs_sgd(self) -> TrainParams:
        # Silently ignored by the other optimizers otherwise.
        if self.optimizer != "sgd" and (self.momentum or self.nesterov):
            raise ValueError(
                f"momentum and nesterov are for optimizer sgd (got optimizer {self.optimizer},"
                f" momentum {self.momentum}, nesterov {str(self.nesterov).lower()})"
            )
        if self.nesterov and not self.momentum:
            raise ValueError("nesterov needs a momentum above 0")
        return self

    @model_validator(mode="after")
    def _devices_need_data_parallel(self) -> TrainParams:
        # Silently training on one device when several were asked for would waste them.
        if self.distribution == "none" and self.devices > 1:
            raise ValueError(
                f"devices {self.devices} needs distribution data_parallel"
                " (distribution none trains on one device)"
            )
        if self.devices and self.batch_size % self.devices:
            # Each device gets an equal share of the global batch.
            raise ValueError(
                f"batch_size {self.batch_size} does not split evenly over {self.devices} devices"
            )
        return self


# What MLflow refuses in a name only once a run is trained and scored ("/" and ":" in registered
# model names, more than 500 characters), and quotes, which would break the registry's search
# filters (name='...'): refused when params are read instead.
MLFLOW_NAME = r"[^/:'\"\\\x00-\x1f]+"


class MlflowParams(Section):
    experiment_name: str = Field(min_length=1, max_length=500)
    registered_model_name: str = Field(min_length=1, max_length=500)
    sweep: str | None = Field(min_length=1, max_length=500)

    @field_validator("experiment_name", "registered_model_name", "sweep")
    @classmethod
    def _name_mlflow_accepts(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not re.fullmatch(MLFLOW_NAME, value) or value != value.strip():
            raise ValueError(
                "must not hold / : quotes, backslashes or control characters, nor start or "
                "end with a space"
            )
        if value == "." or value.startswith(".."):
            raise ValueError("must not be '.' or start with '..' (MLflow reads those as paths)")
        return value


class EvaluateParams(Section):
    """``evaluate``: how the test split is scored."""

    flip_tta: bool
    translate_tta: bool


class RegisterParams(Section):
    min_accuracy: float = Field(ge=0.0, le=1.0)
    min_improvement: float = Field(ge=0.0, le=1.0)
    allow_champion: bool


class DataChecksParams(Section):
    """``checks``: the largest share of a split the preprocess stage's data report may find
    (pipeline/data/checks.py); above it the stage stops before writing anything."""

    max_duplicate_share: float = Field(ge=0.0, le=1.0)
    max_overlap_share: float = Field(ge=0.0, le=1.0)
    max_constant_share: float = Field(ge=0.0, le=1.0)


class PredictParams(Section):
    """``predict``: batch prediction (``python -m stages.predict``) and its drift check."""

    experiment_name: str = Field(min_length=1, max_length=500)
    batch_size: int = Field(ge=1, le=65536)
    least_confident: int = Field(ge=0, le=120)
    # Population Stability Index above which a distribution of the batch counts as drifted.
    drift_psi: float = Field(gt=0.0, le=10.0)
    drift_min_images: int = Field(ge=1, le=1_000_000)

    @field_validator("experiment_name")
    @classmethod
    def _name_mlflow_accepts(cls, value: str) -> str:
        return MlflowParams._name_mlflow_accepts(value)  # the same rules as every MLflow name


class Params(Section):
    """All of params.yaml."""

    data: DataParams
    preprocess: PreprocessParams
    model: ModelParams
    train: TrainParams
    mlflow: MlflowParams
    evaluate: EvaluateParams
    # "register" would shadow BaseModel.register, hence the alias.
    registration: RegisterParams = Field(alias="register")
    predict: PredictParams
    checks: DataChecksParams


def load_params(
    path: str | os.PathLike[str] = "params.yaml", overrides: list[str] | None = None
) -> Params:
    """Read ``path``, apply ``key=value`` overrides and validate the result.

    The file must set every key: there are no defaults outside it. Raises ParamsError with a
    one-line message on any problem.
    """
    label = Path(path).name
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ParamsError(f"{path}: is a folder, not a params file") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ParamsError(f"{label}: not UTF-8 text") from None
    return parse_params(text, label, overrides)


def parse_params(
    text: str, label: str = "params.yaml", overrides: list[str] | None = None
) -> Params:
    """:func:`load_params` for the text of a params file (errors name it ``label``).

    For a writer that must check what it is about to write (.ci/retrain.py).
    """
    try:
        raw = load_yaml(text)
    except YamlProblem as exc:
        raise ParamsError(f"{label}: {exc}") from None
    if raw is None:
        raise ParamsError(
            f"{label}: is empty; it must set every param (see the repo's params.yaml)"
        )
    if not isinstance(raw, dict):
        raise ParamsError(f"{label}: must be a mapping of sections (got {_show(raw)})")
    for override in overrides or []:
        _apply_override(raw, override, label)
    return validate_params(raw, label)


def parse_yaml(text: str, label: str) -> Any:
    """``text`` read the way params files are (YAML 1.2, duplicate keys and alias bombs refused),
    as plain dicts, lists and scalars; ParamsError naming ``label`` in one line.

    For the other YAML inputs of the same commands (a Kubeflow sweep's trials file).
    """
    try:
        return load_yaml(text)
    except YamlProblem as exc:
        raise ParamsError(f"{label}: {exc}") from None


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


def parse_override(override: str) -> tuple[str, Any]:
    """``"train.learning_rate=1e-3"`` -> ``("train.learning_rate", 0.001)``: one ``--set`` value.

    The one parser of ``--set`` for every command (the stages, .ci/retrain.py,
    cifar10_kfp.submit), so a value means the same everywhere: YAML 1.2, as in params.yaml and
    as ``dvc exp run -S`` writes it (``1e-3`` a float, ``yes`` a string, empty is null). Text
    that is not YAML stays the text given. The schema checks the value afterwards, with the rest
    of the params (:func:`load_params`, :func:`validate_params`). Raises ParamsError for a
    malformed override or an alias bomb.
    """
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ParamsError(f"--set {override}: expected key=value, e.g. train.epochs=2")
    if not text:
        return key, None
    try:
        return key, load_yaml(text)
    except YamlProblem as exc:
        if exc.syntax:
            return key, text
        raise ParamsError(f"--set {key}: {exc.reason}") from None


def _apply_override(raw: dict[str, Any], override: str, label: str) -> None:
    key, value = parse_override(override)
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


# How much of a refused string value an error line shows.
SHOWN_CHARS = 40


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        # A 501-character name is not echoed whole: its start and its length say enough.
        if len(value) > SHOWN_CHARS:
            return f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"
        return repr(value)
    return one_line(str(value))
