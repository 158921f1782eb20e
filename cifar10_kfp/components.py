"""The Kubeflow components, written as KFP v2 lightweight Python components.

KFP copies each function's source into its pod, so a body only imports what it needs there and
hands over to :mod:`cifar10_kfp.runtime` or :mod:`cifar10_kfp.sweep_runtime`, which call the
stage's own ``run``. A ``str`` parameter named after a params.yaml section (``train``) is that
section as JSON text (:mod:`cifar10_kfp.sections`); each stage takes the sections its dvc.yaml
stage lists (a test checks the two agree). The artifacts here are the one list of what each
component reads and writes; the file names inside them come from ``pipeline/core/paths.py``.
:mod:`cifar10_kfp.pipeline` turns these functions into components (``dsl.component``) with the
images chosen at compile time.
"""

# No `from __future__ import annotations` here: KFP reads the annotations as types.

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output


def download(data: str, archive: Output[Dataset]):
    """Stage download: data.url -> the CIFAR-10 archive, its md5 checked."""
    from cifar10_kfp.runtime import download_step

    download_step(archive, data=data)


def preprocess(
    archive: Input[Dataset],
    preprocess: str,
    checks: str,
    prepared: Output[Dataset],
    data_reports: Output[Artifact],
):
    """Stage preprocess: the archive -> train/val/test.npz and classes.json."""
    from cifar10_kfp.runtime import preprocess_step

    preprocess_step(archive, prepared, data_reports, preprocess=preprocess, checks=checks)


def train(
    prepared: Input[Dataset],
    archive: Input[Dataset],
    model: str,
    train: str,
    mlflow: str,
    device: str,
    keras_model: Output[Model],
    train_reports: Output[Artifact],
    train_metrics: Output[Metrics],
):
    """Stage train: the net model.arch names, one MLflow run; model.keras and run.json."""
    from cifar10_kfp.runtime import train_step

    train_step(
        prepared,
        archive,
        keras_model,
        train_reports,
        train_metrics,
        device,
        model=model,
        train=train,
        mlflow=mlflow,
    )


def train_trial(
    prepared: Input[Dataset],
    archive: Input[Dataset],
    sweep_run: Input[Artifact],
    sweep_trial: str,
    model: str,
    train: str,
    mlflow: str,
    device: str,
    keras_model: Output[Model],
    train_reports: Output[Artifact],
    train_metrics: Output[Metrics],
):
    """One trial of a sweep: stage train with the trial's params, nested under the sweep's run."""
    from cifar10_kfp.runtime import train_step

    train_step(
        prepared,
        archive,
        keras_model,
        train_reports,
        train_metrics,
        device,
        trial=sweep_trial,
        sweep_run=sweep_run,
        model=model,
        train=train,
        mlflow=mlflow,
    )


def evaluate(
    prepared: Input[Dataset],
    keras_model: Input[Model],
    train_reports: Input[Artifact],
    mlflow: str,
    evaluate: str,
    register: str,
    test_metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    report: Output[HTML],
    evaluation: Output[Artifact],
):
    """Stage evaluate: test metrics, confusion matrix, report; registers the model."""
    from cifar10_kfp.runtime import evaluate_step

    evaluate_step(
        prepared,
        keras_model,
        train_reports,
        test_metrics,
        confusion,
        report,
        evaluation,
        mlflow=mlflow,
        evaluate=evaluate,
        register=register,
    )


def start_sweep(trials: list, mlflow: str, sweep_run: Output[Artifact]):
    """Open the sweep's parent MLflow run (named mlflow.sweep, or after the clock)."""
    from cifar10_kfp.sweep_runtime import start_sweep_step

    start_sweep_step(trials, mlflow, sweep_run)


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
