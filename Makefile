# `make run` and `make test` each do the whole set-up first (idempotent), into .venv.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV := .tools/bin/uv
UV_VERSION := 0.13.8
# dvc.yaml calls `python -m stages.X`: that must be the project's interpreter.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export UV_PYTHON_DOWNLOADS := never

.PHONY: setup run test lint format ui bench clean help

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: $(VENV)/.synced  ## create .venv from uv.lock (exact versions)

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra cpu --extra kubeflow --extra server
	touch $@

run: setup  ## run the pipeline: dvc repro (only what changed)
	dvc repro

test: setup  ## lint, then run every test
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: setup  ## ruff lint + format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:  ## remove the environments (not data, models or MLflow runs)
	rm -rf $(VENV) .tools

ui: setup  ## MLflow UI on http://127.0.0.1:5000 over the repo's own store
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000
