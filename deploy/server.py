"""``make server``: the team's MLflow tracking server on PostgreSQL, with basic auth.

Reads its settings from the environment (the names ``mlflow server`` itself reads where it has
one), upgrades the database schema when it is behind, and then runs ``mlflow server`` with the
basic-auth app, proxied artifacts and the backend store, in the foreground:

=================================  ============================================================
``MLFLOW_BACKEND_STORE_URI``       required: ``postgresql+psycopg://USER@HOST:PORT/DB``
``PGPASSWORD``                     the database password (keeps it out of URIs and ``ps``)
``MLFLOW_AUTH_DATABASE_URI``       users and permissions; default: database ``<DB>_auth``
                                   on the same server
``MLFLOW_ARTIFACTS_DESTINATION``   where artifacts land (``s3://bucket/path``, a folder);
                                   default ``SERVER_DIR/artifacts``
``MLFLOW_AUTH_ADMIN_PASSWORD``     admin password for the first start; default: generated
                                   once into ``SERVER_DIR/admin-password`` (mode 600)
``MLFLOW_FLASK_SERVER_SECRET_KEY`` signs the UI's sessions; default: generated once
``HOST`` / ``PORT`` / ``WORKERS``  bind address (127.0.0.1), port (5000), worker processes (2)
``ALLOWED_HOSTS``                  Host headers to accept when clients use a DNS name
``DEFAULT_PERMISSION``             what a signed-in user may do where nothing was granted
                                   (READ; NO_PERMISSIONS keeps users out of others' work)
``AUTH_CACHE_TTL_SECONDS``         how long a worker trusts a checked password (60; 0: never)
``DATABASE_WAIT_SECONDS``          how long to wait for the database to answer (30)
``SERVER_DIR``                     generated secrets and the auth config (``.server``)
=================================  ============================================================

No password is ever printed: URIs are shown with ``***`` in place of one.
"""

from __future__ import annotations

import configparser
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ADMIN_USERNAME = "admin"
PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
# Older MLflow releases shipped this admin password in their basic_auth.ini: never accept it.
LEGACY_DEFAULT_PASSWORD = "password1234"
MIN_PASSWORD_LENGTH = 12  # what MLflow's auth store demands
LOOPBACK_HOSTS = ("localhost", "::1", "[::1]")


class ServerConfigError(Exception):
    """A setting is missing or wrong; the message names it."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``mlflow server`` is started with."""

    backend_store_uri: str
    auth_database_uri: str
    artifacts_destination: str
    host: str
    port: int
    workers: int
    allowed_hosts: str | None
    default_permission: str
    auth_cache_ttl_s: int
    database_wait_s: float
    server_dir: Path


def mask_uri(uri: str) -> str:
    """``uri`` with the password of its ``user:password@`` part replaced by ``***``."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(uri).render_as_string(hide_password=True)
    except Exception:
        return uri.split("://", 1)[0] + "://***" if "@" in uri else uri


def auth_database_default(backend_store_uri: str) -> str:
    """The backend store's URI with database ``<name>_auth``."""
    from sqlalchemy.engine import make_url

    url = make_url(backend_store_uri)
    return url.set(database=f"{url.database}_auth").render_as_string(hide_password=False)


def read_config(env: dict[str, str]) -> ServerConfig:
    """The server's settings from ``env``; ServerConfigError names the first bad one."""
    backend = env.get("MLFLOW_BACKEND_STORE_URI", "")
    if not backend.startswith("postgresql"):
        raise ServerConfigError(
            "MLFLOW_BACKEND_STORE_URI must name the PostgreSQL database, e.g. "
            "postgresql+psycopg://mlflow@127.0.0.1:5432/mlflow (password in PGPASSWORD)"
            + (f"; got {mask_uri(backend)}" if backend else "")
        )
    server_dir = Path(env.get("SERVER_DIR") or REPO_ROOT / ".server").resolve()
    artifacts = env.get("MLFLOW_ARTIFACTS_DESTINATION") or (server_dir / "artifacts").as_uri()
    permission = env.get("DEFAULT_PERMISSION", "READ").upper()
    if permission not in PERMISSIONS:
        raise ServerConfigError(f"DEFAULT_PERMISSION must be one of {', '.join(PERMISSIONS)}")
    try:
        port, workers = int(env.get("PORT", "5000")), int(env.get("WORKERS", "2"))
        auth_cache_ttl_s = int(env.get("AUTH_CACHE_TTL_SECONDS", "60"))
        database_wait_s = int(env.get("DATABASE_WAIT_SECONDS", "30"))
    except ValueError:
        raise ServerConfigError(
            "PORT, WORKERS, AUTH_CACHE_TTL_SECONDS and DATABASE_WAIT_SECONDS must be whole numbers"
        ) from None
    return ServerConfig(
        backend_store_uri=backend,
        auth_database_uri=env.get("MLFLOW_AUTH_DATABASE_URI") or auth_database_default(backend),
        artifacts_destination=artifacts,
        host=env.get("HOST") or "127.0.0.1",
        port=port,
        workers=workers,
        allowed_hosts=env.get("ALLOWED_HOSTS") or None,
        default_permission=permission,
        auth_cache_ttl_s=auth_cache_ttl_s,
        database_wait_s=database_wait_s,
        server_dir=server_dir,
    )


