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
