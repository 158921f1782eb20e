"""The typed schema of params.yaml, validated once when a stage starts.

Every hyperparameter of the pipeline is declared here with its type and its range; the values
live only in params.yaml, which must set every key (a missing key is an error that names it).
Types are strict (``true`` is not an epoch count, ``1e20`` is not a seed) and the YAML is read
with ruamel.yaml, the way DVC reads and writes it: YAML 1.2 scalars (``yes`` is a string),
duplicate keys refused, and anchors/aliases checked before they are expanded (no alias bombs).
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
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, MaxDepthExceededError
from ruamel.yaml.constructor import DuplicateKeyError, SafeConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

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


class ReferenceParams(Section):
    """``model.reference``: the reference CNN (pipeline/train/architectures/reference.py)."""

    # Each block is conv(same) -> conv(valid) -> max-pool, with this many filters.
    conv_filters: list[Annotated[int, Field(ge=1, le=4096)]] = Field(min_length=1, max_length=3)
    kernel_size: int = Field(ge=1, le=5)
    dense_units: int = Field(ge=1, le=8192)
    dropout_conv: float = Field(ge=0.0, lt=1.0)
    dropout_dense: float = Field(ge=0.0, lt=1.0)
    augment: bool

    @model_validator(mode="after")
    def _image_survives_the_blocks(self) -> ReferenceParams:
        # Checked here, before TensorFlow loads: Keras would fail deep in model building.
        side = IMAGE_SIZE
        for block in range(1, len(self.conv_filters) + 1):
            after_conv = side - (self.kernel_size - 1)  # the "valid" conv trims kernel_size - 1
            if after_conv < 2:
                raise ValueError(
                    f"kernel_size {self.kernel_size} with {len(self.conv_filters)} conv blocks"
                    f" shrinks the {IMAGE_SIZE}x{IMAGE_SIZE} image to nothing (block {block}"
                    f" gets {side}x{side}, too small to convolve and pool); use a smaller"
                    " model.reference.kernel_size or fewer model.reference.conv_filters"
                )
            side = after_conv // 2
        return self


class FastResnetParams(Section):
    """``model.fast_resnet``: a fast residual net (pipeline/train/architectures/fast_resnet.py)."""

    stem_width: int = Field(ge=1, le=1024)
    # One block per width, each halving the image: 32 -> 16 -> 8 -> 4 with three.
    widths: list[Annotated[int, Field(ge=1, le=4096)]] = Field(min_length=1, max_length=5)
    # conv -> pool -> BatchNorm -> act, then conv -> BatchNorm -> act for each conv after the first.
    convs_per_block: int = Field(ge=1, le=4)
    # The convs after the first as a residual branch, added back to the first one's output.
    residual: bool
    activation: Literal["relu", "gelu"]
    # Keras's meaning: the share of the old running statistics kept at each step.
    batchnorm_momentum: float = Field(ge=0.0, lt=1.0)
    logit_scale: float = Field(gt=0.0, le=10.0)
    augment: bool  # random horizontal flip + translation, training only
    translate_pixels: int = Field(ge=0, le=8)


class ModelParams(Section):
    """``model``: which architecture (``arch``), and one params section per architecture."""

    arch: str
    reference: ReferenceParams
    fast_resnet: FastResnetParams

    @model_validator(mode="before")
    @classmethod
    def _not_the_old_layout(cls, raw: Any) -> Any:
        # Before model.arch, the reference's keys sat directly under model: say where they went.
        moved = [
            key for key in ReferenceParams.model_fields if isinstance(raw, dict) and key in raw
        ]
        if moved:
            raise ValueError(
                f"{', '.join(moved)} moved under model.reference (model.arch picks the"
                " architecture; see docs/architecture.md, Choosing the model)"
            )
        return raw

    @field_validator("arch")
    @classmethod
    def _arch_is_registered(cls, value: str) -> str:
        # Every other field is an architecture's section, so its name is a valid arch.
        names = architecture_names()
        if value not in names:
            raise ValueError(f"must be one of {', '.join(names)}")
        return value

    @property
    def selected(self) -> Section:
        """The params section of the chosen architecture, ``model.<arch>``."""
        return getattr(self, self.arch)


def architecture_names() -> list[str]:
    """The architectures ``model.arch`` may name: the sections of ModelParams."""
    return [name for name in ModelParams.model_fields if name != "arch"]


class TrainParams(Section):
    epochs: int = Field(ge=1, le=10000)
    batch_size: int = Field(ge=1, le=65536)
    optimizer: Literal["rmsprop", "adam", "sgd"]
    learning_rate: float = Field(gt=0.0, le=1e4)
    # SGD only: momentum, and Nesterov's look-ahead form of it.
    momentum: float = Field(ge=0.0, lt=1.0)
    nesterov: bool
    # Decoupled weight decay (each step shrinks every weight by learning_rate * weight_decay).
    weight_decay: float = Field(ge=0.0, le=1.0)
    # The true class gets 1 - label_smoothing, the rest spread evenly over all classes.
    label_smoothing: float = Field(ge=0.0, lt=1.0)
    seed: int = Field(ge=0, le=MAX_SEED)
    deterministic: bool
    mixed_precision: Literal["auto", "on", "off"]
    lr_schedule: Literal["constant", "cosine", "one_cycle"]
    restore_best: bool
    # auto: a GPU when one is visible; gpu: fail unless one is; cpu: hide the GPUs.
    device: Literal["auto", "cpu", "gpu"]
    # Training steps per compiled call: more cuts per-step dispatch overhead on a fast GPU.
    steps_per_execution: int = Field(ge=1, le=10000)
    # JAX: fill the last short batch with zero-weight images, so a step compiles for one shape.
    pad_last_batch: bool
    # none: one device; data_parallel: each global batch of batch_size split over ``devices``.
    distribution: Literal["none", "data_parallel"]
    # How many of the visible devices (the GPUs, else the CPU devices) data_parallel uses; 0: all.
    # One int rather than int | "all": a Kubeflow component parameter has one type.
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
    # null: a run of its own. A name: the training run is tagged sweep=<name>, which groups the
    # trials of a sweep (e.g. a `dvc exp run --queue` grid) for `make sweep` and the UI's filter.
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

    # Also score the mean of each image's and its mirror image's probabilities (flip test-time
    # augmentation): logged apart as test/accuracy_flip_tta; the served model predicts one view.
    flip_tta: bool


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
    evaluate: EvaluateParams
    # "register" would shadow BaseModel.register, hence the alias.
    registration: RegisterParams = Field(alias="register")


# Far above any real params file (about 80 values, 4 levels), far below what hurts to build,
# validate or print: an alias bomb is refused before anything expands it.
MAX_VALUES = 10_000
MAX_DEPTH = 20
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _YamlProblem(Exception):
    """Why a YAML text was refused, in one line without the file's name (the caller adds it).

    ``line``: where, when known; a one-line ``--set`` value leaves it out (``reason`` alone).
    ``syntax``: the text is not YAML at all (a ``--set`` value then stays the text as given).
    """

    def __init__(self, reason: str, line: int | None = None, *, syntax: bool = False) -> None:
        where = f"line {line}: " if line else ""
        super().__init__(f"not valid YAML: {where}{reason}" if syntax else f"{where}{reason}")
        self.reason = reason
        self.syntax = syntax


class _Composer(Composer):
    """ruamel's composer, plus a look at the whole node graph before anything is constructed.

    Composing is linear in the text (an alias is one more reference to its anchor's node);
    constructing, validating or printing the data walks every alias again, so the checks of
    :func:`_check_graph` happen here, between the two.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader=loader)
        # ruamel only warns (on stderr) about an anchor defined twice; _check_graph refuses it.
        self.warn_double_anchors = False

    def compose_document(self) -> Any:
        node = super().compose_document()
        # A `%YAML 1.1` directive would switch ruamel to YAML 1.1 scalars (`yes` a boolean).
        version = self.loader.resolver.processing_version
        if version != (1, 2):
            raise _YamlProblem(
                f"declares %YAML {'.'.join(map(str, version))}; params are read as YAML 1.2:"
                " remove the directive"
            )
        _check_graph(node)
        return node


