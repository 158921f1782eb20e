"""The KFP v2 sweep pipeline: download -> preprocess once, train per trial, the best one evaluated.

Same stage components as cifar10_kfp.pipeline (generated from dvc.yaml and the params schema, in
the same images, with the same MLflow secret), but train is its ``train_trial`` variant: two
arguments more, the trial (params overrides, dotted keys) and the sweep's parent MLflow run.
``trials`` (a list of such mappings, checked by ``cifar10_kfp.submit``) fans out under
``dsl.ParallelFor`` with at most ``parallelism`` trainings at once; ``dsl.Collected`` fans the
models and reports back in to ``pick_best_trial`` (best validation accuracy), whose copy of the
winner goes through the very evaluate component of the single pipeline, registry gate included:
one new model version per sweep. ``start_sweep`` opens the parent run that every trial's run
nests under; ``finish_sweep`` puts the sweep's table and the winner on it and closes it.
"""

# No `from __future__ import annotations` here: KFP reads the component annotations as types.

import inspect
from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from cifar10_kfp.pipeline import (
    RESOURCES,
    Settings,
    Variant,
    build_components,
    pipeline_parameters,
    stage_functions,
    stage_parameters,
    use_mlflow_secret,
)
from cifar10_kfp.runtime import pipeline_defaults
from cifar10_kfp.trials import TRIALS_PARAMETER, check_parallelism
from pipeline.core.params import load_params

SWEEP_PIPELINE_NAME = "cifar10-sweep"
# Trainings at once, unless compile --sweep-parallelism or submit --parallelism say otherwise:
# each asks for a GPU (and 4 CPUs, 16 GiB) of its own.
DEFAULT_PARALLELISM = 2
# The sweep's train: the train stage's component with the trial and the parent run before its
# params; it runs cifar10_kfp.runtime.train_trial_step.
TRAIN_TRIAL = Variant(
    "train_trial",
    {"sweep_trial": "dict", "sweep_run": "Input[Artifact]"},
    "One trial of a sweep: stage train with the trial's params, nested under the sweep's run.",
)
SMALL_TASK = ("500m", "1Gi")


def start_sweep(
    trials: list, mlflow_experiment_name: str, mlflow_sweep: str, sweep_run: Output[Artifact]
):
    """Open the sweep's parent MLflow run (named mlflow.sweep, or after the clock)."""
    from cifar10_kfp.sweep_runtime import start_sweep_step

    start_sweep_step(trials, mlflow_experiment_name, mlflow_sweep, sweep_run)


def pick_best_trial(
    models: Input[list[Model]],
    train_reports: Input[list[Artifact]],
    trials: list,
    best_model: Output[Model],
    best_reports: Output[Artifact],
    table: Output[Artifact],
):
    """The trial with the best validation accuracy: its model and reports, copied for evaluate."""
    from cifar10_kfp.sweep_runtime import pick_best_trial_step

    pick_best_trial_step(models, train_reports, trials, best_model, best_reports, table)


def finish_sweep(
    sweep_run: Input[Artifact],
    table: Input[Artifact],
    test_metrics: Input[Metrics],
    evaluation: Input[Artifact],
    sweep_table: Output[Artifact],
):
    """The sweep's table and its winner on the parent MLflow run, which then ends."""
    from cifar10_kfp.sweep_runtime import finish_sweep_step

    finish_sweep_step(sweep_run, table, test_metrics, evaluation, sweep_table)


class SweepOutputs(NamedTuple):
    """What a run of the sweep pipeline returns (kfp.local hands these back)."""

    model: Model
    test_metrics: Metrics
    sweep_table: Artifact


