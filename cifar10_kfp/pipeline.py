"""The KFP v2 pipeline download -> preprocess -> train -> evaluate, over the DVC stages' code.

The components are the hand-written functions of :mod:`cifar10_kfp.components`, made into KFP
components here with the images chosen at compile time. The pipeline's parameters are
params.yaml's sections, each as JSON text (:mod:`cifar10_kfp.sections`), with defaults read
from the params file when the pipeline is built. Train runs in the GPU image with one NVIDIA
GPU; MLflow's address and credentials come from a Kubernetes secret.
"""

import inspect
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, ClassificationMetrics, Metrics, Model

from cifar10_kfp import components
from cifar10_kfp.sections import SECTIONS, to_arguments
from pipeline.core.errors import ParamsError, PipelineError
from pipeline.core.params import load_params
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
# The sweep's own small tasks (open, pick, close).
SMALL_TASK = ("500m", "1Gi")


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


def build_components(settings: "Settings", *names: str) -> dict[str, Any]:
    """KFP components of the functions ``names`` of cifar10_kfp.components, each in its image:
    the trainings in the GPU one when ``settings.gpu``."""
    ops = {}
    for name in names:
        image = settings.gpu_image if settings.gpu and name.startswith("train") else settings.image
        # The image holds the locked environment, kfp included: nothing to pip install.
        ops[name] = dsl.component(
            getattr(components, name),
            base_image=image,
            packages_to_install=[],
            install_kfp_package=False,
        )
    return ops


def with_section_defaults(
    func: Callable[..., Any], params_file: Path, *others: str
) -> Callable[..., Any]:
    """``func`` (a pipeline function taking params.yaml's sections, and ``others`` first) with
    each section of ``params_file`` as its parameter's default; ParamsError if the sections it
    takes are not the schema's."""
    defaults = to_arguments(load_params(params_file))
    signature = inspect.signature(func)
    if tuple(signature.parameters) != (*others, *SECTIONS):
        raise ParamsError(
            f"pipeline {func.__name__} takes {', '.join(signature.parameters)}; the params "
            f"schema has the sections {', '.join(SECTIONS)}"
        )
    parameters = [
        p.replace(default=defaults[p.name]) if p.name in defaults else p
        for p in signature.parameters.values()
    ]
    func.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return func


def set_resources(task: Any, stage: str, settings: "Settings") -> None:
    """The task's CPU and memory requests; a training's GPU; MLflow's secret where it logs."""
    cpu, memory = RESOURCES.get(stage, SMALL_TASK)
    task.set_cpu_request(cpu).set_memory_request(memory)
    if stage == "train" and settings.gpu:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    if stage not in ("download", "preprocess", "pick_best_trial"):
        use_mlflow_secret(task, settings.mlflow_secret)


def build_pipeline(settings: "Settings | None" = None) -> Any:
    """The KFP pipeline for ``settings``: parameter defaults from its params file."""
    settings = settings or Settings()
    ops = build_components(settings, "download", "preprocess", "train", "evaluate")
    device = "gpu" if settings.gpu else "cpu"

    def cifar10_pipeline(
        data: str,
        preprocess: str,
        model: str,
        train: str,
        mlflow: str,
        evaluate: str,
        register: str,
        checks: str,
    ) -> Outputs:
        fetched = ops["download"](data=data)
        prepared = ops["preprocess"](
            archive=fetched.outputs["archive"], preprocess=preprocess, checks=checks
        )
        trained = ops["train"](
            prepared=prepared.outputs["prepared"],
            archive=fetched.outputs["archive"],
            model=model,
            train=train,
            mlflow=mlflow,
            device=device,
        )
        evaluated = ops["evaluate"](
            prepared=prepared.outputs["prepared"],
            keras_model=trained.outputs["keras_model"],
            train_reports=trained.outputs["train_reports"],
            mlflow=mlflow,
            evaluate=evaluate,
            register=register,
        )
        tasks = {"download": fetched, "preprocess": prepared, "train": trained}
        for stage, task in (tasks | {"evaluate": evaluated}).items():
            set_resources(task, stage, settings)
        # Evaluation and registration always run, as under DVC: a cached evaluate would skip
        # the registry. The other three cache on their parameters and inputs.
        evaluated.set_caching_options(False)
        return Outputs(
            model=trained.outputs["keras_model"],
            test_metrics=evaluated.outputs["test_metrics"],
            confusion=evaluated.outputs["confusion"],
            report=evaluated.outputs["report"],
        )

    description = "CIFAR-10: download -> preprocess -> train -> evaluate, tracked in MLflow"
    pipeline = with_section_defaults(cifar10_pipeline, settings.params_file)
    return dsl.pipeline(name=PIPELINE_NAME, description=description)(pipeline)


def use_mlflow_secret(task: Any, secret: str) -> None:
    """MLflow's URI (required) and credentials (optional keys) from Kubernetes secret ``secret``."""
    kubernetes.use_secret_as_env(task, secret, {key: key for key in REQUIRED_SECRET_KEYS})
    kubernetes.use_secret_as_env(
        task, secret, {key: key for key in OPTIONAL_SECRET_KEYS}, optional=True
    )