def secret(env: dict[str, str], name: str, path: Path) -> str:
    """``env[name]`` if set, else the secret stored in ``path``, generated there on first use."""
    if env.get(name):
        return env[name]
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(24)
    # Created with mode 600 from the start: never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def check_admin_password(password: str) -> None:
    """Refuse a password MLflow would refuse, or one the whole internet knows."""
    if password == LEGACY_DEFAULT_PASSWORD:
        raise ServerConfigError(
            "MLFLOW_AUTH_ADMIN_PASSWORD is the well-known default of older MLflow releases; "
            "choose another"
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ServerConfigError(
            f"MLFLOW_AUTH_ADMIN_PASSWORD must be at least {MIN_PASSWORD_LENGTH} characters"
        )


def write_auth_config(config: ServerConfig) -> Path:
    """The basic-auth app's ini (no passwords in it; mode 600 as it names the databases)."""
    parser = configparser.ConfigParser()
    parser["mlflow"] = {
        "default_permission": config.default_permission,
        "database_uri": config.auth_database_uri,
        "admin_username": ADMIN_USERNAME,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        # Each request checks a PBKDF2 password hash; a training logs every epoch, so remember
        # a good password for a while (a changed password reaches other workers after this).
        "auth_cache_ttl_seconds": str(config.auth_cache_ttl_s),
    }
    path = config.server_dir / "basic_auth.ini"
    config.server_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        parser.write(handle)
    os.replace(partial, path)
    return path


def schema_needs_upgrade(uri: str, wait_s: float) -> bool:
    """Whether the tracking schema is missing or behind this MLflow's newest revision.

    Waits up to ``wait_s`` for the database to accept connections (it may be starting too).
    """
    import sqlalchemy
    from mlflow.store.db import utils

    engine = utils.create_sqlalchemy_engine(uri)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                if utils._is_empty_database(engine):
                    return True
                return utils._get_schema_version(engine) != utils._get_latest_schema_revision()
            except sqlalchemy.exc.OperationalError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1)
    finally:
        engine.dispose()


def ensure_bucket(destination: str) -> None:
    """Create the bucket of an ``s3://`` artifacts destination if it is missing (MinIO starts
    empty). The endpoint and keys come from MLFLOW_S3_ENDPOINT_URL and AWS_* as for MLflow."""
    if not destination.startswith("s3://"):
        return
    import boto3
    from botocore.exceptions import ClientError

    bucket = destination.removeprefix("s3://").split("/", 1)[0]
    s3 = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            raise
        s3.create_bucket(Bucket=bucket)
        print(f"created bucket {bucket}", flush=True)


def server_command(config: ServerConfig) -> list[str]:
    """``mlflow server ...``; the store URIs travel in the environment, not in ``ps``."""
    command = [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--app-name", "basic-auth",
        "--host", config.host, "--port", str(config.port), "--workers", str(config.workers),
        "--serve-artifacts",
        # uvicorn restarts a worker that misses a 5 s health ping; on a busy host that kills
        # healthy workers mid-request, so give them longer.
        "--uvicorn-opts", "--timeout-worker-healthcheck 60",
    ]  # fmt: skip
    if config.allowed_hosts:
        command += ["--allowed-hosts", config.allowed_hosts]
    return command


def admin_password(config: ServerConfig, env: dict[str, str]) -> str:
    """The admin's password: the one the auth database knows, never a new one it would ignore.

    MLflow creates the admin user once, on the first start, with the password it gets then, and
    ignores ``MLFLOW_AUTH_ADMIN_PASSWORD`` afterwards. A restart that generated a fresh
    password into ``admin-password`` would point users at a password that gets 401.
    """
    path = config.server_dir / "admin-password"
    from_env = env.get("MLFLOW_AUTH_ADMIN_PASSWORD")
    given = from_env or (path.read_text().strip() if path.is_file() else None)
    store = _auth_store(config.auth_database_uri)
    if not store.has_user(ADMIN_USERNAME):
        return secret(env, "MLFLOW_AUTH_ADMIN_PASSWORD", path)
    source = "MLFLOW_AUTH_ADMIN_PASSWORD" if from_env else str(path)
    if given is None:
        raise ServerConfigError(
            f"the admin user '{ADMIN_USERNAME}' exists already, with the password it was created "
            f"with (MLFLOW_AUTH_ADMIN_PASSWORD on the first start, not stored in {path}): set "
            "MLFLOW_AUTH_ADMIN_PASSWORD to it"
        )
    if not store.authenticate_user(ADMIN_USERNAME, given):
        raise ServerConfigError(
            f"the admin user '{ADMIN_USERNAME}' exists with another password than {source} "
            "holds (MLflow sets it on the first start only): set MLFLOW_AUTH_ADMIN_PASSWORD to "
            "the admin's current password"
        )
    return given


