# The team's MLflow server (deploy/compose.yaml): `python -m deploy.server`, as `make server` runs.
# Every package is at its uv.lock version: uv exports the lock as constraints and installs the
# server's three packages under them, so nothing floats (tests/test_docker.py replays it).
# No `RUN --mount` here: Compose v1 builds with the classic builder.

# The base images are arguments only so that a machine without an image registry can stand in
# local copies; the defaults are what users build from. UV_IMAGE: the Makefile's uv.
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1
COPY pyproject.toml uv.lock /lock/
# The server's own packages; their versions, and those of everything they pull in, are the lock's.
RUN uv export --frozen --project /lock --no-dev --no-emit-project --no-hashes \
        --extra server --extra s3 --output-file /lock/constraints.txt \
    && uv venv --python python3 /opt/mlflow \
    && uv pip install --python /opt/mlflow/bin/python --constraint /lock/constraints.txt \
        "mlflow[auth]" "psycopg[binary]" boto3

FROM ${PYTHON_IMAGE}
RUN useradd --system --create-home --uid 10001 mlflow \
    && install -d -o mlflow -g mlflow /var/lib/mlflow-server
# The environment is owned by root: the server's user runs it but cannot change it.
COPY --from=build /opt/mlflow /opt/mlflow
WORKDIR /app
COPY deploy/__init__.py deploy/server.py /app/deploy/

USER 10001
ENV PATH=/opt/mlflow/bin:$PATH \
    SERVER_DIR=/var/lib/mlflow-server \
    HOST=0.0.0.0 \
    PORT=5000 \
    MLFLOW_ENABLE_TELEMETRY=false
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=5s --retries=30 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
CMD ["python", "-m", "deploy.server"]
