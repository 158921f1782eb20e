"""Retrain in CI (or by hand): pull, ``dvc repro``, push, and write ``reports/ci_report.md``.

    python .ci/retrain.py [--base REF] [--pull-request] [--profile NAME] [--set KEY=VALUE ...]
                          [--require-gpu]

The GitHub workflow only calls this; all the logic lives here so a person can run the same thing.

Param overrides (``--profile NAME``'s values, then ``--set``, and ``--pull-request`` which means
``register.allow_champion=false``) are validated by the params schema and then written into
``params.yaml`` before ``dvc repro``, exactly what ``dvc exp run -S`` does to the workspace,
minus the experiment commit. So the
``dvc.lock`` this run produces records the params the results were really made with, and the
run-cache entries it pushes are keyed on them: the training stage does not read ``register.*``,
so after the merge, main restores the same trained model from the run-cache and only
``evaluate`` reruns, this time under the champion gate.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The library and ci_report beside this file, however this file was started or imported.
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

import ci_report  # noqa: E402

from pipeline.core.atomic import write_text  # noqa: E402
from pipeline.core.errors import PipelineError  # noqa: E402
from pipeline.core.params import load_params, parse_override, parse_params  # noqa: E402
from pipeline.core.redact import add_secret, redact, split_userinfo  # noqa: E402
from pipeline.tracking.runs import credentials_to_environment  # noqa: E402
from stages.cli import add_override_option, add_profile_option, profile_overrides  # noqa: E402

PR_OVERRIDE = "register.allow_champion=false"
# dvc, and the `python -m stages.X` that dvc.yaml runs, must be this interpreter's environment.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
REPORT = Path("reports/ci_report.md")
# How long the remote may take to answer the check before training (it answers in
# milliseconds when it is well; a dead or firewalled one would otherwise hang or be skipped).
REMOTE_CHECK_SECONDS = float(os.environ.get("DVC_REMOTE_CHECK_SECONDS", "60"))
# The md5 of no bytes: the remote's copy of an empty file. Writing it is the write check, and it
# leaves nothing on the remote that is not a valid cache entry.
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
# DVC's closing advice, not the cause of an error.
DVC_FOOTERS = ("Having any troubles?", "<https://")
# dvc repro's line for each way a stage can go (DVC 3.x wording).
STAGE_LINES = {
    "ran": re.compile(r"^Running stage '([^']+)'"),
    "restored": re.compile(r"^Stage '([^']+)' is cached - skipping run"),
    "unchanged": re.compile(r"^Stage '([^']+)' didn't change"),
}


class RetrainError(PipelineError):
    """A retraining step failed; the message is the one line the user sees."""


@dataclass
class Outcome:
    """What happened to each stage of the pipeline in this run."""

    ran: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def parse_repro(output: str) -> Outcome:
    """Sort the stages named in ``dvc repro`` output into ran / restored / unchanged."""
    outcome = Outcome()
    for line in output.splitlines():
        for kind, pattern in STAGE_LINES.items():
            match = pattern.match(line.strip())
            if match and match.group(1) not in getattr(outcome, kind):
                getattr(outcome, kind).append(match.group(1))
    return outcome


def dvc(*args: str, stream: bool = False) -> str:
    """Run ``dvc ARGS`` in the repo; return stdout, or raise one line from its error output.

    With ``stream`` the output is also echoed as it comes, so CI logs show training progress.
    """
    command = ["dvc", *args]
    try:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if stream else subprocess.PIPE,
            text=True,
        )
    except FileNotFoundError:
        raise RetrainError("dvc not found: run `make setup` and use .venv/bin") from None
    if stream:
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            # DVC quotes remote URLs in its warnings: each line passes the mask first.
            sys.stdout.write(redact(line))
            sys.stdout.flush()
            lines.append(line)
        process.wait()
        out, err = "".join(lines), "".join(lines)
    else:
        out, err = process.communicate()
    if process.returncode != 0:
        raise RetrainError(f"`{' '.join(command)}` failed: {dvc_error(err, process.returncode)}")
    return out


# DVC's refusal to overwrite outputs it has no copy of, followed by their paths, one a line.
UNSAVED_FILES = "Can't remove the following unsaved files without confirmation"


def unsaved_files_error(output: str) -> str | None:
    """One line for DVC's "Can't remove the following unsaved files": which, why, what to do.

    ``mlflow run . -e train`` (or a stage run by hand) writes the stage outputs outside DVC;
    ``dvc repro`` then refuses to replace them and names them on lines of their own, which the
    one-line error would drop.
    """
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if UNSAVED_FILES in line), None)
    if start is None:
        return None
    files = []
    for line in lines[start + 1 :]:
        text = line.strip()
        if not text or text.startswith(("ERROR", "WARNING")) or text.startswith(DVC_FOOTERS):
            break
        path = Path(text)
        with contextlib.suppress(ValueError):
            path = path.relative_to(REPO)
        files.append(path.as_posix())
    shown = ", ".join(files) if files else "(DVC named none)"
    return redact(
        f"outputs not written by DVC would be overwritten: {shown} (left by `mlflow run` or a "
        "stage run by hand?); delete them, or keep them with `dvc commit`, then rerun"
    )


def dvc_error(output: str, returncode: int) -> str:
    """The line of DVC's ``output`` that says what went wrong: its last ``ERROR:`` line, not
    its support link; masked."""
    unsaved = unsaved_files_error(output)
    if unsaved is not None:
        return unsaved
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    causes = [line for line in lines if not line.startswith(DVC_FOOTERS)]
    reason = (errors or causes or [f"exit code {returncode}"])[-1]
    return redact(reason)


def push_run_cache_files(remote: str) -> int:
    """Push the files that local run-cache entries record but ``dvc push`` leaves out; return
    how many were sent.

    DVC 3.67's ``dvc push --run-cache`` sends the entries and the workspace's cached outputs,
    not the ``cache: false`` outputs (metrics, plots) an entry also records. Restoring such an
    entry from the remote (train, preprocess) then fails with "cache files do not exist" and
    the stage reruns. This sends them the same way ``dvc repro --pull`` fetches them.
    """
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        runs = Path(repo.cache.legacy.path) / "runs"
        entries = [(entry.parent.name, entry.name) for entry in runs.glob("*/*/*")]
        local = set()
        for objs in repo.stage_cache.get_used_objs(entries).values():
            for obj in objs:
                cache = repo.cache.legacy if obj.name == "md5-dos2unix" else repo.cache.local
                # Entries pulled from the remote point at files only the remote has.
                if cache.exists(obj.value):
                    local.add(obj)
        transferred = repo.cloud.push(local, remote=remote)
    if transferred.failed:
        raise RetrainError(f"pushing {len(transferred.failed)} run-cache file(s) failed")
    return len(transferred.transferred)


def check_gpu(required: bool) -> str | None:
    """With ``required``, the GPUs the Keras backend sees; none stops the run with one line.

    Asked in a child process, so the backend's start-up chatter stays out of the one line.
    """
    if not required:
        return None
    probe = (
        "from pipeline.core import keras_backend as kb; print(kb.name()); print(*kb.gpu_names())"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=ENV, capture_output=True, text=True
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["?"])[-1]
        raise RetrainError(f"a GPU was required but the backend failed to start: {last}")
    name, _, gpus = result.stdout.strip().partition("\n")
    if not gpus.strip():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        raise RetrainError(
            f"a GPU was required but the {name} backend sees none{hint}: "
            "install with `make setup GPU=1` and check `nvidia-smi`"
        )
    return gpus.strip()


def gpu_requested(params_path: Path, overrides: list[str]) -> bool:
    """True when the effective params ask for ``train.device: gpu``."""
    return load_params(params_path, overrides).train.device == "gpu"


def apply_overrides(params_path: Path, overrides: list[str]) -> None:
    """Validate ``overrides`` with the schema, then write them into params.yaml, comments kept.

    Values are parsed as the stages parse ``--set`` (YAML 1.2: ``1e-3`` is a float), and the
    edited text is validated before it replaces params.yaml: a refused value changes nothing.
    """
    if not overrides:
        return
    load_params(params_path, overrides)  # one-line ParamsError before anything is written
    from ruamel.yaml import YAML  # dvc's own YAML editor (it applies `dvc exp run -S` with it)

    editor = YAML()
    editor.preserve_quotes = True
    document = editor.load(params_path.read_text(encoding="utf-8"))
    for override in overrides:
        key, value = parse_override(override)
        *sections, name = key.split(".")
        node = document
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = value
    buffer = io.StringIO()
    editor.dump(document, buffer)
    # What `dvc repro`'s stages will read: checked here, so they never meet a refused value.
    parse_params(buffer.getvalue(), params_path.name)
    write_text(params_path, buffer.getvalue())


def ensure_remote(url: str | None) -> str:
    """The default DVC remote's name; ``url`` (if given) becomes a local, uncommitted default.

    A ``user:password@`` in ``url`` goes into the remote's ``user`` / ``password`` settings in
    ``.dvc/config.local`` (mode 600; removed again by :func:`forget_credentials`), never into
    its URL: DVC quotes remote URLs in its warnings. Every password of the remote is registered
    with ``redact``.
    """
    if url:
        bare, user, password = split_userinfo(url)
        add_secret(password)
        dvc("remote", "add", "--local", "--force", "--default", "ci", bare)
        if user is not None:
            _set_remote_credentials("ci", user, password)
    try:
        name = dvc("remote", "default").strip()
    except RetrainError:
        raise RetrainError(
            "no default DVC remote: `dvc remote add -d storage s3://BUCKET/PATH` and commit "
            ".dvc/config, or pass --remote-url / set DVC_REMOTE_URL"
        ) from None
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        settings = repo.config["remote"].get(name, {})
    add_secret(split_userinfo(str(settings.get("url", "")))[2])
    for key in ("password", "secret_access_key", "session_token", "token", "sas_token"):
        add_secret(settings.get(key))
    return name


def _set_remote_credentials(name: str, user: str, password: str | None) -> None:
    """Basic-auth settings of remote ``name``, written in this process (not on a command line,
    where ``ps`` would show them)."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo, repo.config.edit("local") as config:
        remote = config["remote"][name]
        remote["user"] = user
        if password is not None:
            remote["password"] = password
        if str(remote.get("url", "")).startswith(("http://", "https://")):
            remote["auth"] = "basic"
    (REPO / ".dvc" / "config.local").chmod(0o600)


