"""The CI retrain command (.ci/retrain.py) in scratch git repos with a local DVC remote.

The team's setup, for real: a bare "origin" git repo, a folder as the DVC remote, one SQLite
MLflow store shared by every clone (standing in for the tracking server), and each CI run in a
fresh clone, as on a runner whose checkout starts clean. Tiny archive, one epoch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from pipeline.core.redact import redact_uri
from tests.cifar_archive import build_archive
from tests.conftest import REPO_ROOT, free_port
from tests.test_pipeline_dvc import Repo, project_files
from tests.test_secrets import SECRET_URL, ReadOnlyRemote, assert_no_secret, loopback

sys.path.insert(0, str(REPO_ROOT / ".ci"))
import ci_report

# End to end: CI retraining in real DVC repos with a real remote (make check leaves it out).
pytestmark = pytest.mark.e2e

ALL_STAGES = {"download", "preprocess", "train", "evaluate"}
MODEL = "cifar10-cnn"


@dataclass
class Team:
    """Where everything shared lives."""

    root: Path
    origin: Path
    remote: Path
    tracking_uri: str

    def clone(self, name: str, branch: str = "main") -> Repo:
        """A fresh clone of origin at ``branch``, as a CI checkout or a colleague's laptop."""
        target = self.root / name
        subprocess.run(
            ["git", "clone", "-q", "-b", branch, str(self.origin), str(target)], check=True
        )
        repo = Repo(target)
        repo.env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        return repo

    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(tracking_uri=self.tracking_uri)

    def aliases(self) -> dict[str, str]:
        aliases = self.client().get_registered_model(MODEL).aliases
        return {alias: str(version) for alias, version in aliases.items()}

    def versions(self) -> list[str]:
        found = self.client().search_model_versions(f"name='{MODEL}'")
        return sorted((str(v.version) for v in found), key=int)

    def run_ids(self) -> set[str]:
        client = self.client()
        experiment = client.get_experiment_by_name(MODEL)
        return {run.info.run_id for run in client.search_runs([experiment.experiment_id])}

    def remote_files(self) -> set[str]:
        return {str(p.relative_to(self.remote)) for p in self.remote.rglob("*") if p.is_file()}


@dataclass
class CiRun:
    """One run of the retrain command in its own clone."""

    repo: Repo
    stdout: str
    report: str

    def ran(self) -> set[str]:
        """Stages that DVC itself said it ran (the command streams dvc repro's output)."""
        return {
            line.split("'")[1]
            for line in self.stdout.splitlines()
            if line.startswith("Running stage")
        }

    def restored(self) -> set[str]:
        """Stages DVC restored from the run-cache instead of running."""
        return {
            line.split("'")[1]
            for line in self.stdout.splitlines()
            if line.startswith("Stage '") and "is cached - skipping run" in line
        }

    def registry(self) -> dict:
        return json.loads((self.repo.root / "reports" / "registry.json").read_text())

    def model_md5(self) -> str:
        return md5(self.repo.root / "models" / "model.keras")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def retrain(repo: Repo, *args: str) -> CiRun:
    result = repo.run(sys.executable, ".ci/retrain.py", *args)
    report = (repo.root / "reports" / "ci_report.md").read_text()
    return CiRun(repo, result.stdout + result.stderr, report)


