"""One tracked training: the MLflow run around ``training.fit`` and the stage's outputs."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras

from pipeline.artifacts.history import EpochRow, write_history
from pipeline.artifacts.run_info import RunInfo, write_run_info
from pipeline.core import keras_backend, paths
from pipeline.core.atomic import check_writable, save_keras_atomically, write_json, write_text
from pipeline.core.checksums import file_md5, files_md5
from pipeline.core.errors import PipelineError
from pipeline.core.params import Params, architecture_names, flatten_params
from pipeline.core.paths import REPO_ROOT
from pipeline.core.redact import relative_to_root
from pipeline.data.checks import log_data_checks
from pipeline.predict.drift import log_reference
from pipeline.tracking import metric_names
from pipeline.tracking.datasets import SplitDataset, log_datasets, split_dataset
from pipeline.tracking.headline import (
    DESCRIPTION_TAG,
    changed_params,
    committed_params,
    headline,
)
from pipeline.tracking.lineage import dvc_experiment, lineage_tags
from pipeline.tracking.runs import (
    SWEEP_TAG,
    parent_run_tags,
    prepare_tracking,
    shareable_uri,
    tracking_uri,
    use_experiment,
)
from pipeline.tracking.serving import log_served_model, model_id
from pipeline.train import backend
from pipeline.train.checkpoints import ResumeState, TrainingCheckpoint, checkpoint_key
from pipeline.train.code_digest import stage_code_md5s
from pipeline.train.fit import BEST_MONITOR, fit, load_prepared, new_model, precision_policy
from pipeline.train.model import model_summary
from pipeline.train.precision import cpu_bf16_flags
from pipeline.train.trial_names import trial_name, trial_number

if TYPE_CHECKING:
    from mlflow import ActiveRun

log = logging.getLogger("pipeline")

# The params logged to the training run (see logged_params).
LOGGED_SECTIONS = ("data.", "preprocess.", "model.", "train.")
LOGGED_KEYS = {"mlflow.experiment_name"}
# Final metrics measured on a split, for linking them to its dataset in MLflow.
# The whole training's figures for MLflow, each linked to the split it was measured on: the
# kept epoch is chosen on val (restore_best), time and speed are over the train split. The kept
# epoch's own accuracy and loss are already the accuracy/* and loss/* curves.
FINAL_ON_SPLIT = {"train": ("train_seconds", "images_per_s"), "val": ("epoch",)}
# The key of reports/train_metrics.json that ties a DVC experiment row to its MLflow run.
RUN_ID_KEY = "mlflow_run_id"


@dataclass
class TrainOutputs:
    """Where the train stage writes."""

    models_dir: Path
    reports_dir: Path

    @property
    def model(self) -> Path:
        return self.models_dir / paths.MODEL_FILE

    @property
    def run_info(self) -> Path:
        return self.models_dir / paths.RUN_INFO_FILE


def run_training(
    params: Params,
    prepared_dir: Path,
    outputs: TrainOutputs,
    checkpoints_dir: Path,
    raw_archive: Path,
) -> dict[str, float]:
    """Train from params inside one MLflow run, write the stage outputs, return final metrics.

    Resumes an interrupted training (and its MLflow run) from its checkpoint; under
    ``mlflow run`` it logs to the run that ``MLFLOW_RUN_ID`` names instead of opening another.
    """
    import mlflow

    # First: train.device=gpu without a GPU must fail before any run, store or output exists.
    backend.select_device(params.train.device, params.train.deterministic)
    # ...and so must train.devices asking for more devices than are visible.
    backend.plan_distribution(params.train.distribution, params.train.devices)
    # Every folder it writes, before the hours of training rather than after.
    for folder in (outputs.models_dir, outputs.reports_dir, checkpoints_dir):
        check_writable(folder)
    data = load_prepared(prepared_dir)
    uri = prepare_tracking()  # a dead tracking server fails here, before any training
    data_md5 = files_md5(data.files)
    key = checkpoint_key(params.model_dump(include={"model", "train"}), data_md5)
    policy = precision_policy(params.train.mixed_precision)
    # A checkpoint resumes only on the backend and precision that wrote it.
    runtime = {"keras.backend": keras_backend.name(), "train.precision_policy": policy}
    checkpoint = TrainingCheckpoint(
        checkpoints_dir / key,
        stage_code_md5s(REPO_ROOT, "train"),
        runtime,
        expected_model=lambda: new_model(params.model, params.train),
    )
    with checkpoint.lock(), _tracking_failures(uri, checkpoint, params.train.epochs):
        experiment_id = use_experiment(params.mlflow.experiment_name)
        resume = checkpoint.load()
        _close_abandoned_run(checkpoint.discarded_run_id)
        run_id = os.environ.get("MLFLOW_RUN_ID") or _resumable_run(resume, experiment_id)
        experiment = dvc_experiment()
        # A new run under `dvc exp run` is named after the DVC experiment (a sweep trial is
        # renamed for its sweep below, the experiment kept in its dvc.experiment tag); a resumed
        # run keeps its name.
        run_name = experiment[0] if experiment and run_id is None else None
        changes = changed_params(params, committed_params(REPO_ROOT))
        # The sweep tag at creation, in the same write as the start time: a trial counts every
        # trial that started before it (trial_names.py).
        sweep = params.mlflow.sweep
        tags = {} if sweep is None else {SWEEP_TAG: sweep}
        with _open_run(run_id, experiment_id, run_name, tags) as run:
            if run.info.experiment_id != experiment_id:
                # `mlflow run` without --experiment-name opened the run in "Default".
                log.warning(
                    "MLflow run %s is in experiment id %s, not in %r (mlflow.experiment_name): "
                    "pass `--experiment-name %s` to `mlflow run`",
                    run.info.run_id,
                    run.info.experiment_id,
                    params.mlflow.experiment_name,
                    params.mlflow.experiment_name,
                )
            # Seed only now: MLflow draws the run name from Python's `random`, and seeding
            # before start_run would give every run the same name.
            backend.configure_determinism(params.train.seed, params.train.deterministic)
            keras.mixed_precision.set_global_policy(policy)
            mlflow.log_params(logged_params(params))
            mlflow.set_tags(lineage_tags(REPO_ROOT, raw_archive, data_md5, policy != "float32"))
            # The run page's description; evaluate puts the test accuracy in front.
            mlflow.set_tag(DESCRIPTION_TAG, headline(changes))
            # Which policy `mixed_precision: auto` chose here, and on what evidence.
            mlflow.set_tags({"train.precision_policy": policy, "cpu.bf16_flags": _bf16_flags_tag()})
            if sweep is not None and run_id is None:
                # The sweep is a tag, not a param: the trials of one sweep share it, so it is no
                # column to compare, and the UI filters on it (tags.sweep = '<name>').
                _name_trial(run.info.run_id, experiment_id, sweep, changes)
            # A trial of a Kubeflow sweep nests under the sweep's run (empty otherwise).
            mlflow.set_tags(parent_run_tags())
            _relative_path_tags(run.info.run_id)
            datasets = {
                "train": split_dataset("train", data.train, params.data.url),
                "val": split_dataset("val", data.val, params.data.url),
            }
            log_datasets(run.info.run_id, list(datasets.values()))
            log_data_checks(outputs.reports_dir / paths.DATA_CHECKS_FILE)
            if resume is not None and resume.run_id != run.info.run_id:
                # A new run continues the checkpoint: it gets the epochs done before, too.
                for row in resume.history:
                    _log_epoch_metrics(row)
            model, history = fit(
                data,
                params.model,
                params.train,
                checkpoint,
                run.info.run_id,
                resume,
                log_epoch=_log_epoch_metrics,
            )
            summary = model_summary(model)
            mlflow.log_text(summary, paths.MODEL_SUMMARY_FILE)
            # Named like the registered model (both cifar10-cnn by default), not MLflow's "model":
            # train does not read mlflow.registered_model_name, so renaming that retrains nothing.
            model_uri = log_served_model(model, data.classes, params.mlflow.experiment_name)
            # What `predict` compares its batches with to tell drift (pipeline/predict/drift.py).
            log_reference(data.train.x, model, data.val.x, data.classes)
            final = final_metrics(history, params.train.restore_best)
            _log_final_metrics(final, model_id(model_uri), datasets)
            _write_outputs(outputs, model, history, final | {RUN_ID_KEY: run.info.run_id}, summary)
            write_run_info(
                outputs.run_info,
                RunInfo(
                    run.info.run_id,
                    run.info.experiment_id,
                    model_uri,
                    shareable_uri(tracking_uri()),
                    data.classes,
                    file_md5(outputs.model),
                ),
            )
        checkpoint.remove()
    log.info("MLflow run %s finished; model at %s", run.info.run_id, outputs.model)
    return final


def logged_params(params: Params) -> dict[str, object]:
    """The params of the training run: what made its data and what it read itself.

    Not ``register.*`` nor the registered model name: evaluate reads those, and records them on
    the model version it registers.
    """
    logged = {
        key: value
        for key, value in flatten_params(params).items()
        if key.startswith(LOGGED_SECTIONS) or key in LOGGED_KEYS
    }
    # Of the architectures, only the one trained, key by key: model.reference.dense_units.
    for arch in architecture_names():
        del logged[f"model.{arch}"]
    chosen = params.model.selected.model_dump()
    logged |= {f"model.{params.model.arch}.{key}": value for key, value in chosen.items()}
    return logged


def _close_abandoned_run(run_id: str | None) -> None:
    """Mark KILLED the run of a discarded checkpoint: no training will ever finish it.

    It was left RUNNING by the killed training; without this it would stay so forever.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    if run_id is None:
        return
    client = mlflow.MlflowClient()
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "KILLED")
            log.warning("MLflow run %s of the discarded checkpoint marked KILLED", run_id)
    except MlflowException:
        pass  # deleted, or in another store: nothing of ours is left RUNNING here