class _Constructor(SafeConstructor):
    """ruamel's safe constructor (plain dicts, lists, scalars); a duplicate key in one line."""

    def check_mapping_key(
        self, node: MappingNode, key_node: Node, mapping: Any, key: Any, value: Any
    ) -> bool:
        try:
            return super().check_mapping_key(node, key_node, mapping, key, value)
        except DuplicateKeyError:
            # ruamel's message is a dozen lines and does not say where the first one is.
            first = next(
                (
                    other.start_mark.line + 1
                    for other, _ in node.value
                    if other is not key_node and self.construct_object(other, deep=True) == key
                ),
                None,
            )
            lines = f"lines {first} and " if first else "line "
            raise _YamlProblem(
                f"duplicate key {key!r} ({lines}{key_node.start_mark.line + 1})"
            ) from None


def _check_graph(root: Node) -> None:
    """Refuse what would expand badly: over MAX_VALUES values or MAX_DEPTH levels once every
    alias is followed, an alias inside its own anchor, an anchor defined twice, a merge key.

    One pass over the composed nodes, each visited once (sizes are summed, not expanded), and
    iterative: a chain of a thousand anchors must not hit Python's recursion limit.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    anchors: dict[str, Node] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        line = node.start_mark.line + 1
        children = _children(node)
        if children_done:
            on_path.discard(id(node))
            size[id(node)] = 1 + sum(size[id(child)] for child in children)
            depth[id(node)] = 1 + max((depth[id(child)] for child in children), default=0)
            if size[id(node)] > MAX_VALUES:
                raise _YamlProblem(
                    f"aliases would expand to more than {MAX_VALUES} values; refused unexpanded"
                    " (a YAML alias bomb?)"
                    if node.anchor or any(child.anchor for child in children)
                    else f"more than {MAX_VALUES} values",
                    line,
                )
            if depth[id(node)] > MAX_DEPTH:
                raise _YamlProblem(f"nested more than {MAX_DEPTH} levels deep", line)
            continue
        if id(node) in size:
            continue  # another alias of a node already measured
        if id(node) in on_path:
            raise _YamlProblem(f"alias *{node.anchor} refers to its own anchor", line)
        if node.anchor is not None:
            first = anchors.setdefault(node.anchor, node)
            if first is not node:
                raise _YamlProblem(
                    f"anchor &{node.anchor} defined again"
                    f" (first on line {first.start_mark.line + 1})",
                    line,
                )
        if isinstance(node, MappingNode):
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    # YAML 1.1 only; ruamel would also skip the duplicate-key check around it.
                    raise _YamlProblem(
                        "merge keys (<<) are not read; write the keys out",
                        key_node.start_mark.line + 1,
                    )
        on_path.add(id(node))
        stack.append((node, True))
        # Reversed: popped in document order, so "first" anchors and errors read top-down.
        stack.extend((child, False) for child in reversed(children) if id(child) not in size)


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _yaml_load(text: str) -> Any:
    """``text`` as plain dicts, lists and scalars, read as YAML 1.2 the way DVC reads it.

    Raises _YamlProblem with a one-line reason.
    """
    # A new reader each time: ruamel's YAML objects keep per-document state.
    reader = YAML(typ="safe", pure=True)
    reader.Composer = _Composer
    reader.Constructor = _Constructor
    # ruamel's own guard, in its (recursive) composer; _check_graph counts alias chains too.
    reader.max_depth = MAX_DEPTH
    try:
        return reader.load(text)
    except _YamlProblem:
        raise
    except MaxDepthExceededError as exc:
        raise _YamlProblem(f"nested more than {MAX_DEPTH} levels deep", _line(exc)) from None
    except MarkedYAMLError as exc:
        # ruamel's str() is several lines and quotes the source text; keep its two facts.
        reason = _one_line(exc.problem or exc.context or type(exc).__name__)
        if exc.problem and exc.context and exc.context_mark:
            reason += f" ({exc.context} from line {exc.context_mark.line + 1})"
        raise _YamlProblem(reason, _line(exc), syntax=True) from None
    except YAMLError as exc:  # the reader's: a character YAML does not allow
        raise _YamlProblem(_one_line(str(exc)), syntax=True) from None


def _line(exc: MarkedYAMLError) -> int | None:
    mark = exc.problem_mark or exc.context_mark
    return mark.line + 1 if mark else None


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
        raw = _yaml_load(text)
    except _YamlProblem as exc:
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
        return _yaml_load(text)
    except _YamlProblem as exc:
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
        return key, _yaml_load(text)
    except _YamlProblem as exc:
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
    return _one_line(str(value))


def _one_line(text: str) -> str:
    return " ".join(text.split())
