"""Which registered model ``predict`` uses, resolved once to a version and its training run.

``--model`` takes an alias (``@champion``, the default), a version number (``3``), a run id
(the training run: its registered version if it has one, else the model it logged) or a full
``models:/...`` / ``runs:/...`` URI. Whatever it was, the batch run records the version and the
training run, so it links back to the model it used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import PipelineError

RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class ResolvedModel:
    """A model to load: its URI, and (when known) its registered name, version and training run."""

    uri: str
    name: str | None
    version: str | None
    run_id: str | None

    def label(self) -> str:
        """How the model is named in messages and the report."""
        if self.version is not None:
            return f"{self.name} version {self.version}"
        return self.uri


@dataclass
class LoadedModel:
    """The Keras model inside a served model, and its class names (the output columns)."""

    keras_model: Any
    classes: list[str]


def resolve_model(spec: str, registered_name: str) -> ResolvedModel:
    """Resolve ``spec`` (see the module docstring) against the registry of the tracking store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    spec = spec.strip()
    try:
        if spec.startswith("@") or spec.isdigit():
            version = (
                client.get_model_version_by_alias(registered_name, spec[1:])
                if spec.startswith("@")
                else client.get_model_version(registered_name, spec)
            )
            return ResolvedModel(
                f"models:/{registered_name}/{version.version}",
                registered_name,
                str(version.version),
                version.run_id,
            )
        if RUN_ID.fullmatch(spec):
            return _model_of_run(client, spec)
        if spec.startswith(("models:/", "runs:/")):
            return _version_of_uri(client, spec)
    except MlflowException as exc:
        raise PipelineError(
            f"--model {spec}: not found in the tracking store ({_first_line(exc)}); "
            f"run `dvc repro` to train and register {registered_name}, or name a version"
        ) from None
    raise PipelineError(
        f"--model {spec}: expected @ALIAS, a version number, a run id or a models:/ or runs:/ URI"
    )


def _model_of_run(client: Any, run_id: str) -> ResolvedModel:
    versions = client.search_model_versions(f"run_id='{run_id}'")
    if versions:
        newest = max(versions, key=lambda version: int(version.version))
        return ResolvedModel(
            f"models:/{newest.name}/{newest.version}", newest.name, str(newest.version), run_id
        )
    import mlflow

    run = client.get_run(run_id)  # raises if there is no such run
    logged = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        output_format="list",
    )
    if not logged:
        raise PipelineError(f"--model {run_id}: that run logged no model")
    return ResolvedModel(f"models:/{logged[0].model_id}", None, None, run_id)


def _version_of_uri(client: Any, uri: str) -> ResolvedModel:
    match = re.fullmatch(r"models:/([^/@]+)(?:/([0-9]+)|@(.+))", uri)
    if match is None:
        return ResolvedModel(uri, None, None, None)
    name, number, alias = match.groups()
    version = (
        client.get_model_version(name, number)
        if number
        else client.get_model_version_by_alias(name, alias)
    )
    return ResolvedModel(
        f"models:/{name}/{version.version}", name, str(version.version), version.run_id
    )


def load_model(resolved: ResolvedModel) -> LoadedModel:
    """Load the served model of ``resolved``: its Keras model and class names."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        served = mlflow.pyfunc.load_model(resolved.uri)
    except (MlflowException, OSError) as exc:
        raise PipelineError(f"cannot load {resolved.label()}: {_first_line(exc)}") from None
    inner = served.unwrap_python_model()
    keras_model = getattr(inner, "model", None)
    classes = getattr(inner, "classes", None)
    if keras_model is None or not isinstance(classes, list):
        raise PipelineError(
            f"{resolved.label()} is not an image classifier logged by this project's train stage"
        )
    if keras_model.output_shape[-1] != len(classes):
        raise PipelineError(
            f"{resolved.label()}: {keras_model.output_shape[-1]} outputs but {len(classes)} "
            "class names"
        )
    return LoadedModel(keras_model, classes)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
