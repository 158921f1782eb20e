"""Where MLflow runs go, and how a stage opens (or reopens) the run it logs to.

Default store: ``sqlite:///<repo root>/mlflow.db`` with artifacts in ``<repo root>/mlruns``, the
same whatever the working directory. ``MLFLOW_TRACKING_URI`` overrides it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.paths import REPO_ROOT

DEFAULT_DB = REPO_ROOT / "mlflow.db"
DEFAULT_ARTIFACTS = REPO_ROOT / "mlruns"
# Without it MLflow 3 opens an experiment on its GenAI overview (traces, tokens), not the runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the repo's own SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"


def prepare_tracking() -> str:
    """Point MLflow at the tracking store and make sure it is usable; return its URI.

    Called once by a stage before any work, so a dead server fails in seconds, not after training.
    """
    import mlflow

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        _create_or_upgrade_sqlite(uri)
    elif uri.startswith(("http://", "https://")):
        _check_server(uri)
    mlflow.set_tracking_uri(uri)
    return uri


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
    if tracking_uri() == f"sqlite:///{DEFAULT_DB}":
        # MLflow would otherwise put artifacts in ./mlruns of whatever the cwd happens to be.
        location = DEFAULT_ARTIFACTS.as_uri()
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
    with _file_lock(db_path.with_name(db_path.name + ".lock")):
        store = SqlAlchemyStore(uri, DEFAULT_ARTIFACTS.as_uri())
        store.engine.dispose()


def _check_server(uri: str, timeout_s: float = 5.0) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            response.read(64)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PipelineError(
            f"MLflow tracking server {uri} is unreachable ({reason}); start it, or unset "
            "MLFLOW_TRACKING_URI to use the local sqlite store"
        ) from None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
