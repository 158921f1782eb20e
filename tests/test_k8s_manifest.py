"""The generated Kubernetes manifest, validated against the Kubernetes API's own models.

The ``kubernetes`` Python client (locked, through kfp) ships a typed model per API object,
generated from the API's OpenAPI schema: deserialising into them checks types and required
fields, and serialising back drops any field the schema does not have, so a round trip that
changes the manifest names a misspelt or unknown field. No cluster is needed.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes.client import ApiClient

from deploy.k8s_manifest import APP, PORT, manifests
from tests.conftest import QUIET_ENV, REPO_ROOT

KINDS = {"Deployment": "V1Deployment", "Service": "V1Service"}


def validate(manifest: dict) -> object:
    """``manifest`` as the client's typed object; fails on a field the API does not know."""
    client = ApiClient()
    typed = client._ApiClient__deserialize(copy.deepcopy(manifest), KINDS[manifest["kind"]])
    assert client.sanitize_for_serialization(typed) == manifest
    return typed


def test_the_manifest_is_valid_kubernetes_and_follows_the_champion() -> None:
    deployment, service = manifests("cifar10-cnn", "7", "cifar10-serve:v7")
    typed = validate(deployment)
    validate(service)
    (container,) = typed.spec.template.spec.containers
    assert container.image == "cifar10-serve:v7"
    assert container.readiness_probe.http_get.path == "/health"
    assert container.ports[0].container_port == PORT
    assert container.resources.requests["cpu"] and container.resources.limits["memory"]
    assert container.security_context.run_as_non_root is True
    assert typed.spec.template.metadata.labels["mlflow.model-version"] == "7"
    # The Service reaches the pods: its selector is the Deployment's.
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_check_catches_a_misspelt_field() -> None:
    deployment = manifests("cifar10-cnn", "7", "img")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(AssertionError):
        validate(deployment)


def test_the_check_catches_a_missing_required_field() -> None:
    deployment = manifests("cifar10-cnn", "7", "img")[0]
    del deployment["spec"]["selector"]
    with pytest.raises(ValueError, match="selector"):
        validate(deployment)


def test_one_command_writes_the_manifest(tmp_path: Path) -> None:
    out = tmp_path / "serve.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "deploy.k8s_manifest", "--version", "3", "--out", str(out)],
        cwd=REPO_ROOT, env=QUIET_ENV | {"PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    deployment, service = yaml.safe_load_all(out.read_text())
    assert validate(deployment).spec.template.spec.containers[0].image == f"{APP}:v3"
    validate(service)
    assert not list(tmp_path.glob(".*tmp*"))
