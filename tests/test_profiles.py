"""Profiles (profiles/NAME.yaml) are first-class: ``--profile NAME`` on the stages, on
``python -m stages.exp_run`` (dvc exp run) and on .ci/retrain.py, validated by the schema.

An unknown name or a bad file is one ``error:`` line and exit 2 before anything runs; the
one end-to-end test runs a real ``dvc exp run`` in a scratch repo.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core import profiles
from pipeline.core.errors import ParamsError
from pipeline.core.profiles import known_profiles, load_profile
from stages.cli import stage_main
from stages.exp_run import dvc_command
from tests.conftest import QUIET_ENV, REPO_ROOT, VENV_BIN

PARAMS = REPO_ROOT / "params.yaml"
KNOWN = ", ".join(known_profiles())
NOT_A_MAPPING = "must be a mapping of params sections, e.g. train: {epochs: 10}"
UNKNOWN = f"--profile fast-resnett: no such profile in profiles/ (known: {KNOWN})"


def write_profile(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def command(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **QUIET_ENV, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_every_committed_profile_loads_as_overrides() -> None:
    assert {"fast", "augment", "fast-resnet"} <= set(known_profiles())
    fast = load_profile("fast", PARAMS)
    assert fast.path == REPO_ROOT / "profiles" / "fast.yaml"
    assert 'train.optimizer="adam"' in fast.overrides and "train.epochs=10" in fast.overrides
    # Nested sections flatten to their dotted key.
    assert 'model.arch="fast_resnet"' in load_profile("fast-resnet", PARAMS).overrides


@pytest.mark.parametrize("name", ["fast-resnett", "../params", "fast/../fast", ""])
def test_an_unknown_name_names_the_known_profiles(name: str) -> None:
    with pytest.raises(ParamsError) as refused:
        load_profile(name, PARAMS)
    assert str(refused.value) == (
        f"--profile {name}: no such profile in profiles/ (known: {KNOWN})"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- train.epochs=2\n", f"{NOT_A_MAPPING} (got a list)"),
        ("", f"{NOT_A_MAPPING} (got an empty file)"),
        ("7\n", f"{NOT_A_MAPPING} (got int 7)"),
        ("train:\n  epochs: 0\n", "train.epochs: must be between 1 and 10000 (got 0)"),
        ("train:\n  epochz: 3\n", "train.epochz: unknown key (got 3)"),
        ("trian:\n  epochs: 3\n", "trian: unknown key (got {'epochs': 3})"),
        ("train:\n  momentum: 0.9\n", "train: momentum and nesterov are for optimizer sgd"),
        ("model:\n  arch: resnet50\n", "model.arch: must be one of"),
        ("train:\n  epochs: 2\n  epochs: 3\n", "duplicate key 'epochs' (lines 2 and 3)"),
        ("train: [unclosed\n", "not valid YAML: line 2:"),
    ],
)  # fmt: skip
def test_a_bad_profile_file_is_one_line_naming_it(tmp_path: Path, text: str, message: str) -> None:
    folder = tmp_path / "profiles"
    path = write_profile(folder, "bad", text)
    with pytest.raises(ParamsError) as refused:
        load_profile("bad", PARAMS, folder)
    assert str(refused.value).startswith(f"{path}: {message}")
    assert "\n" not in str(refused.value)


def test_the_params_file_keeps_its_own_name_in_its_errors(tmp_path: Path) -> None:
    broken = tmp_path / "params.yaml"
    broken.write_text(PARAMS.read_text().replace("epochs: 50", "epochs: 0"))
    with pytest.raises(ParamsError, match=r"^params.yaml: train.epochs: must be between"):
        load_profile("fast-resnet", broken)


def run_stage_main(*argv: str) -> object:
    """The params a stage's run() gets from ``argv``, through the stages' own command line."""
    seen = []
    stage_main("train", "a stage", lambda params: seen.append(params), [], list(argv))
    return seen[0]


def test_a_stage_applies_the_profile_then_the_overrides() -> None:
    params = run_stage_main("--params", str(PARAMS), "--profile", "fast", "--set", "train.epochs=3")
    assert params.train.optimizer == "adam" and params.train.lr_schedule == "one_cycle"
    assert params.train.epochs == 3  # --set wins over the profile's 10


def test_a_stage_refuses_a_bad_profile_file_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(profiles, "PROFILES_DIR", tmp_path / "profiles")
    path = write_profile(tmp_path / "profiles", "listed", "- train: {epochs: 2}\n")
    with pytest.raises(SystemExit) as exited:
        run_stage_main("--params", str(PARAMS), "--profile", "listed")
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        f"error: {path}: must be a mapping of params sections, e.g. train: {{epochs: 10}}"
        " (got a list)\n"
    )


@pytest.mark.parametrize("stage", ["download", "train"])
def test_a_stage_with_a_misspelt_profile_exits_2_in_one_line(stage: str, tmp_path: Path) -> None:
    archive = tmp_path / "archive.tar.gz"
    result = command(
        "-m", f"stages.{stage}", "--profile", "fast-resnett", "--archive", str(archive)
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"error: --profile fast-resnett: no such profile in profiles/ (known: {KNOWN})\n"
    )
    assert not archive.exists()  # nothing ran: download writes here first


def test_exp_run_passes_the_checked_values_to_dvc_with_set_last() -> None:
    argv = ["--params", str(PARAMS), "--profile", "fast", "-S", "train.epochs=3", "--queue"]
    dvc = dvc_command(argv)
    assert dvc[:5] == [sys.executable, "-m", "dvc", "exp", "run"]
    sets = [value for flag, value in zip(dvc[5:-1:2], dvc[6::2], strict=True) if flag == "-S"]
    assert sets == [o if o != "train.epochs=10" else "train.epochs=3" for o in
                    load_profile("fast", PARAMS).overrides]  # fmt: skip
    assert dvc[-1] == "--queue"  # an option of dvc exp run's own, passed on as given


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "fast-resnett"], UNKNOWN),
        (["--profile", "fast", "-S", "train.epochs=0"], "params.yaml: train.epochs: must be betw"),
        (["--set", "train.optimizer=adamw"], "params.yaml: train.optimizer: must be 'rmsprop'"),
    ],
)  # fmt: skip
def test_exp_run_refuses_before_dvc_starts(tmp_path: Path, args: list[str], message: str) -> None:
    # Not a DVC repo: had DVC started, it would say so instead (and exit 253).
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    result = command("-m", "stages.exp_run", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1


def test_retrain_refuses_an_unknown_profile_before_any_work() -> None:
    result = command(".ci/retrain.py", "--profile", "fast-resnett", "--no-push")
    assert result.returncode == 2
    assert result.stderr == (
        f"error: --profile fast-resnett: no such profile in profiles/ (known: {KNOWN})\n"
    )
    assert result.stdout == ""  # "retrain: checking DVC remote ..." never came


@pytest.mark.e2e
def test_exp_run_runs_the_experiment_with_the_profile(tmp_path: Path) -> None:
    """A real ``dvc exp run`` in a scratch repo: its stage reads the profile's values."""
    env = {
        **os.environ, **QUIET_ENV, "PYTHONPATH": str(REPO_ROOT),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com",
    }  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return result

    shutil.copy(PARAMS, tmp_path / "params.yaml")
    (tmp_path / "show.py").write_text(
        "import yaml\n"
        "train = yaml.safe_load(open('params.yaml'))['train']\n"
        "open('out.txt', 'w').write(f\"{train['epochs']} {train['optimizer']}\")\n"
    )
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  show:\n    cmd: python show.py\n    deps: [show.py]\n"
        "    params: [train.epochs, train.optimizer]\n    outs: [out.txt]\n"
    )
    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "init", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "scratch")
    run(sys.executable, "-m", "stages.exp_run", "--profile", "fast", "-S", "train.epochs=3")
    assert (tmp_path / "out.txt").read_text() == "3 adam"
