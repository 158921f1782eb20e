# The team's MLflow server (deploy/compose.yaml): `python -m deploy.server`, as `make server` runs.
# Versions are those of uv.lock (tests/test_server.py checks they agree).
FROM python:3.11-slim-bookworm

RUN pip install --no-cache-dir \
        "mlflow[auth]==3.17.2" \
        "psycopg[binary]==3.3.9" \
        "boto3==1.43.117" \
    && useradd --system --create-home --uid 10001 mlflow \
    && install -d -o mlflow -g mlflow /var/lib/mlflow-server

WORKDIR /app
COPY deploy/__init__.py deploy/server.py /app/deploy/

USER 10001
ENV SERVER_DIR=/var/lib/mlflow-server \
    HOST=0.0.0.0 \
    PORT=5000 \
    MLFLOW_ENABLE_TELEMETRY=false
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=5s --retries=30 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
CMD ["python", "-m", "deploy.server"]
