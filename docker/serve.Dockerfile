# The champion as a container: MLflow's default scoring server (FastAPI/uvicorn, `mlflow models
# serve`) started by deploy/serve.py, the same command and worker count as `make serve`.
# Built by `python -m deploy.serve_image` (docs/serving.md), whose build context is the
# downloaded model folder alone: nothing else of the machine can reach the image.
# FROM the pipeline image (docker/Dockerfile): its environment already holds MLflow, Keras,
# TensorFlow and Pillow at the locked versions, so this adds one layer, the model (~5 MB).
ARG PIPELINE_IMAGE=cifar10-pipeline
FROM ${PIPELINE_IMAGE}
ARG MODEL_NAME=cifar10-cnn
ARG MODEL_VERSION=unknown
LABEL org.opencontainers.image.title="cifar10-serve" \
      org.mlflow.model.name="${MODEL_NAME}" \
      org.mlflow.model.version="${MODEL_VERSION}"
# Owned by root, read by the app user: the server cannot change the model it serves.
COPY . /model
# Images per request; deploy/serve.py refuses (one line, exit 2) a value that is not a whole
# number above 0, so the server never starts with one.
ENV CIFAR10_SERVE_MAX_IMAGES=1024
EXPOSE 8080
USER 10001:10001
ENTRYPOINT ["python", "-m", "deploy.serve", "--model-uri", "/model", "--host", "0.0.0.0", "--port", "8080"]