def _name_trial(
    run_id: str, experiment_id: str, sweep: str, changes: dict[str, Any] | None
) -> None:
    """Rename a new sweep trial's run ``lr-grid 2: learning_rate=0.003`` (trial_names.py).

    A resumed run keeps the name it was given when it started.
    """
    import mlflow

    client = mlflow.MlflowClient()
    number = trial_number(client, experiment_id, sweep, run_id)
    client.update_run(run_id, name=trial_name(sweep, number, changes))


def _resumable_run(resume: ResumeState | None, experiment_id: str) -> str | None:
    """The checkpoint's MLflow run id if that run can be reopened, else None (a new run).

    A run deleted since, or missing from this store (reset, or another MLFLOW_TRACKING_URI),
    never blocks the training: it goes on from the checkpoint in a new run, saying so.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    if resume is None:
        return None
    try:
        run = mlflow.MlflowClient().get_run(resume.run_id)
    except MlflowException:
        # No URI in the message: it may hold a password.
        problem = "is not in this tracking store (reset, or MLFLOW_TRACKING_URI points elsewhere)"
    else:
        if run.info.lifecycle_stage != "active":
            problem = "was deleted"
        elif run.info.experiment_id != experiment_id:
            problem = f"belongs to another experiment (id {run.info.experiment_id})"
        else:
            return resume.run_id
    log.warning(
        "the checkpoint's MLflow run %s %s: continuing its %d epochs in a new run",
        *(resume.run_id, problem, resume.epochs_done),
    )
    return None


@contextlib.contextmanager
def _open_run(
    run_id: str | None,
    experiment_id: str,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[ActiveRun]:
    """``mlflow.start_run`` whose closing, when the body failed, cannot hide why it failed.

    The body may fail because the tracking server went away; marking the run FAILED then fails
    too, and that second error must not replace the first.
    """
    import mlflow

    run = mlflow.start_run(
        run_id=run_id,
        experiment_id=experiment_id,
        run_name=run_name,
        tags=tags,
        log_system_metrics=True,
    )
    try:
        yield run
    except BaseException:
        with contextlib.suppress(Exception):
            mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")


@contextlib.contextmanager
def _tracking_failures(uri: str, checkpoint: TrainingCheckpoint, epochs: int) -> Iterator[None]:
    """An MLflow failure mid-training (server gone, access refused) becomes one clear line.

    MLflow has already retried (MLFLOW_HTTP_REQUEST_MAX_RETRIES) by then. What was logged
    stays in the run, and the checkpoint lets a rerun resume into that same run.
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        state = checkpoint.load()
        where = (
            f"after epoch {state.epochs_done} of {epochs}; the epochs logged so far stay in run "
            f"{state.run_id} and rerunning the train stage resumes it"
            if state
            else "before the first epoch was checkpointed"
        )
        message = " ".join(str(exc).split())
        raise PipelineError(f"MLflow tracking at {uri} failed {where}: {message}") from None


