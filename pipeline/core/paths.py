"""Default paths of the stage inputs and outputs: the same ones ``dvc.yaml`` declares.

Stages take these as the defaults of their path options, so ``dvc repro`` calls them with no
options while MLproject and Kubeflow pass their own paths.
"""

import os
from pathlib import Path

# The code's own checkout: under `dvc exp run --temp` or a queued experiment, a temporary copy.
REPO_ROOT = Path(__file__).resolve().parents[2]

RAW_ARCHIVE = Path("data/raw/cifar-10-binary.tar.gz")
PREPARED_DIR = Path("data/prepared")
MODELS_DIR = Path("models")
REPORTS_DIR = Path("reports")
# Training checkpoints live outside every DVC output: DVC deletes a stage's outputs before it
# reruns the stage, and a resumable checkpoint must survive that.
CHECKPOINTS_DIR = Path(".checkpoints")

# The names of the files the stages write, for every module that writes or reads them (dvc.yaml
# lists the same ones: tests/test_paths.py checks). The prepared splits' names belong to
# pipeline/artifacts/prepared.py, which owns that format.
CLASSES_FILE = "classes.json"
DATA_SUMMARY_FILE = "data_summary.json"
DATA_PREVIEW_FILE = "data_preview.png"
# The data report (pipeline/data/checks.py owns its format), a DVC metrics file.
DATA_CHECKS_FILE = "data_checks.json"
MODEL_FILE = "model.keras"
RUN_INFO_FILE = "run.json"
HISTORY_FILE = "history.csv"
TRAIN_METRICS_FILE = "train_metrics.json"
MODEL_SUMMARY_FILE = "model_summary.txt"
# The evaluate stage's outputs in reports/, by role.
EVALUATE_FILES = {
    "metrics": "metrics.json",
    "per_class": "per_class.csv",
    "predictions": "predictions.csv",
    "confusion_csv": "confusion_matrix.csv",
    "confusion": "confusion_matrix.png",
    "curves": "training_curves.png",
    "misclassified": "misclassified.png",
    "registry": "registry.json",
    "markdown": "report.md",
    "html": "report.html",
}


def workspace_root() -> Path:
    """The user's project folder, which outlives any one run: home of the default MLflow store.

    ``dvc exp run --temp`` and queued experiments (``dvc queue start``) run the stages in a copy
    under ``<workspace>/.dvc/tmp/exps/`` that DVC deletes afterwards. DVC 3 passes every stage
    command ``DVC_ROOT``: the repo root, and for such a copy the workspace it came from. Without
    it (a stage run by hand) the workspace is this checkout, or the one a temp copy sits in.
    """
    dvc_root = os.environ.get("DVC_ROOT")
    if dvc_root and (Path(dvc_root) / "dvc.yaml").is_file():
        return Path(dvc_root).resolve()
    parts = REPO_ROOT.parts
    for i in range(len(parts) - 3, 0, -1):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return REPO_ROOT
