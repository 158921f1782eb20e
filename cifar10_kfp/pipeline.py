"""The KFP v2 pipeline download -> preprocess -> train -> evaluate, over the DVC stages' code.

A component's parameters are the params.yaml keys that dvc.yaml lists for its stage, flattened
(``train.epochs`` -> ``train_epochs``) and typed by the params schema (pipeline/core/params.py);
its artifacts (what DVC calls deps and outs) are declared here, in ``ARTIFACTS``. The component
functions are generated from those two when the pipeline is built, so a new params key reaches
Kubeflow through params.yaml, the schema and dvc.yaml alone; ``make kfp`` then rewrites the
compiled YAML. A generated function only hands its arguments to ``cifar10_kfp.runtime``, which
calls the stage's ``run``. The pipeline's parameters are the components' union, with defaults
read from params.yaml when the pipeline is built. Train runs in the GPU image with one NVIDIA
GPU; MLflow's address and credentials come from a Kubernetes secret.
"""

# No `from __future__ import annotations` here: KFP reads the component annotations as types.
# A params key that may be null (data.md5, preprocess.max_train_images) is a plain str or int
# parameter, null passing as "" or 0: KFP can pass no null (cifar10_kfp.runtime.NULL_AS).

import inspect
import keyword
import linecache
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output
from kfp.dsl.types import type_annotations
from pydantic import BaseModel

from cifar10_kfp.runtime import dotted_name, flat_name, pipeline_defaults
from pipeline.core.errors import ParamsError, PipelineError
from pipeline.core.params import Params, load_params
from pipeline.core.paths import REPO_ROOT

PIPELINE_NAME = "cifar10-pipeline"


def project_version(pyproject: Path = REPO_ROOT / "pyproject.toml") -> str:
    """The project's version, read from pyproject.toml.

    Not from the installed distribution's metadata: the images sync with --no-install-project,
    so they have the file but no cifar10-pipeline distribution.
    """
    try:
        return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]
    except FileNotFoundError:
        raise PipelineError(f"{pyproject}: not found (the image tags carry its version)") from None
    except (tomllib.TOMLDecodeError, KeyError, TypeError):
        raise PipelineError(f"{pyproject}: no [project] version (the image tags need it)") from None


_VERSION = project_version()
# The images of docker/Dockerfile and docker/Dockerfile.gpu; OWNER is a placeholder to replace.
DEFAULT_IMAGE = f"ghcr.io/OWNER/cifar10-pipeline:{_VERSION}"
DEFAULT_GPU_IMAGE = f"ghcr.io/OWNER/cifar10-pipeline:{_VERSION}-gpu"
DEFAULT_SECRET = "mlflow-tracking"
# Secret keys -> environment variables of the train and evaluate pods. Only the URI must exist;
# the rest depend on how the tracking server is secured and where it keeps artifacts.
REQUIRED_SECRET_KEYS = ("MLFLOW_TRACKING_URI",)
OPTIONAL_SECRET_KEYS = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)
# CPU and memory requests per task: the full data set is ~180 MB of uint8 arrays per copy.
RESOURCES = {
    "download": ("500m", "512Mi"),
    "preprocess": ("1", "4Gi"),
    "train": ("4", "16Gi"),
    "evaluate": ("2", "8Gi"),
}

# Each stage's artifacts, in the order of its component's arguments (before the parameters):
# name -> annotation, as the generated source spells it. The stage's step function in
# cifar10_kfp.runtime takes the same names.
ARTIFACTS: dict[str, dict[str, str]] = {
    "download": {"archive": "Output[Dataset]"},
    "preprocess": {
        "archive": "Input[Dataset]",
        "prepared": "Output[Dataset]",
        "data_reports": "Output[Artifact]",
    },
    "train": {
        "prepared": "Input[Dataset]",
        "archive": "Input[Dataset]",
        "model": "Output[Model]",
        "train_reports": "Output[Artifact]",
        "train_metrics": "Output[Metrics]",
    },
    "evaluate": {
        "prepared": "Input[Dataset]",
        "model": "Input[Model]",
        "train_reports": "Input[Artifact]",
        "test_metrics": "Output[Metrics]",
        "confusion": "Output[ClassificationMetrics]",
        "report": "Output[HTML]",
        "evaluation": "Output[Artifact]",
    },
}
SUMMARIES = {
    "download": "Stage download: data.url -> the CIFAR-10 archive, its md5 checked.",
    "preprocess": "Stage preprocess: the archive -> train/val/test.npz and classes.json.",
    "train": "Stage train: the reference CNN, one MLflow run; model.keras and run.json.",
    "evaluate": "Stage evaluate: test metrics, confusion matrix, report; registers the model.",
}
# The names the generated sources use, as KFP's ephemeral module has them (from kfp.dsl import *).
_SOURCE_NAMES = {
    "Input": Input,
    "Output": Output,
    "Dataset": Dataset,
    "Model": Model,
    "Artifact": Artifact,
    "Metrics": Metrics,
    "ClassificationMetrics": ClassificationMetrics,
    "HTML": HTML,
}
# The parameter types KFP has; a params key of another type cannot be a pipeline parameter.
_KFP_TYPES = (str, int, float, bool, list, dict)


