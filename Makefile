# `make run` and `make test` each do the whole set-up first (idempotent), into .venv.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV := .tools/bin/uv
UV_VERSION := 0.13.8
# dvc.yaml calls `python -m stages.X`: that must be the project's interpreter.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export UV_PYTHON_DOWNLOADS := never

# GPU=1 installs CUDA TensorFlow + CUDA JAX (the `gpu` extra) instead of tensorflow-cpu. The stamp
# names the flavour, so switching between GPU=1 and not resyncs .venv.
FLAVOUR := $(if $(filter 1 yes true,$(GPU)),gpu,cpu)
STAMP := $(VENV)/.synced-$(FLAVOUR)
# The first of these that is Python 3.11-3.13 (PYTHON=/path/to/python picks one by hand). Expanded
# only when a recipe needs it; prints nothing when none qualifies.
PYTHON_CANDIDATES := python3 python3.13 python3.12 python3.11
SUPPORTED_PYTHON := 3.11, 3.12 or 3.13
PYTHON ?= $(shell for p in $(PYTHON_CANDIDATES); do \
	$$p -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 13); print(sys._base_executable)' \
	2>/dev/null && break; done)

DOCKERFILES := docker/Dockerfile docker/Dockerfile.gpu docker/serve.Dockerfile tests/compose/postgres.Dockerfile tests/compose/s3.Dockerfile
# make check: the tests needing no TensorFlow, training, server or image.
FAST := -m "not e2e and not keras" -p no:cacheprovider -q
# make test runs these in a second pytest session beside the rest: the Docker modules (image
# builds), and long ones that share nothing with the others (own servers, repos and stores in
# temp folders; the benchmarks at toy size write theirs under tmp too). About half the suite's
# time.
SIDE_TESTS := tests/test_images.py tests/test_compose.py tests/test_server.py \
	tests/test_sweep_dvc.py tests/test_kubeflow_sweep.py tests/test_benchmarks.py

.PHONY: setup check-python check-params run exp exps check test lint format ui plots server serve bench clean help kfp sweep

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: $(STAMP)  ## create .venv from uv.lock (exact versions); GPU=1: the CUDA flavour

check-python:
	@test -n "$(PYTHON)" || { echo "error: no supported Python found (tried: \
	$(PYTHON_CANDIDATES)); install Python $(SUPPORTED_PYTHON), or pass PYTHON=/path/to/python" >&2; \
	exit 1; }

$(UV): | check-python
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(STAMP): pyproject.toml uv.lock Makefile | $(UV) check-python
	$(UV) sync --frozen --python $(PYTHON) --extra $(FLAVOUR) --extra kubeflow --extra server --extra s3
	rm -f $(VENV)/.synced*
	touch $@

# DVC parses params.yaml itself, expanding YAML aliases, before any stage runs: an alias bomb
# hangs it silently. Every target that runs DVC checks the file with the project's own hardened
# reader first (one error line, exit 2).
check-params: setup
	@$(PY) -m stages.cli --params params.yaml

run: check-params  ## run the pipeline: dvc repro (only what changed); GPU=1: on the GPU
	dvc repro

# A DVC experiment, with a profile (profiles/NAME.yaml) if PROFILE is set: params.yaml (by the
# hardened reader, as check-params), the profile and every -S in EXP_ARGS are checked first, and
# a typo stops with one error line before DVC starts anything.
exp: check-params  ## dvc exp run with a profile: make exp PROFILE=NAME [EXP_ARGS='-S train.epochs=2 --queue']
	$(PY) -m stages.exp_run $(if $(PROFILE),--profile "$(PROFILE)") $(EXP_ARGS)

# dvc exp show with the experiment, the three headline metrics and the params that differ
# between the experiments (not from the commit; data.* left out); EXPS_ARGS go to dvc exp show.
exps: check-params  ## experiments best first: changed params, test accuracy, macro F1, val loss
	$(PY) -m views.exps $(EXPS_ARGS)

# SWEEP: the name the sweep's trainings were given with -S mlflow.sweep=NAME.
sweep: setup  ## a sweep's trials best first (make sweep SWEEP=NAME): val/test accuracy, macro F1, changed params
	$(PY) -m views.sweep "$(SWEEP)"

check: setup  ## the fast tier (under a minute): lint, format check, the tests not e2e nor keras
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	@# Two halves of the test modules at once (--shard, tests/conftest.py): one pytest keeps
	@# about one core busy, most of it importing; the second half's output follows the first's.
	@log=$$(mktemp); pid=; trap 'kill $$pid 2>/dev/null; rm -f $$log' EXIT INT TERM; \
	$(PY) -m pytest $(FAST) --shard 2/2 > $$log 2>&1 & pid=$$!; \
	$(PY) -m pytest $(FAST) --shard 1/2; first=$$?; \
	wait $$pid; second=$$?; pid=; cat $$log; \
	exit $$(( first != 0 ? first : second ))

