"""The KFP v2 sweep pipeline: download -> preprocess once, train per trial, the best one evaluated.

Same components as cifar10_kfp.pipeline (cifar10_kfp.components, same images, same MLflow
secret), but train is ``train_trial``: the train stage with a trial's params overrides, nested
under the sweep's parent MLflow run. ``trials`` (a list of such overrides, each as JSON text,
checked by ``cifar10_kfp.submit``) fans out under ``dsl.ParallelFor`` with at most
``parallelism`` trainings at once; ``dsl.Collected`` fans the models and reports back in to
``pick_best_trial`` (best validation accuracy), whose copy of the winner goes through the very
evaluate component of the single pipeline, registry gate included: one new model version per
sweep. ``start_sweep`` opens the parent run; ``finish_sweep`` puts the sweep's table and the
winner on it and closes it.
"""

from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Metrics, Model

from cifar10_kfp.pipeline import Settings, build_components, set_resources, with_section_defaults
from cifar10_kfp.trials import TRIALS_PARAMETER, check_parallelism

SWEEP_PIPELINE_NAME = "cifar10-sweep"
# Trainings at once, unless compile --sweep-parallelism or submit --parallelism say otherwise:
# each asks for a GPU (and 4 CPUs, 16 GiB) of its own.
DEFAULT_PARALLELISM = 2
COMPONENTS = (
    "download", "preprocess", "start_sweep", "train_trial", "pick_best_trial", "evaluate",
    "finish_sweep",
)  # fmt: skip


class SweepOutputs(NamedTuple):
    """What a run of the sweep pipeline returns (kfp.local hands these back)."""

    model: Model
    test_metrics: Metrics
    sweep_table: Artifact


def build_sweep_pipeline(
    settings: Settings | None = None, parallelism: int = DEFAULT_PARALLELISM
) -> Any:
    """The KFP sweep pipeline for ``settings``: ``trials`` (required), then params.yaml's
    sections (defaults from the params file), at most ``parallelism`` trainings at once."""
    settings = settings or Settings()
    check_parallelism(parallelism)
    ops = build_components(settings, *COMPONENTS)
    device = "gpu" if settings.gpu else "cpu"

    def cifar10_sweep(
        trials: list,
        data: str,
        preprocess: str,
        model: str,
        train: str,
        mlflow: str,
        evaluate: str,
        register: str,
        checks: str,
    ) -> SweepOutputs:
        fetched = ops["download"](data=data)
        prepared = ops["preprocess"](
            archive=fetched.outputs["archive"], preprocess=preprocess, checks=checks
        )
        started = ops["start_sweep"](trials=trials, mlflow=mlflow)
        # The parent run reaches the trials as an artifact: kfp.local 2.17.3 hands a ParallelFor
        # body the loop item in place of any upstream task's output parameter.
        with dsl.ParallelFor(trials, parallelism=parallelism) as trial:
            trained = ops["train_trial"](
                prepared=prepared.outputs["prepared"],
                archive=fetched.outputs["archive"],
                sweep_run=started.outputs["sweep_run"],
                sweep_trial=trial,
                model=model,
                train=train,
                mlflow=mlflow,
                device=device,
            )
            set_resources(trained, "train", settings)
        best = ops["pick_best_trial"](
            models=dsl.Collected(trained.outputs["keras_model"]),
            train_reports=dsl.Collected(trained.outputs["train_reports"]),
            trials=trials,
        )
        evaluated = ops["evaluate"](
            prepared=prepared.outputs["prepared"],
            keras_model=best.outputs["best_model"],
            train_reports=best.outputs["best_reports"],
            mlflow=mlflow,
            evaluate=evaluate,
            register=register,
        )
        finished = ops["finish_sweep"](
            sweep_run=started.outputs["sweep_run"],
            table=best.outputs["table"],
            test_metrics=evaluated.outputs["test_metrics"],
            evaluation=evaluated.outputs["evaluation"],
        )
        tasks = {"download": fetched, "preprocess": prepared, "start_sweep": started}
        tasks |= {"pick_best_trial": best, "evaluate": evaluated, "finish_sweep": finished}
        for stage, task in tasks.items():
            set_resources(task, stage, settings)
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

    description = (
        "CIFAR-10 sweep: preprocess once, train each trial in parallel, evaluate and register "
        "the best by validation accuracy, tracked in MLflow under one parent run"
    )
    pipeline = with_section_defaults(cifar10_sweep, settings.params_file, TRIALS_PARAMETER)
    return dsl.pipeline(name=SWEEP_PIPELINE_NAME, description=description)(pipeline)