def forget_credentials(name: str) -> None:
    """Take the password :func:`ensure_remote` wrote out of ``.dvc/config.local`` again."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo, repo.config.edit("local") as config:
        remote = config.get("remote", {}).get(name)
        if remote is not None:
            remote.pop("password", None)


def check_remote(name: str, write: bool) -> None:
    """Fail in one line, before anything is pulled or trained, on a remote that is unreachable,
    refuses the credentials or (with ``write``) refuses writes; bounded by REMOTE_CHECK_SECONDS.

    DVC itself reports a remote it cannot reach as one whose files are all missing, retrains
    everything and fails only at the push, hours later.
    """
    outcome: list[BaseException | None] = []
    thread = threading.Thread(target=lambda: outcome.append(_probe(name, write)), daemon=True)
    thread.start()
    thread.join(REMOTE_CHECK_SECONDS)
    url = redact(_remote_url(name))
    if not outcome:
        raise RetrainError(
            f"DVC remote '{name}' ({url}) did not answer within {REMOTE_CHECK_SECONDS:g} s: "
            "nothing was pulled or trained"
        )
    error = outcome[0]
    if error is None:
        return
    status = getattr(error, "status", None) or getattr(error, "code", None)
    message = (
        getattr(error, "message", None) or " ".join(str(error).split()) or type(error).__name__
    )
    if status in (401, 407):
        cause = f"refuses the credentials (HTTP {status} {message})"
    elif status in (403, 405) and write:
        cause = f"refuses writes (HTTP {status} {message}): outputs could not be pushed"
    elif isinstance(error, PermissionError) and write:
        cause = f"is not writable ({message}): outputs could not be pushed"
    elif status is not None:
        cause = f"answered HTTP {status} {message}"
    else:
        cause = f"is unreachable ({message})"
    hint = "; use a writable remote, or --no-push" if write and "writ" in cause else ""
    raise RetrainError(
        redact(f"DVC remote '{name}' ({url}) {cause}{hint}; nothing was pulled or trained")
    )


def _probe(name: str, write: bool) -> BaseException | None:
    """None if remote ``name`` answers (and, with ``write``, stores a file), else the error.

    With ``write`` it stores the empty file's cache entry; without, it asks for it. DVC's
    ``exists`` reports an unreachable HTTP remote as a missing file, so a plain HTTP(S) remote
    is asked with urllib instead, where any answer but a refusal counts as reachable.
    """
    try:
        from dvc.repo import Repo

        with Repo(str(REPO)) as repo:
            odb = repo.cloud.get_remote_odb(name)
            path = odb.oid_to_path(EMPTY_MD5)
            if write:
                odb.fs.makedirs(odb.fs.parent(path), exist_ok=True)
                odb.fs.pipe_file(path, b"")
            elif odb.fs.protocol in ("http", "https") or "http" in odb.fs.protocol:
                _http_probe(repo.config["remote"][name])
            else:
                odb.fs.exists(path)
    except BaseException as exc:  # handed back: check_remote explains it in one line
        return exc
    return None


def _http_probe(settings: dict) -> None:
    """HEAD the remote's URL with its basic-auth settings; raise HTTPError for a refusal."""
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(str(settings["url"]).rstrip("/") + "/", method="HEAD")
    if settings.get("user"):
        token = f"{settings['user']}:{settings.get('password', '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=REMOTE_CHECK_SECONDS):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 407):
            raise


