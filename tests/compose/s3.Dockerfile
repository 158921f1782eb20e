# The test stack's S3 server (tests/compose/compose.override.yaml): moto's `moto_server`, a real
# HTTP server speaking the S3 API, in place of the MinIO image, which no package registry ships.
# Built on the same local Debian base as the other images; every package pinned with hashes.
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE}
COPY --from=uv /uv /usr/local/bin/uv
COPY s3-requirements.txt /tmp/s3-requirements.txt
RUN UV_NO_CACHE=1 UV_PYTHON_DOWNLOADS=never uv venv --python python3 /opt/s3 \
    && UV_NO_CACHE=1 uv pip install --python /opt/s3/bin/python --require-hashes \
        --requirement /tmp/s3-requirements.txt \
    && rm /usr/local/bin/uv /tmp/s3-requirements.txt \
    && useradd --system --uid 10002 s3
USER 10002
ENV PATH=/opt/s3/bin:$PATH
EXPOSE 9000
# State lives in memory: a restart empties every bucket (enough for a test).
CMD ["moto_server", "--host", "0.0.0.0", "--port", "9000"]