def commit_results(repo: Repo, message: str) -> None:
    """What a person does with CI's results: commit dvc.lock and the git-tracked reports."""
    repo.run("git", "add", "dvc.lock", "params.yaml", "reports")
    repo.run("git", "commit", "-qm", message)
    repo.run("git", "push", "-q", "origin", "HEAD")


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Team:
    """origin holds the tiny project with a local DVC remote; main has trained results on it."""
    root = tmp_path_factory.mktemp("ci")
    work = Repo(root / "work")
    for name in project_files():
        (work.root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, work.root / name)
    archive = root / "cifar-10-binary.tar.gz"
    build_archive(archive, per_batch=60, n_test=50)
    work.set_params(
        data__url=str(archive),
        data__md5=md5(archive),
        preprocess__val_size=50,
        preprocess__max_train_images=200,
        train__epochs=1,
        train__batch_size=50,
        register__min_accuracy=0.0,
    )
    work.run("git", "init", "-q", "-b", "main")
    work.run("dvc", "remote", "add", "-d", "storage", str(root / "remote"))
    work.run("git", "add", "-A")
    work.run("git", "commit", "-qm", "the project, tiny")
    origin = root / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work.root), str(origin)], check=True)

    store = root / "mlflow"
    store.mkdir()
    tracking_uri = f"sqlite:///{store / 'mlflow.db'}"
    # As on a tracking server, artifacts live beside the store, not in whichever clone ran first.
    mlflow.MlflowClient(tracking_uri=tracking_uri).create_experiment(
        MODEL, artifact_location=(store / "artifacts").as_uri()
    )
    team = Team(root, origin, root / "remote", tracking_uri)

    # main's first CI run (a push): everything trains, v1 becomes champion; someone commits it.
    base = retrain(team.clone("ci-main-0"), "--base", "HEAD")
    assert base.ran() == ALL_STAGES, base.report
    # Promoted: no challenger (a promotion removes the candidate alias).
    assert team.aliases() == {"champion": "1"}
    commit_results(base.repo, "results of the first training")
    return team


@pytest.fixture(scope="module")
def pr_run(team: Team) -> CiRun:
    """A pull request changes the learning rate; CI retrains it in a fresh clone."""
    laptop = team.clone("laptop")
    laptop.run("git", "checkout", "-qb", "faster-lr")
    laptop.set_params(train__learning_rate=0.002)
    laptop.run("git", "commit", "-qam", "try a larger learning rate")
    laptop.run("git", "push", "-q", "origin", "faster-lr")
    return retrain(team.clone("ci-pr-1", "faster-lr"), "--base", "origin/main", "--pull-request")


def test_pull_request_retrains_only_what_changed_and_pushes(team: Team, pr_run: CiRun) -> None:
    assert pr_run.ran() == {"train", "evaluate"}, pr_run.stdout
    for row in ("| train | **ran** |", "| evaluate | **ran** |", "| download | unchanged |",
                "| preprocess | unchanged |"):  # fmt: skip
        assert row in pr_run.report
    assert len(team.run_ids()) == 2, "one MLflow run for main's training, one for the PR's"

    # The new model and the run-cache entries are on the remote.
    remote = team.remote_files()
    model_md5 = pr_run.model_md5()
    assert f"files/md5/{model_md5[:2]}/{model_md5[2:]}" in remote
    lock = pr_run.repo.root / "dvc.lock"
    assert "allow_champion: false" in lock.read_text(), "dvc.lock records the PR override"
    run_cache = [name for name in remote if name.startswith("runs/")]
    assert len(run_cache) >= 4, "run-cache of main's stages and of the PR's training"


