"""Where MLflow runs go, and how a stage opens (or reopens) the run it logs to.

Default store: ``sqlite:///<workspace>/mlflow.db`` with artifacts in ``<workspace>/mlruns``, the
same whatever the working directory, and the user's workspace even when DVC runs the stages in a
temporary copy (see ``paths.workspace_root``). ``MLFLOW_TRACKING_URI`` overrides it.

A ``user:password@`` in an http(s) tracking URI never reaches MLflow: :func:`prepare_tracking`
moves it into ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (which MLflow's client
reads for basic auth) and leaves the bare URI in ``MLFLOW_TRACKING_URI``, because MLflow prints
the URI it was given (``View run ... at: http://...``) on every run.
"""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.locks import exclusive_lock
from pipeline.core.paths import workspace_root
from pipeline.core.redact import add_secret, redact, split_userinfo

USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"


def default_db() -> Path:
    """The SQLite file of the default store, in the user's workspace."""
    return workspace_root() / "mlflow.db"


def default_artifacts() -> Path:
    """The artifact folder of the default store, beside its SQLite file."""
    return workspace_root() / "mlruns"


# The MLflow run a training opens nested under (the Kubeflow sweep's parent run, one per trial
# pod): cifar10_kfp.runtime sets it, the train stage reads it through parent_run_tags.
PARENT_RUN_ENV = "SWEEP_PARENT_RUN_ID"
# The tag by which MLflow (and its UI) nests a run under another.
PARENT_RUN_TAG = "mlflow.parentRunId"
# The tag the train stage puts on its run when mlflow.sweep is set: a sweep's trials share it
# (pipeline.compare.sweeps reads them back).
SWEEP_TAG = "sweep"
# A sweep's parent run (the Kubeflow sweep's) says so, so that it is left out of the trials even
# before its first trial is nested under it (the sweep table, a trial's number).
ROLE_TAG = "sweep.role"
PARENT_ROLE = "parent"


def parent_run_tags() -> dict[str, str]:
    """``{"mlflow.parentRunId": <id>}`` when ``SWEEP_PARENT_RUN_ID`` names a run, else empty."""
    parent = os.environ.get(PARENT_RUN_ENV, "").strip()
    return {PARENT_RUN_TAG: parent} if parent else {}


# Without it MLflow 3 opens an experiment on its GenAI overview (traces, tokens), not the runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the workspace's own SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{default_db()}"


def shareable_uri(uri: str) -> str:
    """``uri`` as it may appear in a shared output: no password, the default store relative.

    The default store becomes ``sqlite:///mlflow.db`` (relative to the project, as MLflow reads
    it from the project folder), so ``models/run.json`` is the same on every machine.
    """
    if uri == f"sqlite:///{default_db()}":
        return "sqlite:///mlflow.db"
    return redact(uri)


def prepare_tracking() -> str:
    """Point MLflow at the tracking store and make sure it is usable; return its URI.

    Called once by a stage before any work, so a dead server fails in seconds, not after training.
    """
    import mlflow

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        _create_or_upgrade_sqlite(uri)
    elif uri.startswith(("http://", "https://")):
        _check_server(uri)  # names the URI as given (password masked) if it fails
        uri = credentials_to_environment()
    mlflow.set_tracking_uri(uri)
    return uri


def credentials_to_environment() -> str:
    """Move the ``user:password@`` of an http(s) ``MLFLOW_TRACKING_URI`` into
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``; return the tracking URI left.

    This process and its children (dvc's stages) then see the bare URI, and MLflow's client
    sends the credentials as basic auth. Credentials already in those variables win, as they do
    in MLflow's client. The password is registered with ``redact`` either way. Idempotent.
    """
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return uri
    add_secret(os.environ.get(PASSWORD_ENV))
    bare, user, password = split_userinfo(uri)
    if user is None:
        return uri
    add_secret(password)  # also percent-encoded, as the URI may have written it
    if not (os.environ.get(USERNAME_ENV) and os.environ.get(PASSWORD_ENV)):
        os.environ[USERNAME_ENV] = user
        os.environ[PASSWORD_ENV] = password or ""
    os.environ["MLFLOW_TRACKING_URI"] = bare
    return bare


def use_experiment(name: str) -> str:
    """Return the id of experiment ``name``, creating it with artifacts under the repo if needed."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.tags.get(EXPERIMENT_KIND_TAG) is None:
            client.set_experiment_tag(
                experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
            )
        return experiment.experiment_id
    location = None
    if tracking_uri() == f"sqlite:///{default_db()}":
        # MLflow would otherwise put artifacts in ./mlruns of whatever the cwd happens to be.
        location = default_artifacts().as_uri()
    try:
        return client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    except Exception:
        # Another process created it between our lookup and create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _create_or_upgrade_sqlite(uri: str) -> None:
    """Create the schema (or run migrations) under a file lock.

    Two processes creating the same fresh SQLite store at once corrupt it, so the first one
    does it while the others wait on the lock.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db_path = Path(uri.removeprefix("sqlite:///"))
    db_path.parent.mkdir(parents=True, exist_ok=True)
    from sqlalchemy.exc import SQLAlchemyError

    lock = db_path.with_name(db_path.name + ".lock")
    # Creating or migrating the schema takes seconds; a holder for minutes is stuck.
    with exclusive_lock(lock, f"the MLflow store {db_path}", wait_s=300):
        try:
            store = SqlAlchemyStore(uri, default_artifacts().as_uri())
        except SQLAlchemyError as exc:
            # e.g. "file is not a database": overwritten, truncated, or not SQLite at all.
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise PipelineError(
                f"the MLflow store {db_path} is unreadable ({reason}): move it aside to start a "
                "new store, or set MLFLOW_TRACKING_URI to another one"
            ) from None
        store.engine.dispose()


def _check_server(uri: str, timeout_s: float = 5.0) -> None:
    request = _health_request(uri)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read(64)
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PipelineError(
            f"MLflow tracking server {redact(uri)} is unreachable ({redact(str(reason))}); "
            "start it, or unset MLFLOW_TRACKING_URI to use the local sqlite store"
        ) from None


def _health_request(uri: str) -> urllib.request.Request:
    """GET <uri>/health, with the URI's ``user:password@`` (or else MLflow's credential variables,
    as MLflow's client sends them) in a basic-auth header: urllib would take it for part of the
    host name."""
    # split_userinfo, not urlsplit: a password may hold a raw "/", "#" or "?".
    bare, user, password = split_userinfo(uri)
    parts = urllib.parse.urlsplit(bare.rstrip("/") + "/health")
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 literal
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))
    if user is None and os.environ.get(USERNAME_ENV):
        user, password = os.environ[USERNAME_ENV], os.environ.get(PASSWORD_ENV, "")
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    return request
