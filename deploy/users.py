"""Give a teammate (or CI) an account on the team server, and EDIT on this project: idempotent.

    export MLFLOW_TRACKING_USERNAME=admin
    export MLFLOW_TRACKING_PASSWORD="$(cat .server/admin-password)"
    python -m deploy.users http://127.0.0.1:5000 ci --edit     # asks for ci's password

Creates the account unless it exists (its password is then left alone), and with ``--edit``
gives it EDIT on the experiment and the registered model of params.yaml, creating either one
first when nobody has trained yet: on a fresh server there is nothing to grant on. Rerunning it
changes nothing. The new password comes from ``NEW_USER_PASSWORD`` or a prompt, never from the
command line, where other users of the machine could read it.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import TYPE_CHECKING

from pipeline.core.errors import PipelineError
from pipeline.core.params import load_params
from pipeline.core.paths import REPO_ROOT
from pipeline.core.redact import redact

if TYPE_CHECKING:
    from mlflow.server.auth.client import AuthServiceClient

MIN_PASSWORD = 12  # MLflow's basic-auth app refuses shorter passwords


def ensure_user(auth: AuthServiceClient, username: str, password: str | None) -> str:
    """Create ``username`` unless it exists; return what was done."""
    from mlflow.exceptions import MlflowException

    try:
        auth.get_user(username)
        return f"user {username} exists (password unchanged)"
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    if password is None:
        password = os.environ.get("NEW_USER_PASSWORD") or getpass.getpass(
            f"password for {username}: "
        )
    if len(password) < MIN_PASSWORD:
        raise PipelineError(f"the password of {username} needs {MIN_PASSWORD} characters at least")
    auth.create_user(username, password)
    return f"created user {username}"


def ensure_permission(
    auth: AuthServiceClient, username: str, kind: str, resource_id: str, permission: str
) -> None:
    """Give ``username`` exactly ``permission`` on one resource, whatever it had before."""
    from mlflow.exceptions import MlflowException

    # What applies now, granted or by the server's default permission.
    if auth.get_user_permission(username, kind, resource_id).permission == permission:
        return
    try:
        auth.grant_user_permission(username, kind, resource_id, permission)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        # Another permission was granted before: replace it.
        auth.revoke_user_permission(username, kind, resource_id)
        auth.grant_user_permission(username, kind, resource_id, permission)


def grant_edit(url: str, username: str, experiment: str, model: str) -> list[str]:
    """EDIT on ``experiment`` and ``model`` for ``username``, creating them if they are missing."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    from pipeline.tracking.runs import use_experiment

    mlflow.set_tracking_uri(url)
    experiment_id = use_experiment(experiment)
    client = mlflow.MlflowClient(url)
    try:
        client.get_registered_model(model)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(model)
    auth = get_app_client("basic-auth", tracking_uri=url)
    ensure_permission(auth, username, "experiment", experiment_id, "EDIT")
    ensure_permission(auth, username, "registered_model", model, "EDIT")
    return [
        f"{username} may EDIT experiment {experiment} (id {experiment_id})",
        f"{username} may EDIT registered model {model}",
    ]


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m deploy.users``."""
    params = load_params(REPO_ROOT / "params.yaml")
    parser = argparse.ArgumentParser(
        prog="python -m deploy.users",
        description=__doc__.split("\n\n")[0],
        # Said here, not only in the code: without a terminal there is no prompt to ask.
        epilog="The new user's password comes from NEW_USER_PASSWORD when set (needed without a "
        "terminal, e.g. in a script or CI), else from a prompt; the admin's from "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.",
    )
    parser.add_argument("url", help="the team server, e.g. http://127.0.0.1:5000")
    parser.add_argument("username")
    parser.add_argument(
        "--edit", action="store_true", help="EDIT on the experiment and the registered model"
    )
    parser.add_argument("--experiment", default=params.mlflow.experiment_name)
    parser.add_argument("--model", default=params.mlflow.registered_model_name)
    args = parser.parse_args(argv)
    if not os.environ.get("MLFLOW_TRACKING_USERNAME"):
        sys.exit("error: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an admin's")
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    try:
        auth = get_app_client("basic-auth", tracking_uri=args.url)
        done = [ensure_user(auth, args.username, None)]
        if args.edit:
            done += grant_edit(args.url, args.username, args.experiment, args.model)
    except (MlflowException, PipelineError, OSError) as exc:
        message = str(getattr(exc, "message", exc)).splitlines()[0]
        sys.exit(f"error: {redact(message)}")
    print("\n".join(done))


if __name__ == "__main__":
    main()