def schema_keys() -> dict[str, type]:
    """Every params key (dotted, in schema order) -> its pipeline parameter type.

    ``X | None`` is X (null travels as X's empty value), a Literal of strings is str, ``list[...]``
    is list, a nested section (``model.reference``) is dict. ParamsError for a type KFP has no
    parameter for.
    """
    keys: dict[str, type] = {}
    for name, section in Params.model_fields.items():
        for key, spec in section.annotation.model_fields.items():
            dotted = f"{section.alias or name}.{key}"
            keys[dotted] = _kfp_type(dotted, spec.annotation)
    return keys


def _kfp_type(dotted: str, annotation: Any) -> type:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)]
        if len(kinds) == 1:
            return _kfp_type(dotted, kinds[0])
    elif origin is typing.Literal:
        kinds = {type(value) for value in typing.get_args(annotation)}
        if len(kinds) == 1:
            return _kfp_type(dotted, kinds.pop())
    elif origin in (list, dict):
        return origin
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        # A nested section (model.reference, one per architecture): one struct parameter.
        return dict
    elif annotation in _KFP_TYPES:
        return annotation
    raise ParamsError(
        f"{dotted}: its schema type {annotation} has no Kubeflow parameter type "
        f"({', '.join(kind.__name__ for kind in _KFP_TYPES)})"
    )


def stage_keys(dvc_file: Path) -> dict[str, list[str]]:
    """Each stage's params keys as dvc.yaml lists them, a whole section as its keys.

    ParamsError (one line) for a stage the pipeline lacks or dvc.yaml lacks, a key or section
    the schema does not have, or params from another file.
    """
    label = dvc_file.name
    try:
        stages = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))["stages"]
    except FileNotFoundError:
        raise ParamsError(f"{dvc_file}: file not found") from None
    except (yaml.YAMLError, KeyError, TypeError):
        raise ParamsError(f"{label}: not a dvc.yaml with a `stages:` mapping") from None
    if not isinstance(stages, dict):
        raise ParamsError(f"{label}: not a dvc.yaml with a `stages:` mapping")
    for stage in ARTIFACTS:
        if not isinstance(stages.get(stage), dict):
            raise ParamsError(
                f"{label}: no stage {stage} (the Kubeflow pipeline runs {', '.join(ARTIFACTS)})"
            )
    extra = [stage for stage in stages if stage not in ARTIFACTS]
    if extra:
        raise ParamsError(
            f"{label}: stage {extra[0]} has no Kubeflow component (cifar10_kfp/pipeline.py "
            "ARTIFACTS lists each stage's artifacts)"
        )
    known = schema_keys()
    keys: dict[str, list[str]] = {}
    for stage in ARTIFACTS:
        listed: list[str] = []
        for entry in stages[stage].get("params") or []:
            if not isinstance(entry, str):
                raise ParamsError(
                    f"{label}: stage {stage} reads params from another file ({entry}); "
                    "the Kubeflow pipeline passes params.yaml keys only"
                )
            matched = [key for key in known if key == entry or key.startswith(f"{entry}.")]
            if not matched:
                raise ParamsError(
                    f"{label}: stage {stage} lists {entry}, which is not a key or section of "
                    "params.yaml (pipeline/core/params.py)"
                )
            listed += [key for key in matched if key not in listed]
        keys[stage] = listed
    return keys


class Variant(NamedTuple):
    """A stage's component under another name, with arguments of its own (name -> annotation,
    as the generated source spells it, e.g. ``"dict"`` or ``"Input[Artifact]"``)."""

    name: str
    extra: dict[str, str]
    summary: str


def stage_functions(
    dvc_file: Path, variants: dict[str, Variant] | None = None
) -> dict[str, Callable[..., None]]:
    """The four component functions, generated from ``ARTIFACTS`` and dvc.yaml's stage params.

    ``variants``: a stage's function is that variant of it instead (the sweep's train).
    """
    kinds = schema_keys()
    variants = variants or {}
    return {
        stage: _define(stage, {flat_name(key): kinds[key] for key in keys}, variants.get(stage))
        for stage, keys in stage_keys(dvc_file).items()
    }


