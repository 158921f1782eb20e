"""``python -m cifar10_kfp.submit --host URL``: run the compiled pipeline on a KFP cluster.

``--set`` takes params keys (``train.epochs=2``) or pipeline parameter names (``train_epochs=2``);
they are checked against the compiled pipeline's parameters and the params schema before anything
is sent, so a typo or a bad value is one line and exit 2, with no run started.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from cifar10_kfp.compile import OUTPUT
from cifar10_kfp.runtime import dotted_name, flat_name, stage_params, to_pipeline_value
from pipeline.core.errors import ParamsError, PipelineError
from pipeline.core.params import parse_override
from pipeline.core.redact import add_secret, redact, split_userinfo
from stages.cli import add_override_option, call_stage

log = logging.getLogger("pipeline")


def pipeline_parameters(package: Path) -> dict[str, Any]:
    """The compiled pipeline's parameters and their defaults (None where it has none)."""
    try:
        spec = next(yaml.safe_load_all(package.read_text(encoding="utf-8")))
        definitions = spec["root"]["inputDefinitions"]["parameters"]
    except FileNotFoundError:
        raise PipelineError(f"{package} not found; run `make kfp` first") from None
    except (yaml.YAMLError, KeyError, TypeError, StopIteration):
        raise PipelineError(f"{package}: not a compiled KFP pipeline") from None
    return {name: spec.get("defaultValue") for name, spec in definitions.items()}


def run_arguments(package: Path, overrides: Sequence[str]) -> dict[str, Any]:
    """The run's arguments: each ``key=value`` override checked by name and by the schema.

    Raises ParamsError naming an unknown parameter (with the closest known one) or a bad value.
    """
    known = pipeline_parameters(package)
    arguments: dict[str, Any] = {}
    for override in overrides:
        # The stages' own parser: YAML 1.2, so `1e-3` is a float and `yes` is no boolean.
        key, value = parse_override(override)
        name = flat_name(key) if "." in key else key
        struct, _, inner = name.partition(".")
        if inner and isinstance(known.get(struct), dict):
            # One key of a nested section (model.reference.dense_units=32): the section's
            # struct parameter with that key changed.
            name, value = struct, _with_key(arguments.get(struct, known[struct]), inner, value)
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ParamsError(f"--set {override}: unknown pipeline parameter {name}{hint}")
        arguments[name] = value
    # The whole set must pass the params schema, as `--set` does for a DVC stage.
    values = known | arguments
    params, _ = stage_params(values)
    valid = params.model_dump(by_alias=True)
    typed = {}
    for name in arguments:
        section, _, field = dotted_name(name).partition(".")
        typed[name] = to_pipeline_value(f"{section}.{field}", valid[section][field])
    return typed