def test_pull_request_report_and_registry(team: Team, pr_run: CiRun) -> None:
    registry = pr_run.registry()
    assert registry["decision"] == "challenger_only"
    assert registry["version"] == "2" and registry["created"]
    assert team.aliases() == {"champion": "1", "challenger": "2"}, "champion unchanged"

    report = pr_run.report
    assert "pull request: challenger only" in report
    assert "**challenger_only**: register.allow_champion is false (champion v1)" in report
    params_rows = [line for line in report.splitlines() if line.startswith("| params.yaml")]
    assert any("train.learning_rate" in row and "0.001" in row and "0.002" in row
               for row in params_rows), report  # fmt: skip
    assert any("register.allow_champion" in row for row in params_rows), report
    # The metrics diff has main's committed accuracy beside the PR's.
    base_metrics = json.loads(
        subprocess.run(
            ["git", "-C", str(team.origin), "show", "main:reports/metrics.json"],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    new_metrics = json.loads((pr_run.repo.root / "reports" / "metrics.json").read_text())
    base, new = base_metrics["accuracy"], new_metrics["accuracy"]
    assert f"Test accuracy **{new:.4f}** (base {base:.4f}, {new - base:+.4f})" in report
    # DVC's own diff table, against the base's committed metrics.
    cells = [[cell.strip() for cell in line.split("|")[1:-1]] for line in report.splitlines()]
    loss = next(row for row in cells if row[:2] == ["reports/metrics.json", "loss"])
    assert loss[2:4] == [str(round(base_metrics["loss"], 5)), str(round(new_metrics["loss"], 5))]
    assert "![Confusion matrix](confusion_matrix.png)" in report
    assert (pr_run.repo.root / "reports" / "confusion_matrix.png").stat().st_size > 1000
    assert "| **airplane** |" in report, "the confusion matrix as a table, too"
    run_id = json.loads((pr_run.repo.root / "models" / "run.json").read_text())["run_id"]
    assert f"MLflow run: `{run_id}`" in report
    assert "- model: trained in this run; 1 epoch(s) in" in report
    assert "- device: cpu" in report


@pytest.fixture(scope="module")
def pr_rerun(team: Team, pr_run: CiRun) -> tuple[CiRun, set[str]]:
    """CI runs again on the same pull request (another push, a re-run): a fresh clone again."""
    runs_before = team.run_ids()
    return retrain(
        team.clone("ci-pr-2", "faster-lr"), "--base", "origin/main", "--pull-request"
    ), runs_before


def test_second_run_trains_nothing(team: Team, pr_run: CiRun, pr_rerun: tuple) -> None:
    rerun, runs_before = pr_rerun
    assert rerun.ran() == {"evaluate"}, rerun.stdout
    assert rerun.restored() == {"train"}, "restored from the pushed run-cache"
    assert rerun.model_md5() == pr_run.model_md5()
    assert team.run_ids() == runs_before, "no new MLflow run"
    assert team.versions() == ["1", "2"] and team.aliases()["champion"] == "1"
    assert rerun.registry()["decision"] == "challenger_only"
    assert "restored from the run-cache, trained by an earlier run" in rerun.report


@pytest.fixture(scope="module")
def main_run(team: Team, pr_rerun: tuple) -> CiRun:
    """The pull request is merged (params only, no results); CI runs on main."""
    laptop = Repo(team.root / "laptop")
    laptop.run("git", "checkout", "-q", "main")
    laptop.run("git", "pull", "-q", "origin", "main")
    before = laptop.run("git", "rev-parse", "HEAD").stdout.strip()
    laptop.run("git", "merge", "-q", "--no-ff", "-m", "merge faster-lr", "faster-lr")
    laptop.run("git", "push", "-q", "origin", "main")
    return retrain(team.clone("ci-main-1"), "--base", before)


def test_main_restores_the_pr_model_and_applies_the_gate(
    team: Team, pr_run: CiRun, main_run: CiRun
) -> None:
    assert main_run.ran() == {"evaluate"}, main_run.stdout
    assert main_run.restored() == {"train"}
    assert main_run.model_md5() == pr_run.model_md5()
    registry = main_run.registry()
    assert registry["version"] == "2" and not registry["created"]
    assert registry["decision"] in {"promoted", "kept"}, registry
    # A promoted challenger loses the alias; a kept one still holds it.
    expected = (
        {"champion": "2"}
        if registry["decision"] == "promoted"
        else {"champion": "1", "challenger": "2"}
    )
    assert team.aliases() == expected
    assert "champion gate applies" in main_run.report


def test_fresh_clone_and_dvc_pull_reproduce_without_training(team: Team, main_run: CiRun) -> None:
    commit_results(main_run.repo, "results of faster-lr on main")
    runs_before = team.run_ids()
    colleague = team.clone("colleague")
    colleague.run("dvc", "pull")
    status = colleague.run("dvc", "status").stdout
    assert "up to date" in status, status
    assert md5(colleague.root / "models" / "model.keras") == main_run.model_md5()
    assert team.run_ids() == runs_before


def test_bad_override_is_one_line_and_changes_nothing(team: Team) -> None:
    repo = team.clone("ci-bad")
    before = (repo.root / "params.yaml").read_text()
    result = subprocess.run(
        [sys.executable, ".ci/retrain.py", "--set", "train.epochs=0"],
        cwd=repo.root, env=repo.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: params.yaml: train.epochs: must be between 1 and 10000 (got 0)"
    ]
    assert (repo.root / "params.yaml").read_text() == before
    assert not (repo.root / "data").exists(), "nothing pulled"


def test_require_gpu_without_one_fails_fast(team: Team) -> None:
    repo = team.clone("ci-nogpu")
    result = subprocess.run(
        [sys.executable, ".ci/retrain.py", "--require-gpu"],
        cwd=repo.root, env={**repo.env, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: a GPU was required but the tensorflow backend sees none")
    assert not (repo.root / "data").exists(), "nothing pulled"


def test_credentials_are_masked_in_links() -> None:
    assert (
        redact_uri("https://bob:s3cret@mlflow.example.com:5000/x?token=abc")
        == "https://bob:***@mlflow.example.com:5000/x?***"
    )
    link = ci_report.mlflow_run_link(
        {"run_id": "r1", "experiment_id": "7", "tracking_uri": "https://mlflow.example.com/"}
    )
    assert link == "[r1](https://mlflow.example.com/#/experiments/7/runs/r1)"
    secret = ci_report.mlflow_run_link(
        {"run_id": "r1", "experiment_id": "7", "tracking_uri": "https://u:p@h.example.com"}
    )
    assert "u:p" not in secret and "u:***@h.example.com" in secret


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """The project in a fresh git repo, never trained: for runs that must stop before training."""
    repo = Repo(tmp_path_factory.mktemp("ci-scratch"))
    for name in project_files():
        (repo.root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, repo.root / name)
    repo.run("git", "init", "-q", "-b", "main")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "the project")
    return repo


def retrain_against(repo: Repo, remote_url: str) -> subprocess.CompletedProcess[str]:
    """``.ci/retrain.py --remote-url URL`` in ``repo``, which must stop before any work."""
    result = subprocess.run(
        [sys.executable, ".ci/retrain.py", "--remote-url", remote_url],
        cwd=repo.root, env=repo.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert_no_secret(result.stdout + result.stderr, "retrain's output")
    assert_no_secret((repo.root / ".dvc" / "config.local").read_text(), ".dvc/config.local")
    assert not (repo.root / "data").exists(), "nothing pulled or trained"
    return result


def test_unreachable_remote_stops_before_training(scratch: Repo) -> None:
    port = free_port()
    result = retrain_against(scratch, f"http://ci:{SECRET_URL}@127.0.0.1:{port}/remote")
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        f"error: DVC remote 'ci' (http://127.0.0.1:{port}/remote) is unreachable ("
    ), line
    assert "nothing was pulled or trained" in line


def test_read_only_remote_names_the_cause(scratch: Repo) -> None:
    with loopback(ReadOnlyRemote) as (port, seen):
        result = retrain_against(scratch, f"http://ci:{SECRET_URL}@127.0.0.1:{port}/remote")
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"DVC remote 'ci' (http://127.0.0.1:{port}/remote) refuses writes (HTTP 405" in line
    assert "use a writable remote, or --no-push" in line and "dvc.org" not in line
    assert seen.requests, "the remote was asked"


def test_remote_refusing_the_credentials_says_so(scratch: Repo) -> None:
    with loopback(ReadOnlyRemote) as (port, _):
        result = retrain_against(scratch, f"http://ci:not-it@127.0.0.1:{port}/remote")
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "refuses the credentials (HTTP 401" in line, line
    assert "not-it" not in line