def component_source(
    stage: str, parameters: dict[str, type], variant: Variant | None = None
) -> str:
    """The source of ``stage``'s component function: artifacts, then ``parameters`` (name: type).

    This is the code KFP copies into the pod, so it is plain Python with its whole signature
    spelled out: KFP's executor reads the signature there to hand over the task's inputs.
    ``variant``: the same stage under another name, with arguments of its own before the params
    (the sweep's train, cifar10_kfp.sweep); it calls ``cifar10_kfp.runtime.<name>_step``.
    """
    name, extra, summary = variant or (stage, {}, SUMMARIES[stage])
    names = [*ARTIFACTS[stage], *extra, *parameters]
    for argument in names:
        # Schema field names are identifiers already; this keeps the exec below honest.
        if not argument.isidentifier() or keyword.iskeyword(argument) or names.count(argument) > 1:
            raise ParamsError(f"component {name}: {argument} cannot be an argument name")
    arguments = [f"    {argument}: {kind}," for argument, kind in ARTIFACTS[stage].items()]
    arguments += [f"    {argument}: {kind}," for argument, kind in extra.items()]
    arguments += [f"    {argument}: {kind.__name__}," for argument, kind in parameters.items()]
    lines = [
        f"def {name}(",
        *arguments,
        "):",
        f'    """{summary}"""',
        "    args = dict(locals())",
        f"    from cifar10_kfp.runtime import {name}_step",
        "",
        f"    {name}_step(**args)",
        "",
    ]
    return "\n".join(lines)


def _define(
    stage: str, parameters: dict[str, type], variant: Variant | None = None
) -> Callable[..., None]:
    """Compile :func:`component_source` into a function whose source inspect can find."""
    source = component_source(stage, parameters, variant)
    # KFP reads a component's source with inspect.getsource, which reads it through linecache:
    # registered there (no mtime, so never checked against a file), the generated source reads
    # like a file's. attrs registers its generated methods the same way.
    filename = f"<cifar10_kfp component {variant.name if variant else stage}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"__name__": __name__, **_SOURCE_NAMES}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[variant.name if variant else stage]


class Outputs(NamedTuple):
    """What a run of the pipeline returns (kfp.local hands these back)."""

    model: Model
    test_metrics: Metrics
    confusion: ClassificationMetrics
    report: HTML


# A container image reference as Kubernetes (and Docker) accept it: an optional registry host
# (with a port), lower-case path components, an optional tag, an optional digest.
IMAGE_REFERENCE = re.compile(
    r"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
# A Kubernetes object name (DNS-1123 subdomain), at most 253 characters.
SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True)
class Settings:
    """Compile-time choices: images, the MLflow secret, and whether train gets a GPU."""

    image: str = DEFAULT_IMAGE
    gpu_image: str = DEFAULT_GPU_IMAGE
    mlflow_secret: str = DEFAULT_SECRET
    # False: train runs in the CPU image with train.device=cpu and asks for no GPU (kfp.local,
    # or a cluster without a GPU node pool).
    gpu: bool = True
    params_file: Path = field(default=REPO_ROOT / "params.yaml")
    # Which params each stage reads (and so each component's parameters).
    dvc_file: Path = field(default=REPO_ROOT / "dvc.yaml")

    def __post_init__(self) -> None:
        # Kubernetes refuses these only when a run starts, after the upload: say so at compile.
        for what, image in (("image", self.image), ("gpu image", self.gpu_image)):
            # The committed YAML keeps the OWNER placeholder on purpose: replaced at compile time.
            if image not in (DEFAULT_IMAGE, DEFAULT_GPU_IMAGE) and not IMAGE_REFERENCE.fullmatch(
                image
            ):
                raise PipelineError(
                    f"{what} {image!r} is not an image reference Kubernetes accepts "
                    "(registry/repository[:tag][@sha256:digest], repository in lower case)"
                )
        if len(self.mlflow_secret) > 253 or not SECRET_NAME.fullmatch(self.mlflow_secret):
            raise PipelineError(
                f"MLflow secret {self.mlflow_secret!r} is not a Kubernetes secret name (lower "
                "case letters, digits, '-' and '.', starting and ending with a letter or digit)"
            )

    @classmethod
    def from_env(cls, **overrides: Any) -> "Settings":
        """Settings from KFP_IMAGE, KFP_GPU_IMAGE and KFP_MLFLOW_SECRET, then ``overrides``."""
        env = {
            "image": os.environ.get("KFP_IMAGE"),
            "gpu_image": os.environ.get("KFP_GPU_IMAGE"),
            "mlflow_secret": os.environ.get("KFP_MLFLOW_SECRET"),
        }
        chosen = {key: value for key, value in env.items() if value}
        chosen.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**chosen)


def stage_parameters(func: Callable[..., None]) -> dict[str, inspect.Parameter]:
    """A component function's parameters that are pipeline parameters (not artifacts)."""
    return {
        name: parameter
        for name, parameter in inspect.signature(func).parameters.items()
        if not type_annotations.is_Input_Output_artifact_annotation(parameter.annotation)
    }


