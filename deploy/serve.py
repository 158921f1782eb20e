"""``make serve``: check the serving settings, then run MLflow's scoring server on the champion.

    python -m deploy.serve [--model-uri URI] [--host 127.0.0.1] [--port 5001] [--workers N]

The default model is ``models:/<mlflow.registered_model_name>@champion`` from params.yaml, read
from ``MLFLOW_TRACKING_URI`` (else the project's ``mlflow.db``). ``CIFAR10_SERVE_MAX_IMAGES``
(images per request, default 1024) is checked here first: a value that is not a whole number
above 0 is one ``error:`` line and exit 2, and no server starts. The serving image runs this same
command (docker/serve.Dockerfile), so both serve with the same settings.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
from collections.abc import Sequence

# Worker processes of the scoring server, measured by benchmarks/serving.py on 2 cores
# (docs/benchmarks.md, "Serving"): 2 served 256-image PNG requests at 1,407 images/s, 1 at 907
# (1 answered single images faster: p95 17 ms against 64 ms; docs/serving.md).
DEFAULT_WORKERS = 2
DEFAULT_PORT = 5001


def serve_command(model_uri: str, host: str, port: int, workers: int) -> list[str]:
    """The ``mlflow models serve`` command line with the project's server settings."""
    mlflow = shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow")
    return [
        mlflow, "models", "serve", "-m", model_uri, "--env-manager", "local",
        "--host", host, "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


def champion_uri() -> str:
    """``models:/<registered model>@champion``, the name from params.yaml."""
    from pipeline.core.params import load_params

    return f"models:/{load_params().mlflow.registered_model_name}@champion"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deploy.serve", description=__doc__)
    parser.add_argument("--model-uri", help="default: models:/<registered model>@champion")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the settings, print the command, serve nothing",
    )
    args = parser.parse_args(argv)
    if args.workers < 1 or not 0 < args.port < 65536:
        parser.error("--workers must be at least 1 and --port in 1-65535")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # MLflow prints advice for type hints on the wrapper's predict() whatever the warning
    # filters say; they are left out on purpose, and the error below must be the only line.
    with contextlib.redirect_stderr(io.StringIO()):
        from pipeline.tracking.serving_model import ServingConfigError, max_images
    try:
        limit = max_images()
    except ServingConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    command = serve_command(args.model_uri or champion_uri(), args.host, args.port, args.workers)
    print(f"serving with at most {limit} images a request: {' '.join(command)}", file=sys.stderr)
    if args.dry_run:
        return
    sys.stdout.flush()
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
