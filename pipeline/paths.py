"""Default paths of the stage inputs and outputs: the same ones ``dvc.yaml`` declares.

Stages take these as the defaults of their path options, so ``dvc repro`` calls them with no
options while MLproject and Kubeflow pass their own paths.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

RAW_ARCHIVE = Path("data/raw/cifar-10-binary.tar.gz")
PREPARED_DIR = Path("data/prepared")
MODELS_DIR = Path("models")
REPORTS_DIR = Path("reports")
# Training checkpoints live outside every DVC output: DVC deletes a stage's outputs before it
# reruns the stage, and a resumable checkpoint must survive that.
CHECKPOINTS_DIR = Path(".checkpoints")
