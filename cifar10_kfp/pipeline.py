"""The KFP v2 pipeline download -> preprocess -> train -> evaluate, over the DVC stages' code.

Each component function below is what KFP copies into its pod: it only hands its arguments to
``cifar10_kfp.runtime``, which calls the stage's ``run``. A component's parameters are the
params.yaml keys its stage reads, flattened (``train.epochs`` -> ``train_epochs``), as dvc.yaml
lists them; the pipeline's parameters are their union, with defaults read from params.yaml when
the pipeline is built. Train runs in the GPU image with one NVIDIA GPU; MLflow's address and
credentials come from a Kubernetes secret.
"""

# No `from __future__ import annotations` here: KFP reads the component annotations as types.
# A params key that may be null (data.md5, preprocess.max_train_images) is a plain str or int
# parameter, null passing as "" or 0: KFP can pass no null (cifar10_kfp.runtime.NULL_AS).

import importlib.metadata
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output
from kfp.dsl.types import type_annotations

from cifar10_kfp.runtime import dotted_name, pipeline_defaults
from pipeline.core.errors import ParamsError
from pipeline.core.params import load_params
from pipeline.core.paths import REPO_ROOT

PIPELINE_NAME = "cifar10-pipeline"
_VERSION = importlib.metadata.version("cifar10-pipeline")
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


def download(archive: Output[Dataset], data_url: str, data_md5: str):
    """Stage download: data.url -> the CIFAR-10 archive, its md5 checked."""
    args = dict(locals())
    from cifar10_kfp.runtime import download_step

    download_step(**args)


def preprocess(
    archive: Input[Dataset],
    prepared: Output[Dataset],
    data_reports: Output[Artifact],
    preprocess_val_size: int,
    preprocess_max_train_images: int,
    preprocess_seed: int,
):
    """Stage preprocess: the archive -> train/val/test.npz and classes.json, data summary."""
    args = dict(locals())
    from cifar10_kfp.runtime import preprocess_step

    preprocess_step(**args)


def train(
    prepared: Input[Dataset],
    archive: Input[Dataset],
    model: Output[Model],
    train_reports: Output[Artifact],
    train_metrics: Output[Metrics],
    model_conv_filters: list,
    model_kernel_size: int,
    model_dense_units: int,
    model_dropout_conv: float,
    model_dropout_dense: float,
    model_augment: bool,
    train_epochs: int,
    train_batch_size: int,
    train_optimizer: str,
    train_learning_rate: float,
    train_lr_schedule: str,
    train_seed: int,
    train_deterministic: bool,
    train_mixed_precision: str,
    train_restore_best: bool,
    train_device: str,
    train_steps_per_execution: int,
    mlflow_experiment_name: str,
):
    """Stage train: the reference CNN, one MLflow run; model.keras and run.json in ``model``."""
    args = dict(locals())
    from cifar10_kfp.runtime import train_step

    train_step(**args)


def evaluate(
    prepared: Input[Dataset],
    model: Input[Model],
    train_reports: Input[Artifact],
    test_metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    report: Output[HTML],
    evaluation: Output[Artifact],
    mlflow_registered_model_name: str,
    register_min_accuracy: float,
    register_min_improvement: float,
    register_allow_champion: bool,
):
    """Stage evaluate: test metrics, confusion matrix, report; registers the model version."""
    args = dict(locals())
    from cifar10_kfp.runtime import evaluate_step

    evaluate_step(**args)


STAGES: dict[str, Callable[..., None]] = {
    "download": download,
    "preprocess": preprocess,
    "train": train,
    "evaluate": evaluate,
}


class Outputs(NamedTuple):
    """What a run of the pipeline returns (kfp.local hands these back)."""

    model: Model
    test_metrics: Metrics
    confusion: ClassificationMetrics
    report: HTML


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


def pipeline_parameters(defaults: dict[str, Any], fixed: dict[str, Any]) -> list[inspect.Parameter]:
    """The pipeline's parameters: every stage's, once, typed as the stage declares them.

    ``defaults`` are params.yaml's values by pipeline parameter name; ``fixed`` names the stage
    arguments the pipeline sets itself. A stage parameter params.yaml lacks is a ParamsError.
    """
    parameters: dict[str, inspect.Parameter] = {}
    for stage, func in STAGES.items():
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


def build_components(settings: Settings) -> dict[str, Any]:
    """The four KFP components, each in its image: train in the GPU one when ``settings.gpu``."""
    images = {stage: settings.image for stage in STAGES}
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
        for stage, func in STAGES.items()
    }


def build_pipeline(settings: Settings | None = None) -> Any:
    """The KFP pipeline for ``settings``: parameters and defaults from its params file."""
    settings = settings or Settings()
    defaults = pipeline_defaults(load_params(settings.params_file))
    fixed = {"train_device": "gpu" if settings.gpu else "cpu"}
    parameters = pipeline_parameters(defaults, fixed)
    names = [parameter.name for parameter in parameters]

    ops = build_components(settings)
    download_op, preprocess_op = ops["download"], ops["preprocess"]
    train_op, evaluate_op = ops["train"], ops["evaluate"]

    def cifar10_pipeline(*channels: Any) -> Outputs:
        # KFP calls the pipeline function positionally, in the order of its signature.
        values = dict(zip(names, channels, strict=True)) | fixed

        def pick(func: Callable[..., None]) -> dict[str, Any]:
            return {name: values[name] for name in stage_parameters(func)}

        fetched = download_op(**pick(download))
        prepared = preprocess_op(archive=fetched.outputs["archive"], **pick(preprocess))
        trained = train_op(
            prepared=prepared.outputs["prepared"],
            archive=fetched.outputs["archive"],
            **pick(train),
        )
        evaluated = evaluate_op(
            prepared=prepared.outputs["prepared"],
            model=trained.outputs["model"],
            train_reports=trained.outputs["train_reports"],
            **pick(evaluate),
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
