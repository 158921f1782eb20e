"""deploy/: the compose file for teams (its structure, without a daemon), its image, and the
settings logic of ``make server`` (deploy/server.py). tests/test_server.py runs the server itself
against a real PostgreSQL; tests/test_compose.py brings the compose stack up under Docker."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy import server
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
# Variables that MLflow, boto3 or libpq read themselves, not deploy/server.py.
READ_BY_LIBRARIES = {"PGPASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                     "MLFLOW_S3_ENDPOINT_URL"}  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_has_the_three_services_wired_by_health(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "minio", "mlflow"}
    for name in ("postgres", "minio"):
        image = services[name]["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"
        assert services[name]["healthcheck"]["test"][0] == "CMD"
    assert services["postgres"]["image"].startswith("postgres:15.")
    mlflow = services["mlflow"]
    assert mlflow["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "minio": {"condition": "service_healthy"},
    }
    assert (REPO_ROOT / "deploy" / mlflow["build"]["context"]).resolve() == REPO_ROOT
    assert (REPO_ROOT / mlflow["build"]["dockerfile"]).is_file()
    named = {volume.split(":")[0] for s in services.values() for volume in s.get("volumes", [])}
    assert {"postgres-data", "minio-data"} <= named and set(compose["volumes"]) <= named
    init = DEPLOY / "postgres-init"
    assert any(v.startswith("./postgres-init:") for v in services["postgres"]["volumes"])
    assert "CREATE DATABASE mlflow_auth;" in (init / "10-auth-database.sql").read_text()


def test_compose_publishes_only_mlflow_on_localhost_by_default(compose: dict) -> None:
    published = {name: s["ports"] for name, s in compose["services"].items() if "ports" in s}
    assert list(published) == ["mlflow"]
    (mapping,) = published["mlflow"]
    assert mapping == "${MLFLOW_PUBLISH:-127.0.0.1:5000}:5000"


def test_compose_takes_every_secret_from_the_env_file(compose: dict) -> None:
    example = (DEPLOY / "env.example").read_text()
    documented = set(re.findall(r"^#? ?([A-Z_]+)=", example, flags=re.MULTILINE))
    text = (DEPLOY / "compose.yaml").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    assert used <= documented, f"undocumented in env.example: {used - documented}"
    for service in compose["services"].values():
        for key, value in service.get("environment", {}).items():
            if re.search(r"PASSWORD|SECRET", key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), f"{key} must be required"
            if "URI" in key:
                assert "@" not in str(value) or ":" not in str(value).split("@")[0].split("//")[1]


def test_compose_mlflow_settings_are_ones_the_server_script_reads(compose: dict) -> None:
    env = compose["services"]["mlflow"]["environment"]
    source = (DEPLOY / "server.py").read_text()
    for key in env:
        assert key in READ_BY_LIBRARIES or f'"{key}"' in source, key
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg://mlflow@postgres:")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["HOST"] == "0.0.0.0", "inside the container; the host side is set by ports"


# The server image installs from uv.lock: tests/test_docker.py replays its install.


@pytest.mark.skipif(shutil.which("hadolint", path=str(Path(sys.executable).parent)) is None,
                    reason="hadolint not installed")  # fmt: skip
def test_server_image_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    result = subprocess.run([hadolint, str(DEPLOY / "mlflow.Dockerfile")],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_server_settings_default_to_localhost_and_mask_passwords(tmp_path: Path) -> None:
    uri = "postgresql+psycopg://team:s3cret-pw@db.example:5432/mlflow"
    config = server.read_config({"MLFLOW_BACKEND_STORE_URI": uri, "SERVER_DIR": str(tmp_path)})
    assert config.host == "127.0.0.1" and config.port == 5000
    assert (
        config.auth_database_uri
        == "postgresql+psycopg://team:s3cret-pw@db.example:5432/mlflow_auth"
    )
    assert config.artifacts_destination == (tmp_path / "artifacts").as_uri()
    assert server.mask_uri(uri) == "postgresql+psycopg://team:***@db.example:5432/mlflow"
    assert "s3cret-pw" in server.known_secrets({"MLFLOW_BACKEND_STORE_URI": uri})
    other = server.read_config({"MLFLOW_BACKEND_STORE_URI": uri, "HOST": "0.0.0.0"})
    assert other.host == "0.0.0.0"
    with pytest.raises(server.ServerConfigError, match="DEFAULT_PERMISSION"):
        server.read_config({"MLFLOW_BACKEND_STORE_URI": uri, "DEFAULT_PERMISSION": "ALL"})


def test_generated_secret_is_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "state" / "admin-password"
    first = server.secret({}, "MLFLOW_AUTH_ADMIN_PASSWORD", path)
    assert len(first) >= 24 and path.stat().st_mode & 0o777 == 0o600
    assert server.secret({}, "MLFLOW_AUTH_ADMIN_PASSWORD", path) == first
    given = {"MLFLOW_AUTH_ADMIN_PASSWORD": "given-password-123"}
    assert server.secret(given, "MLFLOW_AUTH_ADMIN_PASSWORD", path) == "given-password-123"


# e2e: it builds MLflow's own auth store (the server's import and schema: 4-9 s), too slow for
# `make check`.
@pytest.mark.e2e
def test_a_restart_never_hands_out_an_admin_password_the_server_ignores(tmp_path: Path) -> None:
    # MLflow sets the admin's password on the first start only. A restart without
    # MLFLOW_AUTH_ADMIN_PASSWORD once generated a new one into admin-password: a 401 for all.
    auth_db = f"sqlite:///{tmp_path / 'auth.db'}"
    config = server.read_config(
        {"MLFLOW_BACKEND_STORE_URI": "postgresql://u@h/db", "MLFLOW_AUTH_DATABASE_URI": auth_db,
         "SERVER_DIR": str(tmp_path / "state")}
    )  # fmt: skip
    first = {"MLFLOW_AUTH_ADMIN_PASSWORD": "first-start-password"}
    assert server.admin_password(config, first) == "first-start-password"
    # What mlflow server does on its first start with that password.
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(auth_db)
    store.create_user(server.ADMIN_USERNAME, "first-start-password", is_admin=True)

    with pytest.raises(server.ServerConfigError, match="set MLFLOW_AUTH_ADMIN_PASSWORD to it"):
        server.server_env(config, {})
    assert not (tmp_path / "state" / "admin-password").exists(), "no password that gets 401"
    with pytest.raises(server.ServerConfigError, match="exists with another password"):
        server.admin_password(config, {"MLFLOW_AUTH_ADMIN_PASSWORD": "another-password-1"})
    assert server.admin_password(config, first) == "first-start-password"