test: setup  ## lint, format check, then every test (unit and end to end)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/hadolint $(DOCKERFILES)
	@# Two pytest sessions side by side: one alone keeps only about one of CI's 2 cores busy
	@# (imports, process start-up, waits on servers and image downloads). The second session's
	@# log is printed at the end; both exit codes count. --durations: where CI's time goes.
	@log=$$(mktemp); pid=; trap 'kill $$pid 2>/dev/null; rm -f $$log' EXIT INT TERM; \
	echo "make test: $(SIDE_TESTS) run beside the rest; their log follows at the end"; \
	$(PY) -m pytest -p no:cacheprovider --durations=15 $(SIDE_TESTS) > $$log 2>&1 & pid=$$!; \
	$(PY) -m pytest $(SIDE_TESTS:%=--ignore=%) --durations=25; rest=$$?; \
	wait $$pid; side=$$?; pid=; \
	echo "===== beside: pytest $(SIDE_TESTS) ====="; cat $$log; \
	echo "make test: pytest exited $$rest (the rest) and $$side (beside)"; \
	exit $$(( rest != 0 ? rest : side ))

lint: setup  ## ruff lint + format check, hadolint over the Dockerfiles
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/hadolint $(DOCKERFILES)

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

kfp: setup  ## compile the Kubeflow pipelines from the committed params.yaml: cifar10_kfp/cifar10_pipeline.yaml and cifar10_sweep_pipeline.yaml (KFP_IMAGE, KFP_GPU_IMAGE)
	$(PY) -m cifar10_kfp.compile

# make bench knobs: ARCHIVE (the CIFAR-10 archive), SIZE (training images; empty = all 45,000),
# EPOCHS and ROUNDS (throughput), TTA_EPOCHS (cap on time-to-accuracy epochs; empty = each
# configuration's own), BENCH_ARGS (any other `python -m benchmarks` option). Results and report go
# to benchmarks/.scratch/ unless UPDATE=1 (then benchmarks/results/ and docs/benchmarks.md).
ARCHIVE ?= data/raw/cifar-10-binary.tar.gz
SIZE ?=
EPOCHS ?= 3
ROUNDS ?= 2
TTA_EPOCHS ?=
BENCH_ARGS ?=

bench: setup  ## every benchmark on the real data (hours on a CPU); UPDATE=1: docs/benchmarks.md
	$(PY) -m benchmarks --archive $(ARCHIVE) --epochs $(EPOCHS) --rounds $(ROUNDS) \
		$(if $(filter 1 yes true,$(UPDATE)),--update) \
		$(if $(SIZE),--size $(SIZE)) $(if $(TTA_EPOCHS),--tta-max-epochs $(TTA_EPOCHS)) $(BENCH_ARGS)

clean:  ## remove the environments (not data, models or MLflow runs)
	rm -rf $(VENV) .tools

# The Vega builds DVC's page loads from a CDN, fetched once with npm and inlined into the page.
VEGA := .tools/vega
VEGA_PACKAGES := vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2

# The revisions `make plots` draws side by side: every experiment of HEAD by default
# (`dvc exp list`); PLOTS_REVS="exp-a exp-b" picks some, PLOTS_REVS=workspace the workspace alone.
PLOTS_REVS ?=

plots: check-params  ## dvc plots diff of the experiments into dvc_plots/index.html, Vega inlined: offline
	@if [ ! -f $(VEGA)/.unpacked ]; then \
	  mkdir -p $(VEGA) && cd $(VEGA) && npm pack --silent $(VEGA_PACKAGES) >/dev/null && \
	  for f in *.tgz; do mkdir -p $${f%.tgz} && \
	    tar -xzf $$f -C $${f%.tgz} --strip-components=1 package/build || exit 1; done && \
	  touch .unpacked; fi
	$(PY) plots/offline_template.py $(VEGA) $(VEGA)/offline.html
	@revs="$(PLOTS_REVS)"; [ -n "$$revs" ] || revs=$$(dvc exp list --name-only 2>/dev/null); \
	if [ -z "$$revs" ] || [ "$$revs" = workspace ]; then \
	  set -x; dvc plots show --html-template $(VEGA)/offline.html; \
	else set -x; dvc plots diff $$revs --html-template $(VEGA)/offline.html; fi

# The UI (views/ui_server.py), then, once it answers, the link to the runs table with the compared
# columns (an experiment tag: MLflow's shared view); MLFLOW_TRACKING_URI is unset so both read the
# repo's store. Ctrl-C stops it in one line.
ui: setup  ## MLflow UI on http://127.0.0.1:5000 over the repo's own store; prints the compare link
	@MLFLOW_TRACKING_URI= $(PY) -m views.ui_server --port 5000 \
		--backend-store-uri sqlite:///$(CURDIR)/mlflow.db

# Settings come from the environment or the command line (make server HOST=0.0.0.0 PORT=8080):
# MLFLOW_BACKEND_STORE_URI (required, PostgreSQL), PGPASSWORD, ... listed in deploy/server.py.
# The champion on MLflow's scoring server with the measured worker count (deploy/serve.py);
# SERVE_ARGS go to it (--port 8080 --host 0.0.0.0 --workers N --model-uri models:/...).
# CIFAR10_SERVE_MAX_IMAGES (images a request, default 1024) is checked before it starts.
serve: setup  ## serve the champion (models:/cifar10-cnn@champion) on 127.0.0.1:5001
	$(PY) -m deploy.serve $(SERVE_ARGS)

server: setup  ## team MLflow server: PostgreSQL store, proxied artifacts, basic auth (README)
	$(PY) -m deploy.server
