"""``make ui``: the MLflow UI over the repo's store, its link printed once the server answers.

``mlflow ui`` says "Uvicorn running" long before its port accepts connections on a busy
machine (about 80 s on 2 cores), and Ctrl-C spilled tracebacks from each of its workers. This
starts it in its own process group with its output in a log file, waits (bounded) until its
health endpoint answers, prints the compare link (views/ui_link.py), and on Ctrl-C stops it by
its process group and says so in one line. ``-v`` or ``CIFAR10_VERBOSE=1`` keeps the server's own
output on the terminal.

    python -m views.ui_server --backend-store-uri sqlite:///ABS/mlflow.db [--port 5000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.core.quiet import verbose_requested

HOST = "127.0.0.1"
# How long the UI may take to answer before this gives up (a busy 2-core machine: ~80 s).
START_TIMEOUT_S = 300.0
POLL_S = 0.5


def answers(url: str) -> bool:
    """True if ``url`` answers any HTTP status within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def wait_until_answering(
    process: subprocess.Popen[bytes], url: str, timeout_s: float = START_TIMEOUT_S
) -> str | None:
    """None once ``url`` answers; else why not (the process exited, or the time ran out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"the MLflow UI exited with code {process.returncode} before answering"
        if answers(url):
            return None
        time.sleep(POLL_S)
    return f"the MLflow UI did not answer {url} within {timeout_s:.0f} s"


def stop(process: subprocess.Popen[bytes]) -> None:
    """End the server and its workers: SIGTERM to its process group, SIGKILL after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main(argv: list[str] | None = None) -> int:
    """Start the UI, print its link once it answers, run until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m views.ui_server", description=__doc__)
    parser.add_argument("--backend-store-uri", required=True, help="the store the UI shows")
    parser.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the server's output")
    args = parser.parse_args(argv)
    # Ctrl-C (and a plain kill) end the UI even where SIGINT was inherited ignored (a job
    # started in the background by a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    base = f"http://{HOST}:{args.port}"
    if answers(f"{base}/health"):
        print(f"error: something already answers on {base}; stop it or pass another port")
        return 1
    verbose = verbose_requested(args.verbose)
    log_path = Path(tempfile.gettempdir()) / f"mlflow-ui-{args.port}.log"
    command = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", args.backend_store_uri,
        "--host", HOST, "--port", str(args.port),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        output = None if verbose else log
        # Its own session: Ctrl-C reaches this process only, which then stops the whole group.
        # MLflow's job runner (about seven polling consumers of ~250 MB) serves nothing here;
        # off unless the user's environment turns it on.
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
        process = subprocess.Popen(
            command, stdout=output, stderr=output, start_new_session=True, env=env
        )
        try:
            print(f"starting the MLflow UI on {base} (its log: {log_path}) ...", flush=True)
            problem = wait_until_answering(process, f"{base}/health")
            if problem is not None:
                print(f"error: {problem}; see {log_path}", file=sys.stderr)
                return 1
            from views.ui_link import main as print_link

            print_link(["--base", base])
            print("Ctrl-C stops the UI.", flush=True)
            process.wait()
            print(f"error: the MLflow UI exited with code {process.returncode}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nstopped the MLflow UI", flush=True)
            return 0
        finally:
            stop(process)


if __name__ == "__main__":
    sys.exit(main())