def _remote_url(name: str) -> str:
    """The URL of remote ``name`` as configured, or the name if it cannot be read."""
    from dvc.repo import Repo

    try:
        with Repo(str(REPO)) as repo:
            return str(repo.config["remote"][name]["url"])
    except Exception:  # only for the message; the probe reports the real error
        return name


def retrain(args: argparse.Namespace) -> Path:
    """Do the whole run; return the report's path."""
    params_path = REPO / "params.yaml"
    overrides = [
        *profile_overrides(args, params_path),  # a bad profile stops here, in one line
        *args.overrides,
        *([PR_OVERRIDE] if args.pull_request else []),
    ]
    load_params(params_path, overrides)  # bad overrides stop here, before any work
    base_commit = (
        _git("rev-parse", "--short", "--verify", f"{args.base}^{{commit}}") if args.base else None
    )
    gpus = check_gpu(args.require_gpu or gpu_requested(params_path, overrides))
    remote = ensure_remote(args.remote_url)
    try:
        return _retrain(args, overrides, base_commit, gpus, remote, params_path)
    finally:
        if args.remote_url:
            forget_credentials(remote)


def _retrain(
    args: argparse.Namespace,
    overrides: list[str],
    base_commit: str | None,
    gpus: str | None,
    remote: str,
    params_path: Path,
) -> Path:
    """The run past the checks: pull, repro, push, report."""
    print(f"retrain: checking DVC remote '{remote}'", flush=True)
    check_remote(remote, write=args.push)
    print(f"retrain: pulling from DVC remote '{remote}'", flush=True)
    dvc("pull", "--allow-missing")
    apply_overrides(params_path, overrides)
    print("retrain: dvc repro --pull", flush=True)
    # --pull: a stage whose params and deps match a pushed run-cache entry is restored from the
    # remote instead of rerun (plain `dvc pull --run-cache` fetches the entries, not their files).
    outcome = parse_repro(dvc("repro", "--pull", stream=True))
    pushed = ""
    if args.push:
        print(f"retrain: pushing outputs and run-cache to '{remote}'", flush=True)
        pushed = (dvc("push", "--run-cache").strip().splitlines() or [""])[-1]
        extra = push_run_cache_files(remote)
        if extra:
            pushed += f" (+{extra} metrics/plots files of run-cache entries)"
    facts = ci_report.Facts(
        base=args.base,
        base_commit=base_commit,
        head=_git("rev-parse", "--short", "HEAD"),
        # A pull-request checkout is a detached merge commit; Actions names the branch.
        branch=os.environ.get("GITHUB_HEAD_REF") or _git("rev-parse", "--abbrev-ref", "HEAD"),
        pull_request=args.pull_request,
        overrides=overrides,
        ran=outcome.ran,
        restored=outcome.restored,
        unchanged=outcome.unchanged,
        remote=remote,
        pushed=pushed,
        gpus=gpus,
        params_diff=dvc("params", "diff", args.base, "--md") if args.base else "",
        # Every test metric, changed or not: rounded to 4 digits, a tiny change reads as none,
        # and the reviewer still sees the figures side by side.
        metrics_diff=(
            dvc("metrics", "diff", args.base, "--all", "--targets", "reports/metrics.json", "--md")
            if args.base
            else ""
        ),
        ci_run_url=ci_report.ci_run_url(os.environ),
        base_metrics=_committed_json(args.base, "reports/metrics.json") if args.base else None,
    )
    report = REPO / args.report
    write_text(report, ci_report.render(facts, REPO / "reports", REPO / "models"))
    print(f"retrain: report at {args.report}", flush=True)
    return report


