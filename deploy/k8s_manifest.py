"""The champion as a Kubernetes Deployment and Service, generated from params and the registry.

    python -m deploy.k8s_manifest [--version N] [--image IMAGE] [--out deploy/k8s/serve.yaml]

The model name comes from params.yaml (``mlflow.registered_model_name``); the version is the
``champion`` alias's in ``MLFLOW_TRACKING_URI`` (else the project's ``mlflow.db``) unless
``--version`` names one; the image defaults to ``cifar10-serve:v<version>``, the tag the serving
image is built with (docs/serving.md). The output is YAML (two documents), written beside the
target and renamed into place, or to stdout without ``--out``.

Why a Deployment and a Service rather than a KServe InferenceService: KServe's MLflow runtime
runs on MLServer, which MLflow deprecated and nobody maintains; a KServe custom predictor would
run this same container but needs KServe (and Knative or its raw mode) on the cluster. A
Deployment plus a Service runs on any cluster, and the container is the same either way.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

APP = "cifar10-serve"
PORT = 8080  # the serving image's port (docker/serve.Dockerfile)
MAX_IMAGES = 1024
# Sized from the serving benchmark's 2-core machine (docs/benchmarks.md, "Serving"): two
# workers, each holding the Keras model and TensorFlow (~1 GB resident).
RESOURCES = {
    "requests": {"cpu": "2", "memory": "2Gi"},
    "limits": {"cpu": "2", "memory": "3Gi"},
}


def manifests(model: str, version: str, image: str, replicas: int = 1) -> list[dict[str, Any]]:
    """The Deployment and the Service of the champion ``model`` version ``version``."""
    labels = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": "predictor"}
    # Label values may hold only [A-Za-z0-9._-]: the model name is one, the version a number.
    model_labels = {"mlflow.model": model, "mlflow.model-version": version}
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10}
    container = {
        "name": "server",
        "image": image,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": [{"name": "CIFAR10_SERVE_MAX_IMAGES", "value": str(MAX_IMAGES)}],
        # Loading TensorFlow and the model takes tens of seconds: ready only once /health is.
        "readinessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 3},
        "startupProbe": {**probe, "failureThreshold": 30},
        "livenessProbe": {**probe, "failureThreshold": 6},
        "resources": RESOURCES,
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP, "labels": {**labels, **model_labels}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, **model_labels}},
                "spec": {"containers": [container]},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": APP, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [deployment, service]


def champion_version(model: str) -> str:
    """The version the ``champion`` alias points at in the tracking store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipeline.tracking.runs import credentials_to_environment, tracking_uri

    credentials_to_environment()
    mlflow.set_tracking_uri(tracking_uri())
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(model, "champion").version)
    except MlflowException as error:
        raise SystemExit(f"error: no champion of {model} to deploy: {error.message}") from None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.k8s_manifest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", help="model version (default: the champion's)")
    parser.add_argument("--image", help="serving image (default: cifar10-serve:v<version>)")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--out", type=Path, help="YAML file to write (default: stdout)")
    args = parser.parse_args(argv)
    if args.replicas < 1 or (args.version is not None and not args.version.isdigit()):
        parser.error("--replicas must be at least 1 and --version a version number")
    import yaml

    from pipeline.core.atomic import write_text
    from pipeline.core.params import load_params

    model = load_params().mlflow.registered_model_name
    version = args.version or champion_version(model)
    image = args.image or f"{APP}:v{version}"
    text = yaml.safe_dump_all(manifests(model, version, image, args.replicas), sort_keys=False)
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_text(args.out, text)
        print(f"wrote {args.out} ({model} v{version}, image {image})", file=sys.stderr)


if __name__ == "__main__":
    main()
