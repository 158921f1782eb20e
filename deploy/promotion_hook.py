"""Redeploy on promotion: a receiver for MLflow's registry webhook on the ``champion`` alias.

    python -m deploy.promotion_hook serve  [--host 127.0.0.1] [--port 8765]
    python -m deploy.promotion_hook create --url https://HOST/PATH [--name cifar10-champion]

``serve`` answers MLflow's ``model_version_alias.created`` deliveries (MLflow 3.3+, SQL stores):

1. the signature: ``X-MLflow-Signature`` must be ``v1,<base64 HMAC-SHA256>`` of
   ``<delivery id>.<timestamp>.<body>`` under the shared secret (MLflow's scheme), compared in
   constant time; else 401;
2. the timestamp: ``X-MLflow-Timestamp`` within ``PROMOTION_HOOK_WINDOW_S`` (300) of now, else
   401; a delivery id already seen in that window is a replay: 409;
3. the payload: ``model_version_alias`` / ``created`` of the registered model in params.yaml with
   a version number, else 400. Another alias (``challenger``) is answered 200 and ignored.

Then ``PROMOTION_HOOK_COMMAND`` (one command line, split like a shell would, run without one)
runs in the background with ``CHAMPION_MODEL``, ``CHAMPION_VERSION`` and ``CHAMPION_URI`` in its
environment, one action at a time, and the delivery is answered 202 at once (MLflow waits 30 s
at most for an answer, and retries what times out; a retry carries the same delivery id).

``create`` registers the webhook on the tracking server ``MLFLOW_TRACKING_URI`` names.

Settings: ``PROMOTION_HOOK_SECRET`` (required by both: at least 16 characters; never printed),
``PROMOTION_HOOK_COMMAND`` (required by ``serve``), ``PROMOTION_HOOK_ALIAS`` (``champion``),
``PROMOTION_HOOK_WINDOW_S`` (300). A bad setting is one ``error:`` line and exit 2.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# MLflow's webhook headers and signature version (mlflow.webhooks.constants, MLflow 3.17).
SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
EVENT = "model_version_alias.created"
SECRET_ENV = "PROMOTION_HOOK_SECRET"
COMMAND_ENV = "PROMOTION_HOOK_COMMAND"
ALIAS_ENV = "PROMOTION_HOOK_ALIAS"
WINDOW_ENV = "PROMOTION_HOOK_WINDOW_S"
MIN_SECRET_CHARS = 16
MAX_BODY_BYTES = 64 * 1024


class HookConfigError(Exception):
    """A setting is missing or unusable; the message names it (never its value if secret)."""


class Refused(Exception):
    """A delivery that is not acted on: the HTTP status and a short reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """MLflow's webhook signature of one delivery: ``v1,<base64 HMAC-SHA256>``."""
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


@dataclass
class Verifier:
    """Checks deliveries: signature, timestamp window, replays, payload."""

    secret: str
    model_name: str
    alias: str = "champion"
    window_s: int = 300
    seen: dict[str, float] = field(default_factory=dict)  # delivery id -> its timestamp
    lock: threading.Lock = field(default_factory=threading.Lock)

    def verify(self, headers: Any, body: bytes, now: float | None = None) -> dict:
        """The alias event's ``data`` of an authentic, fresh delivery, else ``Refused``.

        ``headers``: anything with ``.get(name, default)`` (http.server's are case-blind).
        Returns an empty dict for an authentic event about another alias or model.
        """
        now = time.time() if now is None else now
        delivery_id = headers.get(DELIVERY_ID_HEADER, "")
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        given = headers.get(SIGNATURE_HEADER, "")
        if not (delivery_id and timestamp.isdigit() and given):
            raise Refused(401, "missing or malformed signature headers")
        expected = signature(self.secret, delivery_id, timestamp, body)
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Refused(401, "bad signature")
        if abs(now - int(timestamp)) > self.window_s:
            raise Refused(401, f"timestamp outside the {self.window_s} s window")
        with self.lock:
            # Ids older than the window cannot come back: their timestamp would be refused.
            for old in [key for key, stamp in self.seen.items() if now - stamp > self.window_s]:
                del self.seen[old]
            if delivery_id in self.seen:
                raise Refused(409, "delivery already received (replay)")
            self.seen[delivery_id] = int(timestamp)
        return self.event_data(body)

    def event_data(self, body: bytes) -> dict:
        try:
            payload = json.loads(body)
            event = f"{payload['entity']}.{payload['action']}"
            data = payload["data"]
            name, alias, version = data["name"], data["alias"], str(data["version"])
        except (ValueError, KeyError, TypeError):
            raise Refused(400, "not an MLflow webhook payload") from None
        if event != EVENT:
            raise Refused(400, f"event {event!r}, expected {EVENT!r}")
        if not version.isdigit():
            raise Refused(400, "the model version is not a number")
        if name != self.model_name or alias != self.alias:
            return {}
        return {"name": name, "alias": alias, "version": version}


