"""Build the champion's serving image: ``cifar10-serve:v<version>`` (docker/serve.Dockerfile).

    python -m deploy.serve_image [--version N] [--pipeline-image cifar10-pipeline] [--docker docker]

Downloads the model version (default: the ``champion`` alias's in ``MLFLOW_TRACKING_URI``, else
the project's ``mlflow.db``) into a temporary folder, the build's only context, and builds FROM
the pipeline image (``docker build -f docker/Dockerfile -t cifar10-pipeline .``) with the model
name and version as labels. Prints the tag.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from deploy.k8s_manifest import APP, champion_version

DOCKERFILE = Path(__file__).resolve().parent.parent / "docker" / "serve.Dockerfile"


def build(model: str, version: str, pipeline_image: str, docker: str, tag: str) -> None:
    """Download ``model`` version ``version`` and build ``tag`` from it."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="serve-image-") as folder:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model}/{version}", dst_path=folder
        )
        command = [
            docker, "build", "--file", str(DOCKERFILE),
            "--build-arg", f"PIPELINE_IMAGE={pipeline_image}",
            "--build-arg", f"MODEL_NAME={model}", "--build-arg", f"MODEL_VERSION={version}",
            "--tag", tag, local,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"error: docker build of {tag} failed:\n{result.stderr[-3000:]}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.serve_image",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", help="model version (default: the champion's)")
    parser.add_argument("--pipeline-image", default="cifar10-pipeline")
    parser.add_argument("--docker", default="docker", help="the Docker CLI")
    parser.add_argument("--tag", help=f"default: {APP}:v<version>")
    args = parser.parse_args(argv)
    if args.version is not None and not args.version.isdigit():
        parser.error("--version must be a version number")
    from pipeline.core.params import load_params

    model = load_params().mlflow.registered_model_name
    version = args.version or champion_version(model)
    tag = args.tag or f"{APP}:v{version}"
    build(model, version, args.pipeline_image, args.docker, tag)
    print(tag)
    print(f"built {tag} from {model} v{version}", file=sys.stderr)


if __name__ == "__main__":
    main()
