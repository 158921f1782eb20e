"""Quiet third-party logging at its source, unless the user asks for the full logs.

A stage prints its own lines (what it does, one line per epoch, the result, where to look).
TensorFlow, MLflow and absl add about 60 lines to a short run that say nothing to its user:
TensorFlow's C++ start-up notes (oneDNN, cpu_feature_guard) and a harmless ``E0000
node_def_util.cc`` line from a Keras/TensorFlow op-attribute mismatch, MLflow's INFO lines,
its artifact download bars and "Failed to resolve installed pip version" (uv makes .venv
without pip; the model's requirements are pinned explicitly, see pipeline/tracking/serving.py).
MLflow's "Add type hints" warning is fixed at its source, in pipeline/tracking/serving_model.py.

Everything here must run before TensorFlow or MLflow is imported: both read their settings from
the environment once, at import. ``-v`` on a stage or ``CIFAR10_VERBOSE=1`` keeps every log;
a setting the user already exported (``TF_CPP_MIN_LOG_LEVEL=0``) is never overridden.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

VERBOSE_ENV = "CIFAR10_VERBOSE"

# Set only where the user has not set them. TF_CPP_MIN_LOG_LEVEL=3 hides C++ INFO, WARNING and
# ERROR lines; a real TensorFlow failure still surfaces as a Python exception.
QUIET_DEFAULTS = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


# Loggers whose WARNINGs are noise here: the conda.yaml MLflow writes beside the model is
# never used (serving installs the pinned pip requirements), so an unpinned pip there is moot.
SILENCED_LOGGERS = ("mlflow.utils.environment",)


# What TensorFlow's C++ code writes while it loads, before it reads TF_CPP_MIN_LOG_LEVEL: absl's
# note that logging is not set up yet, then INFO/WARNING lines such as "oneDNN custom operations
# are on" (printed twice per process, whatever the log level; only TF_ENABLE_ONEDNN_OPTS=0, which
# changes the numerics, stops it at the source).
NATIVE_LOAD_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\] "
)


def verbose_requested(flag: bool = False) -> bool:
    """True if ``-v`` was given or ``CIFAR10_VERBOSE`` is set to anything but empty or 0."""
    return flag or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_third_party(verbose: bool) -> None:
    """Silence TensorFlow's C++ log, MLflow's INFO lines and bars, and known noise loggers.

    With ``verbose``, exports ``CIFAR10_VERBOSE=1`` (so child processes keep full logs too) and
    changes nothing else.
    """
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        return
    for name, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(name, value)
    for name in SILENCED_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def quiet_stderr_prints() -> Iterator[None]:
    """Drop what a library ``print``s to stderr inside the block, unless verbose.

    For MLflow's ``register_model``, which prints "Successfully registered model" and "Created
    version" outside logging; the registry line of the evaluate stage says the same.
    Exceptions still propagate with their own message.
    """
    if verbose_requested():
        yield
        return
    with contextlib.redirect_stderr(io.StringIO()):
        yield


@contextlib.contextmanager
def filtered_native_stderr() -> Iterator[None]:
    """While the block runs (an import of TensorFlow), drop its C++ load-time notes from stderr.

    Captures file descriptor 2 itself (C++ code bypasses ``sys.stderr``) into a temp file and
    writes every other line back afterwards, so an error printed meanwhile is still seen.
    Unless verbose.
    """
    if verbose_requested():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [
                line for line in text.splitlines(keepends=True) if not NATIVE_LOAD_NOISE.match(line)
            ]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
