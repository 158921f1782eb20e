"""The command line every stage shares: ``python -m stages.NAME [--params F] [--profile NAME]
[--set k=v] [paths]``.

Each stage module has the same shape: ``run(params, **paths)`` does the work (Kubeflow components
and tests call it directly) and ``main()`` hands it to :func:`stage_main`. The path options are
declared once here; their defaults are the paths in dvc.yaml, so ``dvc repro`` passes none while
MLproject and Kubeflow pass their own. ``--profile NAME`` applies profiles/NAME.yaml
(pipeline/core/profiles.py) and ``--set`` overrides after it; both go through the same schema as
params.yaml. MLproject passes only what the user gave, through ``--set-given`` (an empty value is
a parameter left out) and ``--set-all`` (several overrides in one string): params.yaml keeps
every other value.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml

from pipeline.core import paths
from pipeline.core.checksums import file_md5
from pipeline.core.errors import ParamsError, PipelineError, UsageError
from pipeline.core.params import Params, flatten_params, load_params
from pipeline.core.profiles import known_profiles, load_profile
from pipeline.core.quiet import VERBOSE_ENV, quiet_third_party, verbose_requested
from pipeline.core.redact import redact

T = TypeVar("T")
# OSErrors that say what is wrong with the machine, each answered with one line.
ENVIRONMENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})

# Every path option a stage may take: keyword of run() -> (default, help).
PATH_OPTIONS: dict[str, tuple[Path, str]] = {
    "archive": (paths.RAW_ARCHIVE, "the CIFAR-10 binary .tar.gz"),
    "prepared_dir": (paths.PREPARED_DIR, "train/val/test.npz and classes.json"),
    "models_dir": (paths.MODELS_DIR, "model.keras and run.json"),
    "reports_dir": (paths.REPORTS_DIR, "metrics, plots and reports"),
    "checkpoints_dir": (paths.CHECKPOINTS_DIR, "per-epoch checkpoints for resuming"),
}


# The path options that name a file; every other one names a folder.
FILE_OPTIONS = frozenset({"archive"})


def build_parser(
    name: str, description: str, path_options: Sequence[str]
) -> argparse.ArgumentParser:
    """The parser of ``python -m stages.<name>``: --params, --set and the named path options."""
    parser = argparse.ArgumentParser(
        prog=f"python -m stages.{name}",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params file to read"
    )
    add_profile_option(parser)
    add_override_option(
        parser,
        "override one param, e.g. --set train.epochs=2 (repeatable, validated like the file)",
    )
    add_override_option(
        parser,
        "like --set, but skipped when VALUE is empty (an MLproject parameter left out)",
        flag="--set-given",
        dest="given",
    )
    add_override_option(
        parser,
        "several --set overrides in one shell-quoted string (MLproject's `set` parameter)",
        flag="--set-all",
        dest="set_all",
        metavar="'KEY=VALUE ...'",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help=f"keep TensorFlow's and MLflow's own logs (or set {VERBOSE_ENV}=1)",
    )
    for option in path_options:
        default, help_text = PATH_OPTIONS[option]
        flag = "--" + option.replace("_", "-")
        parser.add_argument(flag, dest=option, type=Path, default=default, help=help_text)
    return parser


def add_override_option(
    parser: argparse.ArgumentParser,
    help_text: str,
    *,
    flag: str = "--set",
    dest: str = "overrides",
    metavar: str = "KEY=VALUE",
) -> None:
    """A repeatable ``--set KEY=VALUE`` option, collected into ``args.<dest>`` (a list).

    Every command line that takes params overrides (the stages, .ci/retrain.py,
    cifar10_kfp/submit.py) declares it through here, so the flag reads the same everywhere.
    """
    parser.add_argument(
        flag, dest=dest, action="append", default=[], metavar=metavar, help=help_text
    )


def add_profile_option(parser: argparse.ArgumentParser) -> None:
    """``--profile NAME``: a partial params file of profiles/ applied before any ``--set``.

    Declared here for every command line that takes params overrides (the stages,
    stages/exp_run.py, .ci/retrain.py); read with :func:`profile_overrides`.
    """
    parser.add_argument(
        "--profile",
        metavar="NAME",
        help=f"apply profiles/NAME.yaml over the params file, before --set (known: "
        f"{', '.join(known_profiles())})",
    )


def profile_overrides(args: argparse.Namespace, params_file: Path) -> list[str]:
    """The ``key=value`` overrides of ``--profile`` (none without it), validated by the schema
    over ``params_file``: ParamsError (exit 2) for an unknown name or a bad profile."""
    if not args.profile:
        return []
    return load_profile(args.profile, params_file).overrides


def check_path_kinds(paths: dict[str, Path]) -> None:
    """Refuse a folder where a file is expected and a file where a folder is, in one line."""
    for option, path in paths.items():
        flag = "--" + option.replace("_", "-")
        if option in FILE_OPTIONS and path.is_dir():
            raise UsageError(f"{flag} {path}: is a folder, expected a file")
        if option not in FILE_OPTIONS and path.exists() and not path.is_dir():
            raise UsageError(f"{flag} {path}: is a file, expected a folder")


def command_line_overrides(args: argparse.Namespace) -> list[str]:
    """The ``key=value`` overrides of --set, --set-given (unless empty) and --set-all, in order."""
    given = [item for item in args.given if not item.endswith("=")]
    try:
        many = [item for text in args.set_all for item in shlex.split(text)]
    except ValueError as exc:
        raise ParamsError(f"--set-all {' '.join(args.set_all)}: {exc}") from None
    return [*args.overrides, *given, *many]


def stage_main(
    name: str,
    description: str,
    run: Callable[..., Any],
    path_options: Sequence[str],
    argv: Sequence[str] | None = None,
) -> None:
    """Parse the command line, validate params once, call ``run(params, **paths)``, exit cleanly."""
    args = build_parser(name, description, path_options).parse_args(argv)
    path_args = {option: getattr(args, option) for option in path_options}

    def work() -> Any:
        check_path_kinds(path_args)
        # Before the params are read: a dep that changes after this point is caught at the end.
        ground = StageGround.capture(name, args.params) if os.environ.get("DVC_STAGE") else None
        # The profile first, so --set wins over it; both checked before anything runs.
        overrides = [*profile_overrides(args, args.params), *command_line_overrides(args)]
        params = load_params(args.params, overrides)
        result = run(params, **path_args)
        if ground is not None:
            ground.check(params, overrides)
        return result

    call_stage(work, verbose=args.verbose)


# Folder deps are hashed like DVC does with the project's .dvcignore: without bytecode.
IGNORED_PARTS = frozenset({"__pycache__"})
IGNORED_SUFFIXES = frozenset({".pyc"})


@dataclass
class StageGround:
    """What a stage run by DVC stands on: its params keys and the md5 of every dep file.

    DVC records a stage's params and deps as they are on disk once the command has exited, not
    as they were when it started. ``dvc exp run -S`` writes params.yaml before it takes DVC's
    lock, so a second experiment started during the first one's training rewrites params.yaml
    and fails, and the first then records the second's params with its own model in dvc.lock
    and in the run-cache (issue 25). A stage that finds its ground changed at the end fails
    instead, so DVC records nothing.
    """

    stage: str
    params_file: Path
    params_keys: list[str]
    dep_paths: list[Path]
    deps: dict[str, str | None]

    @classmethod
    def capture(cls, stage: str, params_file: Path) -> StageGround | None:
        """The stage's ground per ./dvc.yaml (DVC runs stages there); None if it lists no such
        stage."""
        try:
            declared = yaml.safe_load(Path("dvc.yaml").read_text(encoding="utf-8"))["stages"][stage]
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            return None
        keys: list[str] = []
        for entry in declared.get("params") or []:
            # `- train` reads params.yaml; `- other.yaml: [keys]` names another file, not ours.
            if isinstance(entry, str):
                keys.append(entry)
            elif isinstance(entry, dict) and Path(params_file).name in entry:
                keys += entry[Path(params_file).name] or []
        dep_paths = [Path(str(dep)) for dep in declared.get("deps") or []]
        return cls(stage, Path(params_file), keys, dep_paths, _deps_md5s(dep_paths))

    def check(self, used: Params, overrides: list[str]) -> None:
        """Raise a one-line PipelineError if a param the stage used or a dep changed since
        ``capture``."""
        try:
            now = flatten_params(load_params(self.params_file, overrides))
        except ParamsError as exc:
            self._changed(f"{self.params_file} no longer loads ({exc})")
        before = flatten_params(used)
        for key in sorted(before):
            if self._is_stage_param(key) and now.get(key) != before[key]:
                self._changed(
                    f"{self.params_file}: {key} changed from {json.dumps(before[key])} to "
                    f"{json.dumps(now.get(key))}"
                )
        now_deps = _deps_md5s(self.dep_paths)
        for name in sorted(self.deps.keys() | now_deps.keys()):
            if self.deps.get(name) != now_deps.get(name):
                if name not in self.deps:
                    what = "appeared"
                else:
                    what = "was deleted" if now_deps.get(name) is None else "was rewritten"
                self._changed(f"its input {name} {what}")

    def _is_stage_param(self, key: str) -> bool:
        if not self.params_keys:
            return True  # a stage that lists no keys: every param counts
        return any(key == name or key.startswith(name + ".") for name in self.params_keys)

    def _changed(self, what: str) -> NoReturn:
        raise PipelineError(
            f"{what} while stage {self.stage} ran (another `dvc exp run`, a checkout or an "
            "edit?): its outputs come from what it started with, so it fails rather than let "
            "DVC record them under the new values; rerun it"
        )


def _deps_md5s(deps: list[Path]) -> dict[str, str | None]:
    """``{path: md5}`` of each dep file and of every file under each dep folder; None for a
    missing file."""
    md5s: dict[str, str | None] = {}
    for dep in deps:
        if not dep.is_dir():
            md5s[dep.as_posix()] = file_md5(dep) if dep.is_file() else None
            continue
        for path in sorted(dep.rglob("*")):
            ignored = IGNORED_PARTS & set(path.parts) or path.suffix in IGNORED_SUFFIXES
            if path.is_file() and not ignored:
                md5s[path.as_posix()] = file_md5(path)
    return md5s


def call_stage(work: Callable[[], T], verbose: bool = False) -> T:
    """Run a stage's work the way every entry point does (DVC, MLproject, Kubeflow components).

    Third-party logs are quieted first (pipeline/core/quiet.py) unless ``verbose`` or
    CIFAR10_VERBOSE is set. A PipelineError becomes one ``error:`` line on stderr and its exit
    code (2 for params); so does a permission, read-only or full-disk OSError (exit 1). Ctrl-C
    or SIGTERM exits 130.
    Anything else is a bug and keeps its traceback.
    """
    # A SIGTERM (kill, CI cancel, Kubernetes) unwinds like Ctrl-C, so open MLflow runs get closed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    quiet_third_party(verbose_requested(verbose))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return work()
    except PipelineError as exc:
        # Every message passes the mask: a tracking URI may carry a password.
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        # The machine's fault, not the code's: a folder mounted read-only or owned by another
        # user (a root-created volume in the image), or a full disk.
        where = f" {exc.filename}" if exc.filename else ""
        hint = ""
        if exc.errno in (errno.EACCES, errno.EPERM):
            hint = f"; this process runs as uid {os.getuid()}: make the folder writable by it"
        print(f"error: cannot write{where}: {exc.strerror}{hint}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def check_params_main(argv: Sequence[str] | None = None) -> None:
    """``python -m stages.cli [--params F]``: read a params file the way the stages do, first.

    DVC parses params.yaml itself, with a YAML reader that expands aliases, before any stage
    runs: an alias bomb makes ``dvc repro``, ``dvc status`` and ``dvc exp run`` hang silently.
    ``make run``/``make exp``/``make exps``/``make plots`` call this before DVC, so such a file
    is one ``error:`` line (exit 2) in well under a second instead.
    """
    parser = argparse.ArgumentParser(
        prog="python -m stages.cli",
        description="check a params file with the project's hardened reader before DVC reads it",
    )
    parser.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params file to check"
    )
    args = parser.parse_args(argv)
    call_stage(lambda: load_params(args.params))


if __name__ == "__main__":
    check_params_main()