def _with_key(struct: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of ``struct`` with the key at ``dotted`` (``a.b``) set to ``value``."""
    first, _, rest = dotted.partition(".")
    inner = struct.get(first)
    changed = _with_key(inner, rest, value) if rest and isinstance(inner, dict) else value
    return {**struct, first: changed}


def submit(
    host: str,
    package: Path,
    arguments: dict[str, Any],
    experiment: str,
    run_name: str | None,
    enable_caching: bool | None,
) -> str:
    """Create a run of ``package`` on the KFP API at ``host``; return its run id.

    A ``user:password@`` in ``host`` is sent as HTTP basic auth (a cluster behind a proxy that
    asks for it), never as part of the URL, and never shown.
    """
    import kfp

    host, credentials = host_credentials(host)
    _check_reachable(host, credentials)
    try:
        client = kfp.Client(host=host, credentials=credentials)
        run = client.create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            run_name=run_name,
            experiment_name=experiment,
            enable_caching=enable_caching,
        )
    except Exception as exc:  # the KFP client raises many types for an unreachable/refusing API
        reason = " ".join(redact(str(exc)).split())[:300] or type(exc).__name__
        raise PipelineError(f"cannot submit to Kubeflow Pipelines at {host}: {reason}") from None
    return run.run_id


# kfp.Client(credentials=...) only calls refresh_api_key_hook (kfp's TokenCredentialsBase
# interface); not subclassed, so --help and a bad --set answer without importing kfp/kubernetes.
class BasicAuth:
    """KFP client credentials that send ``Authorization: Basic ...`` with every request."""

    def __init__(self, user: str, password: str) -> None:
        self.header = base64.b64encode(f"{user}:{password}".encode()).decode()

    def refresh_api_key_hook(self, config: Any) -> None:
        """Called by the generated API client before each request: set the header's value."""
        config.api_key["authorization"] = self.header
        config.api_key_prefix["authorization"] = "Basic"


def host_credentials(host: str) -> tuple[str, BasicAuth | None]:
    """``host`` without its ``user:password@``, and those as basic-auth credentials (or None).

    The password is registered with ``redact``, so no message shows it. A host the KFP client
    could not use (not http(s)) is refused here, in one line with the password masked.
    """
    bare, user, password = split_userinfo(host.strip())
    add_secret(password)
    if not bare.startswith(("http://", "https://")) or not bare.partition("://")[2].strip("/"):
        raise ParamsError(
            f"--host {redact(host)}: expected an http(s) URL, e.g. http://localhost:8080"
        )
    return bare, None if user is None else BasicAuth(user, password or "")


def _check_reachable(host: str, credentials: BasicAuth | None, timeout_s: float = 10.0) -> None:
    """Fail in seconds on an API nobody answers (the KFP client retries for ~25 s, loudly).

    Any HTTP answer counts as reachable: a cluster behind a login answers 302 or 401 here
    (the KFP client may bring a cookie or token of its own), unless the credentials were ours.
    """
    request = urllib.request.Request(host.rstrip("/") + "/apis/v2beta1/healthz")
    if credentials is not None:
        request.add_header("Authorization", f"Basic {credentials.header}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read(64)
    except urllib.error.HTTPError as exc:
        # With credentials of our own, a refusal is theirs: say so now, not after the KFP
        # client's five retries and their tracebacks.
        if credentials is not None and exc.code in (401, 403):
            raise PipelineError(
                f"cannot submit to Kubeflow Pipelines at {host}: HTTP {exc.code} {exc.reason} "
                "(check the user and password in --host)"
            ) from None
        return
    except (urllib.error.URLError, OSError, ValueError) as exc:
        # http.client.InvalidURL (a ValueError) quotes the whole URL: mask it.
        reason = redact(str(getattr(exc, "reason", exc)))
        raise PipelineError(
            f"cannot submit to Kubeflow Pipelines at {host}: unreachable ({reason})"
        ) from None


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m cifar10_kfp.submit``."""
    parser = argparse.ArgumentParser(
        prog="python -m cifar10_kfp.submit",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--host",
        required=True,
        help="KFP API endpoint, e.g. http://localhost:8080; a user:password@ in it is sent as "
        "basic auth",
    )
    parser.add_argument("--package", type=Path, default=OUTPUT, help="compiled pipeline YAML")
    parser.add_argument("--experiment", default="cifar10-cnn", help="KFP experiment of the run")
    parser.add_argument("--run-name", help="name of the run (KFP picks one if left out)")
    add_override_option(parser, "override one parameter, e.g. --set train.epochs=2 (repeatable)")
    parser.add_argument(
        "--no-cache", action="store_true", help="rerun every task, ignoring KFP's cache"
    )
    args = parser.parse_args(argv)

    def work() -> None:
        arguments = run_arguments(args.package, args.overrides)
        caching = False if args.no_cache else None
        run_id = submit(args.host, args.package, arguments, args.experiment, args.run_name, caching)
        host, _ = host_credentials(args.host)
        print(f"run {run_id}: {host.rstrip('/')}/#/runs/details/{run_id}")

    call_stage(work)


if __name__ == "__main__":
    main()