class ActionRunner:
    """Runs the configured command once per accepted delivery, one at a time, in order."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.jobs: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._work, daemon=True).start()

    def submit(self, data: dict) -> None:
        self.jobs.put(data)

    def _work(self) -> None:
        while True:
            data = self.jobs.get()
            env = {k: v for k, v in os.environ.items() if k != SECRET_ENV} | {
                "CHAMPION_MODEL": data["name"],
                "CHAMPION_VERSION": data["version"],
                "CHAMPION_URI": f"models:/{data['name']}/{data['version']}",
            }
            started = time.monotonic()
            try:
                result = subprocess.run(self.command, env=env, check=False)
                outcome = f"exit {result.returncode}"
            except OSError as error:
                outcome = f"could not start: {error.strerror}"
            log(f"action for {data['name']} v{data['version']}: {outcome} "
                f"after {time.monotonic() - started:.1f} s")  # fmt: skip


def log(message: str) -> None:
    print(f"promotion-hook: {message}", file=sys.stderr, flush=True)


def make_handler(verifier: Verifier, runner: ActionRunner) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                return self._answer(413, "payload too large")
            body = self.rfile.read(length)
            delivery = self.headers.get(DELIVERY_ID_HEADER, "-")[:64]
            try:
                data = verifier.verify(self.headers, body)  # case-insensitive .get
            except Refused as refused:
                log(f"delivery {delivery} refused ({refused.status}): {refused.reason}")
                return self._answer(refused.status, refused.reason)
            if not data:
                log(f"delivery {delivery}: another alias or model, ignored")
                return self._answer(200, "ignored: not the watched alias")
            log(f"delivery {delivery}: {data['name']} v{data['version']} is {data['alias']}")
            runner.submit(data)
            return self._answer(202, "accepted: action queued")

        def do_GET(self) -> None:
            self._answer(200 if self.path == "/health" else 404, "ok")

        def _answer(self, status: int, message: str) -> None:
            payload = json.dumps({"message": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per delivery is written by do_POST instead

    return Handler


def secret_from_env() -> str:
    secret = os.environ.get(SECRET_ENV, "")
    if len(secret) < MIN_SECRET_CHARS:
        raise HookConfigError(f"{SECRET_ENV} must be set, at least {MIN_SECRET_CHARS} characters")
    return secret


def verifier_from_env(model_name: str) -> Verifier:
    window = os.environ.get(WINDOW_ENV, "300")
    if not window.isdigit() or int(window) < 1:
        raise HookConfigError(f"{WINDOW_ENV}={window!r} is not a whole number of seconds above 0")
    alias = os.environ.get(ALIAS_ENV, "champion")
    return Verifier(secret_from_env(), model_name, alias, int(window))


def command_from_env() -> list[str]:
    try:
        command = shlex.split(os.environ.get(COMMAND_ENV, ""))
    except ValueError as error:
        raise HookConfigError(f"{COMMAND_ENV} cannot be split into words: {error}") from None
    if not command:
        raise HookConfigError(f"{COMMAND_ENV} must name the command to run on a promotion")
    return command


def registered_model_name() -> str:
    from pipeline.core.params import load_params

    return load_params().mlflow.registered_model_name


def serve(host: str, port: int) -> None:
    verifier = verifier_from_env(registered_model_name())
    runner = ActionRunner(command_from_env())
    server = ThreadingHTTPServer((host, port), make_handler(verifier, runner))
    log(f"listening on http://{host}:{server.server_port} for {verifier.model_name}"
        f"@{verifier.alias}; action: {runner.command[0]}")  # fmt: skip
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def create(url: str, name: str) -> None:
    """Register the webhook on ``MLFLOW_TRACKING_URI``'s server; print its id."""
    secret = secret_from_env()
    from mlflow import MlflowClient

    from pipeline.core.redact import add_secret
    from pipeline.tracking.runs import credentials_to_environment

    add_secret(secret)
    credentials_to_environment()
    webhook = MlflowClient().create_webhook(
        name=name,
        url=url,
        events=[EVENT],
        description="Redeploy the champion (deploy/promotion_hook.py)",
        secret=secret,
    )
    print(f"webhook {webhook.webhook_id} ({name}) sends {EVENT} to {url}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.promotion_hook",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="receive deliveries, run the action")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8765)
    create_parser = commands.add_parser("create", help="create the webhook on a team server")
    create_parser.add_argument("--url", required=True, help="where the receiver listens")
    create_parser.add_argument("--name", default="cifar10-champion")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            serve(args.host, args.port)
        else:
            create(args.url, args.name)
    except HookConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
