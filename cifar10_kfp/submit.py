"""``python -m cifar10_kfp.submit --host URL``: run the compiled pipeline on a KFP cluster.

``--set`` takes params keys (``train.epochs=2``, ``model.reference.dense_units=64``): each changes
its key in the section the compiled pipeline has as a parameter (params.yaml's sections, as JSON
text), and the sections are checked against the params schema before anything is sent, so a typo
or a bad value is one line and exit 2, with no run started. Only the sections changed travel.

``--sweep`` runs the sweep pipeline instead (cifar10_sweep_pipeline.yaml): its trials come from
``--trials FILE`` (a YAML list of params overrides) or ``--grid KEY=V1,V2,...`` (every
combination), each checked with the ``--set`` values against the schema; ``--parallelism N``
caps the trainings at once (the compiled cap otherwise); ``--set mlflow.sweep=NAME`` names it.
"""

from __future__ import annotations

import argparse
import base64
import copy
import difflib
import functools
import http.client
import json
import logging
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from cifar10_kfp.compile import OUTPUT, SWEEP_OUTPUT
from cifar10_kfp.sections import SECTIONS, from_arguments, to_arguments, validated, with_overrides
from cifar10_kfp.trials import (
    TRIALS_PARAMETER,
    check_parallelism,
    check_trials,
    dotted_values,
    grid_trials,
    read_trials_file,
    sweepable_keys,
)
from pipeline.core.errors import ParamsError, PipelineError
from pipeline.core.params import parse_override
from pipeline.core.redact import add_secret, redact, split_userinfo
from stages.cli import add_override_option, call_stage

log = logging.getLogger("pipeline")