def final_metrics(history: list[EpochRow], restore_best: bool) -> dict[str, float]:
    """Metrics of the epoch whose weights were kept, plus timing over the whole training."""
    kept = max(history, key=lambda row: row[BEST_MONITOR]) if restore_best else history[-1]
    # Names unlike metrics.json's: `dvc exp show` gives a name found in two files its path.
    return {
        "val_accuracy": kept["val_accuracy"],
        "val_loss": kept["val_loss"],
        "train_accuracy": kept["accuracy"],
        "train_loss": kept["loss"],
        "epoch": kept["epoch"],
        "train_seconds": sum(row["seconds"] for row in history),
        "images_per_s": sum(row["images_per_s"] for row in history) / len(history),
    }


def _relative_path_tags(run_id: str) -> None:
    """Rewrite tags that MLflow filled with this machine's paths (``mlflow.source.name`` is the
    script's absolute path, or the project's under ``mlflow run``) relative to the project."""
    import mlflow

    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    for key, value in tags.items():
        relative = relative_to_root(value, REPO_ROOT)
        if relative != value:
            mlflow.set_tag(key, relative)


def _bf16_flags_tag() -> str:
    return ",".join(cpu_bf16_flags()) or "none"


def _log_epoch_metrics(row: EpochRow) -> None:
    import mlflow

    metrics = {
        name: metric_names.logged_value(row[column])
        for column, name in metric_names.EPOCH.items()
        if column in row
    }
    mlflow.log_metrics(metrics, step=int(row["epoch"]))