def build_sweep_pipeline(
    settings: Settings | None = None, parallelism: int = DEFAULT_PARALLELISM
) -> Any:
    """The KFP sweep pipeline for ``settings``: ``trials`` first, then the single pipeline's
    parameters (defaults from the params file), at most ``parallelism`` trainings at once."""
    settings = settings or Settings()
    check_parallelism(parallelism)
    defaults = pipeline_defaults(load_params(settings.params_file))
    fixed = {"train_device": "gpu" if settings.gpu else "cpu"}
    functions = stage_functions(settings.dvc_file)
    parameters = pipeline_parameters(functions, defaults, fixed)
    names = [parameter.name for parameter in parameters]

    ops = build_components(settings, stage_functions(settings.dvc_file, {"train": TRAIN_TRIAL}))
    download_op, preprocess_op = ops["download"], ops["preprocess"]
    train_op, evaluate_op = ops["train"], ops["evaluate"]
    own = {"packages_to_install": [], "install_kfp_package": False, "base_image": settings.image}
    start_op = dsl.component(start_sweep, **own)
    pick_op = dsl.component(pick_best_trial, **own)
    finish_op = dsl.component(finish_sweep, **own)

    def cifar10_sweep(trials: Any, *channels: Any) -> SweepOutputs:
        # KFP calls the pipeline function positionally, in the order of its signature.
        values = dict(zip(names, channels, strict=True)) | fixed

        def pick(stage: str) -> dict[str, Any]:
            return {name: values[name] for name in stage_parameters(functions[stage])}

        fetched = download_op(**pick("download"))
        prepared = preprocess_op(archive=fetched.outputs["archive"], **pick("preprocess"))
        started = start_op(
            trials=trials,
            mlflow_experiment_name=values["mlflow_experiment_name"],
            mlflow_sweep=values["mlflow_sweep"],
        )
        # The parent run reaches the trials as an artifact: kfp.local 2.17.3 hands a ParallelFor
        # body the loop item in place of any upstream task's output parameter.
        with dsl.ParallelFor(trials, parallelism=parallelism) as trial:
            trained = train_op(
                prepared=prepared.outputs["prepared"],
                archive=fetched.outputs["archive"],
                sweep_trial=trial,
                sweep_run=started.outputs["sweep_run"],
                **pick("train"),
            )
            cpu, memory = RESOURCES["train"]
            trained.set_cpu_request(cpu).set_memory_request(memory)
            if settings.gpu:
                trained.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
            use_mlflow_secret(trained, settings.mlflow_secret)
        best = pick_op(
            models=dsl.Collected(trained.outputs["model"]),
            train_reports=dsl.Collected(trained.outputs["train_reports"]),
            trials=trials,
        )
        evaluated = evaluate_op(
            prepared=prepared.outputs["prepared"],
            model=best.outputs["best_model"],
            train_reports=best.outputs["best_reports"],
            **pick("evaluate"),
        )
        finished = finish_op(
            sweep_run=started.outputs["sweep_run"],
            table=best.outputs["table"],
            test_metrics=evaluated.outputs["test_metrics"],
            evaluation=evaluated.outputs["evaluation"],
        )
        stages = {"download": fetched, "preprocess": prepared, "evaluate": evaluated}
        for stage, task in stages.items():
            cpu, memory = RESOURCES[stage]
            task.set_cpu_request(cpu).set_memory_request(memory)
        for task in (started, best, finished):
            task.set_cpu_request(SMALL_TASK[0]).set_memory_request(SMALL_TASK[1])
        for task in (started, evaluated, finished):
            use_mlflow_secret(task, settings.mlflow_secret)
        # The parent run, evaluation (the registry) and the closing always run: a cached one
        # would reuse an older sweep's run. Trainings never hit the cache either (their parent
        # run differs); download and preprocess do, as in the single pipeline.
        for task in (started, evaluated, finished):
            task.set_caching_options(False)
        return SweepOutputs(
            model=best.outputs["best_model"],
            test_metrics=evaluated.outputs["test_metrics"],
            sweep_table=finished.outputs["sweep_table"],
        )

    trials_parameter = inspect.Parameter(
        TRIALS_PARAMETER, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=list
    )
    cifar10_sweep.__signature__ = inspect.Signature(
        [trials_parameter, *parameters], return_annotation=SweepOutputs
    )
    description = (
        "CIFAR-10 sweep: preprocess once, train each trial in parallel, evaluate and register "
        "the best by validation accuracy, tracked in MLflow under one parent run"
    )
    return dsl.pipeline(name=SWEEP_PIPELINE_NAME, description=description)(cifar10_sweep)