def _committed_json(ref: str, path: str) -> dict | None:
    """``path`` as committed at ``ref``, or None where it is not there."""
    result = subprocess.run(
        ["git", "show", f"{ref}:{path}"], cwd=REPO, env=ENV, capture_output=True
    )
    if result.returncode != 0:
        return None
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        return None


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=REPO, env=ENV, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["?"])[-1]
        raise RetrainError(f"`git {' '.join(args)}` failed: {message}")
    return result.stdout.strip()


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python .ci/retrain.py``."""
    parser = argparse.ArgumentParser(
        prog="python .ci/retrain.py",
        description="Pull from the DVC remote, dvc repro, push outputs and run-cache, and write "
        "a markdown report of what changed against a base commit.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--base", help="git ref to diff params and metrics against (e.g. origin/main)"
    )
    parser.add_argument(
        "--pull-request",
        action="store_true",
        help=f"a pull-request run: adds --set {PR_OVERRIDE} (last, so it wins)",
    )
    add_profile_option(parser)
    add_override_option(
        parser, "override a param, written into params.yaml before dvc repro (repeatable)"
    )
    parser.add_argument(
        "--require-gpu",
        action="store_true",
        help="fail unless the backend sees a GPU (also implied by train.device: gpu)",
    )
    parser.add_argument(
        "--remote-url",
        default=os.environ.get("DVC_REMOTE_URL") or None,
        help="DVC remote to use, set as a local default (env DVC_REMOTE_URL); else the "
        "committed default remote",
    )
    # The default lives on the parser, not the flag: ArgumentDefaultsHelpFormatter would print
    # "--no-push ... (default: True)", which reads as "not pushing" (issue 31).
    parser.set_defaults(push=True)
    parser.add_argument(
        "--no-push",
        dest="push",
        action="store_false",
        default=argparse.SUPPRESS,
        help="do not push to the DVC remote (pushing is the default)",
    )
    parser.add_argument("--report", type=Path, default=REPORT, help="where to write the report")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: one ``error:`` line and a non-zero exit on any failure the user can fix."""
    args = build_parser().parse_args(argv)
    # The stages (run by dvc) and ci_report get the bare tracking URI, credentials beside it.
    credentials_to_environment()
    ENV.update({k: os.environ[k] for k in os.environ if k.startswith("MLFLOW_TRACKING_")})
    try:
        retrain(args)
    except PipelineError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