def load_package(package: Path) -> list[Any]:
    """The YAML documents of a compiled package (pipeline spec, platform spec), read once.

    libyaml's loader where PyYAML has it: the pure-Python one takes ~1 s for the sweep's YAML.
    """
    stat = package.stat()
    return _load_package(package, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _load_package(package: Path, mtime_ns: int, size: int) -> list[Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return list(yaml.load_all(package.read_text(encoding="utf-8"), Loader=loader))


def pipeline_parameters(package: Path) -> dict[str, Any]:
    """The compiled pipeline's parameters and their defaults (None where it has none)."""
    try:
        spec = load_package(package)[0]
        definitions = spec["root"]["inputDefinitions"]["parameters"]
    except FileNotFoundError:
        raise PipelineError(f"{package} not found; run `make kfp` first") from None
    except (yaml.YAMLError, KeyError, TypeError, IndexError):
        raise PipelineError(f"{package}: not a compiled KFP pipeline") from None
    return {name: spec.get("defaultValue") for name, spec in definitions.items()}


def package_sections(package: Path) -> dict[str, dict[str, Any]]:
    """The params sections the compiled pipeline has as parameters, with their defaults."""
    known = pipeline_parameters(package)
    if set(SECTIONS) - set(known):
        raise PipelineError(f"{package}: compiled from another params schema; run `make kfp`")
    return from_arguments({name: known[name] for name in SECTIONS})


def run_arguments(package: Path, overrides: Sequence[str]) -> dict[str, str]:
    """The run's arguments: the sections ``key=value`` overrides change, checked by the schema
    with the rest of the package's values, each as JSON text.

    Raises ParamsError naming an unknown section, a key the pipeline sets, or a bad value.
    """
    sections = package_sections(package)
    changed: dict[str, Any] = {}
    for override in overrides:
        # The stages' own parser: YAML 1.2, so `1e-3` is a float and `yes` is no boolean.
        key, value = parse_override(override)
        section = key.partition(".")[0]
        if section not in SECTIONS:
            close = difflib.get_close_matches(section, SECTIONS, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ParamsError(
                f"--set {override}: {section} is not a params.yaml section "
                f"({', '.join(SECTIONS)}){hint}"
            )
        if key in PIPELINE_KEYS:
            raise ParamsError(f"--set {override}: {key} is set by the compiled pipeline")
        changed[key] = value
    # The whole set must pass the params schema, as `--set` does for a DVC stage.
    valid = to_arguments(validated(with_overrides(sections, changed)))
    return {name: valid[name] for name in SECTIONS if any(k.split(".")[0] == name for k in changed)}


# Set by the compiled pipeline itself: the GPU request goes with train.device=gpu.
PIPELINE_KEYS = ("train.device",)


def sweep_arguments(
    package: Path, overrides: Sequence[str], trials: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """:func:`run_arguments` plus ``trials``: each trial checked by key and, over the run's
    values, by the schema; duplicates refused (cifar10_kfp.trials.check_trials). A trial
    travels as JSON text, its values typed by the schema."""
    if TRIALS_PARAMETER not in pipeline_parameters(package):
        raise PipelineError(
            f"{package}: not a compiled sweep pipeline (make kfp writes {SWEEP_OUTPUT.name})"
        )
    arguments = run_arguments(package, overrides)
    base = package_sections(package) | from_arguments(arguments)
    sweepable = sweepable_keys(validated(base))

    def validate(trial: dict[str, Any]) -> dict[str, Any]:
        params = validated(with_overrides(base, trial))
        return dotted_values(params.model_dump(by_alias=True), sweepable)

    checked = check_trials(trials, sweepable, validate)
    return arguments | {TRIALS_PARAMETER: [json.dumps(trial) for trial in checked]}


def with_parallelism(package: Path, parallelism: int, folder: Path) -> Path:
    """A copy of ``package`` in ``folder`` whose ParallelFor runs at most ``parallelism``
    iterations at once (KFP fixes the cap at compile time: iteratorPolicy.parallelismLimit)."""
    documents = copy.deepcopy(load_package(package))
    loops = [
        task
        for task in documents[0]["root"]["dag"]["tasks"].values()
        if "parameterIterator" in task
    ]
    if not loops:
        raise PipelineError(f"{package}: no ParallelFor to set --parallelism on")
    for task in loops:
        task["iteratorPolicy"] = {"parallelismLimit": parallelism}
    edited = folder / package.name
    edited.write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")
    return edited


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
    shown = _masked_host(host)
    if not bare.startswith(("http://", "https://")) or not bare.partition("://")[2].strip("/"):
        raise ParamsError(f"--host {shown}: expected an http(s) URL, e.g. http://localhost:8080")
    try:
        # Parsing the port is what raises, on a bad port or an unclosed [IPv6 bracket.
        urllib.parse.urlsplit(bare).port  # noqa: B018
    except ValueError as exc:
        raise ParamsError(
            f"--host {shown}: not a valid URL ({redact(str(exc))}), e.g. http://localhost:8080"
        ) from None
    return bare, None if user is None else BasicAuth(user, password or "")


def _masked_host(host: str) -> str:
    """``host`` for a message: everything after the user up to the last ``@`` masked.

    Independent of URL parsing, which a malformed host (``http://u:pw@[::1``) defeats, so
    ``split_userinfo`` and ``redact`` find no password to hide there.
    """
    scheme, sep, rest = host.partition("://")
    userinfo, at, after = rest.rpartition("@")
    if not (sep and at):
        return redact(host)
    return redact(f"{scheme}://{userinfo.partition(':')[0]}:***@{after}")


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
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
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
    parser.add_argument(
        "--package",
        type=Path,
        help=f"compiled pipeline YAML (default {OUTPUT.name}, with --sweep {SWEEP_OUTPUT.name})",
    )
    parser.add_argument("--experiment", default="cifar10-cnn", help="KFP experiment of the run")
    parser.add_argument("--run-name", help="name of the run (KFP picks one if left out)")
    add_override_option(parser, "override one parameter, e.g. --set train.epochs=2 (repeatable)")
    parser.add_argument(
        "--no-cache", action="store_true", help="rerun every task, ignoring KFP's cache"
    )
    sweep = parser.add_argument_group("sweep (the sweep pipeline: train per trial, best evaluated)")
    sweep.add_argument("--sweep", action="store_true", help="submit the sweep pipeline")
    sweep.add_argument(
        "--trials",
        type=Path,
        help="YAML list of trials, each a mapping of params overrides, e.g. "
        "- {train.learning_rate: 0.002, train.optimizer: adam}",
    )
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="trials: every combination of these values (repeatable), e.g. "
        "--grid train.learning_rate=0.0005,0.001,0.002",
    )
    sweep.add_argument(
        "--parallelism",
        type=int,
        help="trainings at once, each on a GPU of its own (default: the compiled cap, 2)",
    )
    args = parser.parse_args(argv)

    def work() -> None:
        if not args.sweep and (args.trials or args.grid or args.parallelism is not None):
            raise ParamsError("--trials, --grid and --parallelism go with --sweep")
        if args.sweep and bool(args.trials) == bool(args.grid):
            raise ParamsError("--sweep takes its trials from --trials FILE or from --grid")
        if args.parallelism is not None:
            check_parallelism(args.parallelism)
        package = args.package or (SWEEP_OUTPUT if args.sweep else OUTPUT)
        caching = False if args.no_cache else None
        with tempfile.TemporaryDirectory(prefix="kfp-sweep-") as scratch:
            if args.sweep:
                trials = read_trials_file(args.trials) if args.trials else grid_trials(args.grid)
                arguments = sweep_arguments(package, args.overrides, trials)
                if args.parallelism is not None:
                    package = with_parallelism(package, args.parallelism, Path(scratch))
            else:
                arguments = run_arguments(package, args.overrides)
            run_id = submit(args.host, package, arguments, args.experiment, args.run_name, caching)
        host, _ = host_credentials(args.host)
        print(f"run {run_id}: {host.rstrip('/')}/#/runs/details/{run_id}")

    call_stage(work)


if __name__ == "__main__":
    main()
