"""A throw-away PostgreSQL cluster in a folder: initdb, start on 127.0.0.1, create databases, stop.

PostgreSQL refuses to run as root, so under root the cluster belongs to an unprivileged system
user (``postgres``, created if missing) and the folder is handed to that user. Used by the test
suite and by ``python -m deploy.postgres`` for a quick local backend store; a team points
``make server`` at its own PostgreSQL instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "mlflow"  # the cluster's superuser, who owns the databases below
UNPRIVILEGED_USER = "postgres"


class PostgresError(RuntimeError):
    """The cluster could not be created or started; the message says why."""


def find_bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``: $PG_BIN, else the newest Debian install."""
    candidates = [Path(os.environ["PG_BIN"])] if os.environ.get("PG_BIN") else []
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = [p for p in debian.iterdir() if p.name.isdigit()]
        candidates += [p / "bin" for p in sorted(versions, key=lambda p: -int(p.name))]
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)  # type: ignore[arg-type]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


def cluster_user() -> pwd.struct_passwd:
    """Who runs the server: ourselves, or under root an unprivileged user (created if missing)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             UNPRIVILEGED_USER],
            check=True, capture_output=True,
        )  # fmt: skip
        return pwd.getpwnam(UNPRIVILEGED_USER)


@dataclass
class Cluster:
    """A running cluster; ``uri(db)`` has no password: pass ``password`` as PGPASSWORD."""

    folder: Path
    port: int
    password: str
    process: subprocess.Popen

    def uri(self, database: str) -> str:
        """SQLAlchemy URI of ``database`` (psycopg 3 driver), without the password."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def log_path(self) -> Path:
        return self.folder / "postgres.log"

    def create_database(self, name: str) -> None:
        """CREATE DATABASE ``name`` (owned by the superuser) unless it exists."""
        import psycopg

        with psycopg.connect(self._conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self, grace_s: float = 30) -> None:
        """Fast shutdown (SIGINT to the postmaster, by PID); SIGKILL if it outlives ``grace_s``."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def _conninfo(self, database: str) -> str:
        return (
            f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database} "
            f"password={self.password} connect_timeout=5"
        )


def start_cluster(
    folder: Path | None, port: int, durable: bool = True, timeout_s: float = 60
) -> Cluster:
    """initdb into ``folder`` (a new temp folder when None) unless done, start it on ``port``.

    ``durable=False`` turns fsync off: for tests, where a crash loses nothing of value.
    The superuser's password is generated at initdb and kept in ``folder/superuser-password``
    (mode 600); connections from 127.0.0.1 must give it.
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PostgresError("PostgreSQL binaries (initdb, postgres) not found; set PG_BIN")
    user = cluster_user()
    folder = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp")) if folder is None else folder
    folder.mkdir(parents=True, exist_ok=True)
    os.chown(folder, user.pw_uid, user.pw_gid)
    folder.chmod(0o700)
    data = folder / "data"
    password_file = folder / "superuser-password"
    as_user = _as_user(user)
    if not (data / "PG_VERSION").is_file():
        password_file.write_text(secrets.token_urlsafe(24))
        os.chown(password_file, user.pw_uid, user.pw_gid)
        password_file.chmod(0o600)
        result = subprocess.run(
            [bin_dir / "initdb", "-D", data, "-U", SUPERUSER, "-E", "UTF8", "--no-instructions",
             "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={password_file}"],
            capture_output=True, text=True, **as_user,
        )  # fmt: skip
        if result.returncode != 0:
            raise PostgresError(f"initdb failed: {result.stderr.strip()}")
    settings = ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={folder}"]
    if not durable:
        settings += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off"]  # fmt: skip
    log_path = folder / "postgres.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [bin_dir / "postgres", "-D", data, "-p", str(port), *settings],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, **as_user,
        )  # fmt: skip
    cluster = Cluster(folder, port, password_file.read_text().strip(), process)
    _wait_ready(cluster, timeout_s)
    return cluster


def _as_user(user: pwd.struct_passwd) -> dict:
    if os.geteuid() != 0:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [],
            "env": {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8",
                    "HOME": str(tempfile.gettempdir())}}  # fmt: skip


def _wait_ready(cluster: Cluster, timeout_s: float) -> None:
    import psycopg

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cluster.process.poll() is not None:
            raise PostgresError(
                f"postgres exited with {cluster.process.returncode}: "
                f"{cluster.log_path.read_text()[-2000:]}"
            )
        try:
            with psycopg.connect(cluster._conninfo("postgres")):
                return
        except psycopg.OperationalError:
            time.sleep(0.3)
    cluster.stop()
    raise PostgresError(f"postgres did not accept connections in {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> None:
    """``python -m deploy.postgres FOLDER``: a local cluster in FOLDER until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m deploy.postgres", description=main.__doc__)
    parser.add_argument("folder", type=Path, help="cluster folder (created on first use)")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument(
        "--database",
        action="append",
        default=[],
        help="another database to create (mlflow and mlflow_auth always are)",
    )
    args = parser.parse_args(argv)
    # SIGTERM (kill PID) stops the cluster as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    databases = list(dict.fromkeys(["mlflow", "mlflow_auth", *args.database]))
    try:
        cluster = start_cluster(args.folder.resolve(), args.port)
    except PostgresError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    try:
        for name in databases:
            cluster.create_database(name)
        print(f"PostgreSQL on 127.0.0.1:{args.port}; databases: {', '.join(databases)}")
        print(f"  MLFLOW_BACKEND_STORE_URI={cluster.uri('mlflow')}")
        print(f"  MLFLOW_AUTH_DATABASE_URI={cluster.uri('mlflow_auth')}")
        print(f"  PGPASSWORD: in {args.folder / 'superuser-password'}", flush=True)
        cluster.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