def _auth_store(uri: str):  # -> mlflow.server.auth.sqlalchemy_store.SqlAlchemyStore
    """MLflow's basic-auth user store, its schema created or upgraded as the server would."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(uri)
    return store


JOB_EXECUTION = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


def server_env(config: ServerConfig, env: dict[str, str]) -> dict[str, str]:
    """The environment of ``mlflow server``: stores, auth config and secrets."""
    admin_password_ = admin_password(config, env)
    check_admin_password(admin_password_)
    return {
        **env,
        "MLFLOW_BACKEND_STORE_URI": config.backend_store_uri,
        "MLFLOW_ARTIFACTS_DESTINATION": config.artifacts_destination,
        "MLFLOW_AUTH_CONFIG_PATH": str(write_auth_config(config)),
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN_USERNAME,
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password_,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret(
            env, "MLFLOW_FLASK_SERVER_SECRET_KEY", config.server_dir / "flask-secret-key"
        ),
        "MLFLOW_ENABLE_TELEMETRY": env.get("MLFLOW_ENABLE_TELEMETRY", "false"),
        # MLflow's job runner (GenAI evaluation jobs) starts about seven huey consumers of
        # ~250 MB each that poll all the time; nothing here submits jobs. Opt in by setting it.
        JOB_EXECUTION: env.get(JOB_EXECUTION, "false"),
    }


def upgrade_schema(config: ServerConfig) -> None:
    """``mlflow db upgrade`` when the schema is missing or old.

    Run in this process rather than as a command line, so a password in the URI never shows
    in ``ps``.
    """
    from mlflow.db import commands

    if not schema_needs_upgrade(config.backend_store_uri, config.database_wait_s):
        print(f"database {mask_uri(config.backend_store_uri)}: schema up to date", flush=True)
        return
    print(f"database {mask_uri(config.backend_store_uri)}: mlflow db upgrade", flush=True)
    commands.main(["upgrade", config.backend_store_uri], standalone_mode=False)


def main() -> None:
    """Check the settings, upgrade the schema if needed, then become ``mlflow server``."""
    env = dict(os.environ)
    try:
        config = read_config(env)
        if env.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
            check_admin_password(env["MLFLOW_AUTH_ADMIN_PASSWORD"])  # before any connection
        upgrade_schema(config)
        # After the database answers: the admin's password is checked against the auth store.
        child_env = server_env(config, env)
        ensure_bucket(config.artifacts_destination)
    except ServerConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # the database is unreachable, refuses the password, ...
        message = " ".join(str(exc).split())
        for value in known_secrets(env):
            message = message.replace(value, "***")
        print(f"error: cannot prepare the stores: {message[:500]}", file=sys.stderr)
        sys.exit(1)
    password_note = (
        "from MLFLOW_AUTH_ADMIN_PASSWORD"
        if env.get("MLFLOW_AUTH_ADMIN_PASSWORD")
        else f"in {config.server_dir / 'admin-password'}"
    )
    print(
        f"MLflow server on http://{config.host}:{config.port} (basic auth; admin user "
        f"'{ADMIN_USERNAME}', password {password_note}); artifacts in "
        f"{mask_uri(config.artifacts_destination)}",
        flush=True,
    )
    for line in exposure_warnings(config):
        print(line, file=sys.stderr, flush=True)
    # exec: the server gets this process's PID, so whoever started us can stop it by PID.
    command = server_command(config)
    os.execve(command[0], command, child_env)


def exposure_warnings(config: ServerConfig) -> list[str]:
    """What to say when the server listens beyond this machine: it speaks plain HTTP (basic
    auth sends passwords in every request), and MLflow answers ``403 Invalid Host header`` to
    a client whose Host is not in ALLOWED_HOSTS."""
    if config.host in LOOPBACK_HOSTS or config.host.startswith("127."):
        return []
    lines = [
        f"warning: listening on {config.host}:{config.port} with plain HTTP: passwords and data "
        "cross the network unencrypted; put a TLS proxy in front (or keep HOST=127.0.0.1 and "
        "use an SSH tunnel)"
    ]
    if not config.allowed_hosts:
        lines.append(
            "warning: ALLOWED_HOSTS is not set: clients that reach the server by IP address or "
            "DNS name get '403 Invalid Host header'; set the names they use, e.g. "
            f"ALLOWED_HOSTS=mlflow.example.org,10.0.0.5:{config.port} make server HOST="
            f"{config.host}"
        )
    return lines


def known_secrets(env: dict[str, str]) -> list[str]:
    """Every password in ``env`` (variables and URIs), to blank out of error messages."""
    from sqlalchemy.engine import make_url

    values = [env.get(name) for name in ("PGPASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD")]
    for name in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_DATABASE_URI"):
        try:
            values.append(make_url(env.get(name, "")).password)
        except Exception:
            continue
    return [str(value) for value in values if value]


if __name__ == "__main__":
    main()