def _log_final_metrics(
    final: dict[str, float], logged_model_id: str, datasets: dict[str, SplitDataset]
) -> None:
    """Log the final metrics, each linked to the logged model and the split it was measured on.

    The links are what the LoggedModel page shows as the datasets the model was trained on.
    """
    import mlflow

    for split, keys in FINAL_ON_SPLIT.items():
        mlflow.log_metrics(
            {metric_names.final(key): metric_names.logged_value(final[key]) for key in keys},
            model_id=logged_model_id,
            dataset=datasets[split].dataset,
        )


def _write_outputs(
    outputs: TrainOutputs,
    model: keras.Model,
    history: list[EpochRow],
    final: dict[str, float | str],
    summary: str,
) -> None:
    """The stage's files; a failed write (full disk) is one PipelineError, each file whole."""
    try:
        save_keras_atomically(model, outputs.model)
        write_history(outputs.reports_dir / paths.HISTORY_FILE, history)
        # The digits MLflow's final/* hold (metric_names.logged_value): one value in both stores,
        # and `dvc exp show` columns free of float32 noise.
        readable = {
            k: metric_names.logged_value(v) if isinstance(v, float) else v for k, v in final.items()
        }
        write_json(outputs.reports_dir / paths.TRAIN_METRICS_FILE, readable)
        write_text(outputs.reports_dir / paths.MODEL_SUMMARY_FILE, summary)
    except OSError as exc:
        raise PipelineError(
            f"cannot write the training outputs to {outputs.models_dir} and "
            f"{outputs.reports_dir}: {exc.strerror or exc}; the checkpoint is kept, so a rerun "
            "resumes"
        ) from None