def pipeline_parameters(
    functions: dict[str, Callable[..., None]], defaults: dict[str, Any], fixed: dict[str, Any]
) -> list[inspect.Parameter]:
    """The pipeline's parameters: every stage's, once, typed as the stage declares them.

    ``defaults`` are params.yaml's values by pipeline parameter name; ``fixed`` names the stage
    arguments the pipeline sets itself. A stage parameter params.yaml lacks is a ParamsError.
    """
    parameters: dict[str, inspect.Parameter] = {}
    for stage, func in functions.items():
        for name, parameter in stage_parameters(func).items():
            if name in fixed or name in parameters:
                continue
            if name not in defaults:
                raise ParamsError(
                    f"component {stage} reads {name}, which is not a key of params.yaml "
                    f"({dotted_name(name)})"
                )
            parameters[name] = inspect.Parameter(
                name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=defaults[name],
                annotation=parameter.annotation,
            )
    return list(parameters.values())


def build_components(
    settings: Settings, functions: dict[str, Callable[..., None]] | None = None
) -> dict[str, Any]:
    """The four KFP components, each in its image: train in the GPU one when ``settings.gpu``.

    ``functions``: the component functions, generated from ``settings.dvc_file`` if not given.
    """
    functions = functions or stage_functions(settings.dvc_file)
    images = {stage: settings.image for stage in functions}
    if settings.gpu:
        images["train"] = settings.gpu_image
    return {
        stage: dsl.component(
            func,
            base_image=images[stage],
            # The image holds the locked environment, kfp included: nothing to pip install.
            packages_to_install=[],
            install_kfp_package=False,
        )
        for stage, func in functions.items()
    }


def build_pipeline(settings: Settings | None = None) -> Any:
    """The KFP pipeline for ``settings``: parameters and defaults from its params file."""
    settings = settings or Settings()
    defaults = pipeline_defaults(load_params(settings.params_file))
    fixed = {"train_device": "gpu" if settings.gpu else "cpu"}
    functions = stage_functions(settings.dvc_file)
    parameters = pipeline_parameters(functions, defaults, fixed)
    names = [parameter.name for parameter in parameters]

    ops = build_components(settings, functions)
    download_op, preprocess_op = ops["download"], ops["preprocess"]
    train_op, evaluate_op = ops["train"], ops["evaluate"]

    def cifar10_pipeline(*channels: Any) -> Outputs:
        # KFP calls the pipeline function positionally, in the order of its signature.
        values = dict(zip(names, channels, strict=True)) | fixed

        def pick(stage: str) -> dict[str, Any]:
            return {name: values[name] for name in stage_parameters(functions[stage])}

        fetched = download_op(**pick("download"))
        prepared = preprocess_op(archive=fetched.outputs["archive"], **pick("preprocess"))
        trained = train_op(
            prepared=prepared.outputs["prepared"],
            archive=fetched.outputs["archive"],
            **pick("train"),
        )
        evaluated = evaluate_op(
            prepared=prepared.outputs["prepared"],
            model=trained.outputs["model"],
            train_reports=trained.outputs["train_reports"],
            **pick("evaluate"),
        )
        tasks = {"download": fetched, "preprocess": prepared, "train": trained}
        for stage, task in (tasks | {"evaluate": evaluated}).items():
            cpu, memory = RESOURCES[stage]
            task.set_cpu_request(cpu).set_memory_request(memory)
        if settings.gpu:
            trained.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
        for task in (trained, evaluated):
            use_mlflow_secret(task, settings.mlflow_secret)
        # Evaluation and registration always run, as under DVC: a cached evaluate would skip
        # the registry. The other three cache on their parameters and inputs.
        evaluated.set_caching_options(False)
        return Outputs(
            model=trained.outputs["model"],
            test_metrics=evaluated.outputs["test_metrics"],
            confusion=evaluated.outputs["confusion"],
            report=evaluated.outputs["report"],
        )

    cifar10_pipeline.__signature__ = inspect.Signature(parameters, return_annotation=Outputs)
    description = "CIFAR-10: download -> preprocess -> train -> evaluate, tracked in MLflow"
    return dsl.pipeline(name=PIPELINE_NAME, description=description)(cifar10_pipeline)


def use_mlflow_secret(task: Any, secret: str) -> None:
    """MLflow's URI (required) and credentials (optional keys) from Kubernetes secret ``secret``."""
    kubernetes.use_secret_as_env(task, secret, {key: key for key in REQUIRED_SECRET_KEYS})
    kubernetes.use_secret_as_env(
        task, secret, {key: key for key in OPTIONAL_SECRET_KEYS}, optional=True
    )
