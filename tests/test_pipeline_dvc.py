"""The whole pipeline under DVC, in a temporary copy of the repo: reruns only what changed."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.cifar_archive import build_archive
from tests.conftest import QUIET_ENV, REPO_ROOT, VENV_BIN

# End to end: real `dvc repro` and `dvc exp run` in a copy of the project.
pytestmark = pytest.mark.e2e

GIT_ENV = {
    "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com",
}  # fmt: skip


# The files plots/offline_template.py inlines, as `make plots` unpacks them.
OFFLINE_SCRIPTS = (
    "vega-5.20.2/build/vega.min.js",
    "vega-lite-5.2.0/build/vega-lite.min.js",
    "vega-embed-6.18.2/build/vega-embed.min.js",
)


def vega_specs(page: str) -> dict[str, dict]:
    """The Vega-Lite specs embedded in a ``dvc plots show`` page, by title."""
    specs = {}
    for match in re.finditer(r"var spec = (\{.*?\});\s*vegaEmbed\(", page, flags=re.S):
        spec = json.loads(match.group(1))
        title = spec.get("title")
        specs[title["text"] if isinstance(title, dict) else title] = spec
    return specs


def project_files() -> list[str]:
    """Files a clone would have: tracked plus new, not ignored."""
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [name for name in listing.split("\0") if name and (REPO_ROOT / name).is_file()]


class Repo:
    """A scratch copy of the project with its own git, DVC cache and MLflow store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # No MLFLOW_TRACKING_URI: stages must fall back to the copy's own mlflow.db.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        self.env = {**env, **QUIET_ENV, **GIT_ENV, "PATH": f"{VENV_BIN}:{env['PATH']}"}

    def run(
        self, *cmd: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            cmd, cwd=self.root, env={**self.env, **(env or {})}, capture_output=True, text=True,
            timeout=900,
        )  # fmt: skip
        if check:
            assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def repro(self, *targets: str) -> set[str]:
        """Run ``dvc repro`` and return the names of the stages that actually ran."""
        out = self.run("dvc", "repro", *targets).stdout
        return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}

    def set_params(self, **changes: object) -> None:
        params = yaml.safe_load((self.root / "params.yaml").read_text())
        for key, value in changes.items():
            section, name = key.split("__")
            params[section][name] = value
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    root = tmp_path_factory.mktemp("repo")
    for name in project_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, root / name)
    repo = Repo(root)
    archive = tmp_path_factory.mktemp("archive") / "cifar-10-binary.tar.gz"
    build_archive(archive, per_batch=60, n_test=50)
    repo.archive = archive
    repo.set_params(
        data__url=str(archive),
        data__md5=hashlib.md5(archive.read_bytes()).hexdigest(),
        preprocess__val_size=50,
        preprocess__max_train_images=200,
        train__epochs=2,
        train__batch_size=50,
        register__min_accuracy=0.0,
    )
    repo.run("git", "init", "-q")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "scratch copy")
    return repo


ALL_STAGES = {"download", "preprocess", "train", "evaluate"}


def workspace_client(repo: Repo) -> mlflow.MlflowClient:
    """A client of the copy's own (default) store: ``mlflow.db`` in its root."""
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo.root / 'mlflow.db'}")


def registry_state(repo: Repo) -> tuple[list[str], dict[str, str]]:
    """(version numbers, alias -> version) of the registered model in the copy's store."""
    client = workspace_client(repo)
    versions = sorted(str(v.version) for v in client.search_model_versions("name='cifar10-cnn'"))
    aliases = client.get_registered_model("cifar10-cnn").aliases
    return versions, {alias: str(version) for alias, version in aliases.items()}


def test_repro_runs_everything_then_nothing(repo: Repo) -> None:
    assert repo.repro() == ALL_STAGES
    assert repo.repro() == set(), "a second dvc repro must be a no-op"

    summary = json.loads((repo.root / "reports" / "data_summary.json").read_text())
    assert summary["train"]["total"] == 200 and summary["val"]["total"] == 50

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo.root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cifar10-cnn")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["preprocess.val_size"] == "50"
    assert len(client.get_metric_history(run.info.run_id, "accuracy/val")) == 2
    assert "test/accuracy" in run.data.metrics
    run_info = json.loads((repo.root / "models" / "run.json").read_text())
    assert run_info["run_id"] == run.info.run_id
    assert (repo.root / "mlruns").is_dir(), "artifacts land beside mlflow.db in the repo"

    metrics = json.loads(repo.run("dvc", "metrics", "show", "--json").stdout)
    test_metrics = next(iter(metrics.values()))["data"]["reports/metrics.json"]["data"]
    assert {"accuracy", "loss"} <= set(test_metrics)

    repo.run("dvc", "plots", "show", "-o", "plots_html")
    page = (repo.root / "plots_html" / "index.html").read_text()
    # The confusion template's Vega spec, drawn from predictions.csv, and the PNG beside it.
    assert "Confusion matrix (test set)" in page and "predictions_csv" in page
    assert 'id="reports_confusion_matrix_png"' in page
    specs = vega_specs(page)
    # Oriented like the PNG: predicted classes across, actual classes down.
    confusion = specs["Confusion matrix (test set)"]["spec"]["encoding"]
    assert (confusion["x"]["field"], confusion["y"]["field"]) == ("predicted", "actual")
    # plots/confusion_all_classes.json: a class never predicted keeps its column (10 x 10).
    transform = specs["Confusion matrix (test set)"]["spec"]["transform"]
    assert {"flatten": ["weight"]} in transform, "DVC's stock template drops unpredicted classes"
    loss = specs["Loss per epoch"]
    assert loss["layer"][0]["encoding"]["y"]["title"] == "loss"
    assert loss["encoding"]["x"]["axis"] == {"tickMinStep": 1, "format": "d"}, "whole epochs"
    assert "F1 per class (test set)" in specs

    # `make plots`: the same page with Vega inlined from local files, no CDN.
    vega = repo.root / "fake-vega"
    for name in OFFLINE_SCRIPTS:
        (vega / name).parent.mkdir(parents=True, exist_ok=True)
        (vega / name).write_text(f"/* local {Path(name).name} */")
    repo.run("python", "plots/offline_template.py", str(vega), "offline.html")
    repo.run("dvc", "plots", "show", "--html-template", "offline.html", "-o", "offline_html")
    offline = (repo.root / "offline_html" / "index.html").read_text()
    assert "cdn.jsdelivr" in page, "the default page loads Vega from a CDN"
    assert "<script src=" not in offline and "/* local vega-lite.min.js */" in offline
    assert vega_specs(offline).keys() == specs.keys()

    # register.min_accuracy is 0 here, so the first version is champion, and none is waiting.
    assert registry_state(repo) == (["1"], {"champion": "1"})


def test_params_change_reruns_only_downstream(repo: Repo) -> None:
    repo.repro()
    repo.set_params(preprocess__val_size=60)
    assert repo.repro() == {"preprocess", "train", "evaluate"}
    versions, aliases = registry_state(repo)
    # v2 is champion or challenger, depending on its accuracy on tiny data; never both.
    assert versions == ["1", "2"] and "2" in aliases.values()
    assert aliases.get("champion") != aliases.get("challenger")


def test_run_cache_never_skips_registration(repo: Repo) -> None:
    repo.repro()
    repo.set_params(preprocess__val_size=60)
    repo.repro()
    before_versions, before_aliases = registry_state(repo)
    (repo.root / "reports" / "registry.json").unlink()

    # Back to an earlier value: DVC restores preprocess and train from its run-cache...
    repo.set_params(preprocess__val_size=50)
    assert repo.repro() == {"evaluate"}, "...but evaluate (with registration) must run again"

    record = json.loads((repo.root / "reports" / "registry.json").read_text())
    run_info = json.loads((repo.root / "models" / "run.json").read_text())
    assert record["run_id"] == run_info["run_id"]
    assert record["status"] != "failed"
    # The restored model was registered before: no new version, aliases unchanged.
    assert registry_state(repo) == (before_versions, before_aliases)


def test_same_bytes_at_another_url_skip_preprocess(repo: Repo) -> None:
    repo.repro()
    copy = repo.archive.with_name("copy-of-cifar.tar.gz")
    shutil.copy(repo.archive, copy)
    repo.set_params(data__url=f"file://{copy}")
    assert repo.repro() == {"download"}


def test_shared_outputs_and_run_tags_hold_no_machine_paths(repo: Repo) -> None:
    repo.repro()
    run_info = json.loads((repo.root / "models" / "run.json").read_text())
    # models/run.json is a DVC-cached output: the same on every machine.
    assert run_info["tracking_uri"] == "sqlite:///mlflow.db"
    for path in [*(repo.root / "models").glob("*.json"), *(repo.root / "reports").iterdir()]:
        if path.suffix in {".json", ".csv", ".md", ".txt", ".html"}:
            assert str(repo.root) not in path.read_text(), f"{path.name} names {repo.root}"
    tags = workspace_client(repo).get_run(run_info["run_id"]).data.tags
    assert tags["mlflow.source.name"] == "stages/train.py"
    assert not {key: value for key, value in tags.items() if str(repo.root) in value}


# Queued experiments (dvc exp run --queue, dvc queue start -j 2) landing in the workspace
# store: tests/test_sweep_dvc.py.


def test_hint_for_a_run_missing_from_the_store_works(repo: Repo, tmp_path: Path) -> None:
    repo.repro()
    # The store was switched (or reset, or was a temporary one): run.json names a run it lacks.
    other = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'other.db'}"}
    failed = repo.run(
        "dvc", "repro", "--force", "--single-item", "evaluate", check=False, env=other
    )
    assert failed.returncode != 0
    message = failed.stdout + failed.stderr
    assert "is not in the tracking store" in message
    hint = message[message.index("is not in the tracking store") :]
    commands = re.findall(r"`(dvc [^`]+)`", hint)
    assert commands, message
    for command in commands:
        repo.run(*command.split(), env=other)

    record = json.loads((repo.root / "reports" / "registry.json").read_text())
    run_info = json.loads((repo.root / "models" / "run.json").read_text())
    assert record["status"] == "registered" and record["run_id"] == run_info["run_id"]
    client = mlflow.MlflowClient(tracking_uri=other["MLFLOW_TRACKING_URI"])
    assert client.get_run(run_info["run_id"]).info.status == "FINISHED"


def test_dvc_exp_run_names_the_mlflow_run_and_exp_show_leads_with_accuracy(repo: Repo) -> None:
    repo.run("dvc", "exp", "run", "-n", "tiny-exp", "-S", "train.epochs=1")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo.root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cifar10-cnn")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (run,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`dvc.experiment` = 'tiny-exp'"
    )
    assert run.info.run_name == "tiny-exp"
    baseline = repo.run("git", "rev-parse", "HEAD").stdout.strip()
    assert run.data.tags["dvc.baseline_rev"] == baseline
    # DVC rewrote params.yaml (-S) and dvc.lock: neither makes the code dirty.
    assert run.data.tags["git.dirty"] == "false"

    rows = list(csv.DictReader(io.StringIO(repo.run("dvc", "exp", "show", "--csv").stdout)))
    (row,) = [row for row in rows if row["Experiment"] == "tiny-exp"]
    assert row["mlflow_run_id"] == run.info.run_id
    columns = list(row)
    fixed = {"Experiment", "rev", "typ", "Created", "parent", "State", "Executor"}
    first_metric = next(column for column in columns if column not in fixed)
    assert first_metric == "accuracy", columns
    # No data-summary or per-class columns: a handful of metrics, then params and deps.
    assert not [c for c in columns if "per_class" in c or "total" in c or "summary" in c]
    assert columns.index("mlflow_run_id") < columns.index("train.epochs")


def recorded_train_seeds(
    repo: Repo, seeds_of_interest: tuple[int, ...] = (21, 22)
) -> list[tuple[str, int, int]]:
    """(where, recorded train.seed, train.seed of the MLflow run that made the model) per record.

    The records are dvc.lock and the run-cache entries of the train stage, those that record
    one of ``seeds_of_interest``: earlier tests of this module leave records (dvc.lock too, when
    an experiment rightly failed) whose runs live in other stores. The model's run is found
    through the recorded md5 of models/run.json, read back from DVC's cache.
    """
    client = workspace_client(repo)
    lock = yaml.safe_load((repo.root / "dvc.lock").read_text())
    candidates = [("dvc.lock", lock["stages"]["train"])]
    for entry in (repo.root / ".dvc" / "cache" / "runs").glob("*/*/*"):
        record = yaml.safe_load(entry.read_text())
        if record.get("cmd") == "python -m stages.train":
            candidates.append((f"run-cache {entry.parent.name[:8]}", record))
    records = [
        (where, record)
        for where, record in candidates
        if record["params"]["params.yaml"]["train"]["seed"] in seeds_of_interest
    ]
    seeds = []
    for where, record in records:
        (out,) = [out for out in record["outs"] if out["path"] == "models/run.json"]
        cached = repo.root / ".dvc" / "cache" / "files" / "md5" / out["md5"][:2] / out["md5"][2:]
        run_id = json.loads(cached.read_text())["run_id"]
        try:
            run = client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            # Made against another store by an earlier test: neither experiment here logs there.
            continue
        trained = int(run.data.params["train.seed"])
        # dvc.yaml lists the whole `train` section: DVC records it as a nested dict.
        seeds.append((where, record["params"]["params.yaml"]["train"]["seed"], trained))
    return seeds


def test_two_experiments_at_once_never_record_params_the_model_was_not_trained_with(
    repo: Repo,
) -> None:
    repo.repro()
    # Long enough for the second experiment to start while the first trains.
    repo.set_params(train__epochs=8)
    repo.run("git", "commit", "-qam", "8 epochs")
    first = subprocess.Popen(
        ["dvc", "exp", "run", "-S", "train.seed=21"], cwd=repo.root, env=repo.env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not list((repo.root / ".checkpoints").glob("*/state.json")):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first experiment never checkpointed"
            time.sleep(0.2)
        # DVC writes -S into params.yaml before it finds the first experiment's lock.
        second = repo.run("dvc", "exp", "run", "-S", "train.seed=22", check=False)
        _, first_err = first.communicate(timeout=900)
    finally:
        first.kill()
        first.wait(timeout=60)
    assert second.returncode != 0, "the second experiment ran alongside the first"
    params = yaml.safe_load((repo.root / "params.yaml").read_text())
    assert params["train"]["seed"] == 22, "DVC wrote the second experiment's -S after all"

    seeds = recorded_train_seeds(repo)
    assert [s for s in seeds if s[1] != s[2]] == [], (seeds, first_err[-3000:])
    # The first noticed that params.yaml changed under it, and said so in one line.
    assert first.returncode != 0, first_err[-3000:]
    (line,) = [line for line in first_err.splitlines() if line.startswith("error:")]
    assert "params.yaml: train.seed changed from 21 to 22 while stage train ran" in line
    # Nothing claims to be up to date; a repro trains with seed 22 and records that.
    assert "train" in repo.run("dvc", "status").stdout
    repo.repro()
    final = recorded_train_seeds(repo)
    assert ("dvc.lock", 22, 22) in final and [s for s in final if s[1] != s[2]] == [], final
    repo.set_params(train__epochs=2, train__seed=42)
    repo.run("git", "commit", "-qam", "back to 2 epochs")


# Last in this module on purpose: it overwrites the copy's models/ and reports/ outside DVC.
def test_mlflow_run_uses_the_same_stage_code_and_run(repo: Repo) -> None:
    # Not from the run-cache: an earlier test left an entry for these params whose run lives in
    # another store (test_hint_for_a_run_missing_from_the_store_works).
    repo.run("dvc", "repro", "--no-run-cache")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo.root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cifar10-cnn")
    before = {run.info.run_id for run in client.search_runs([experiment.experiment_id])}
    # params.yaml is the one source of values: MLproject passes only what -P gives.
    repo.set_params(train__learning_rate=0.0123)

    repo.run("mlflow", "run", ".", "-e", "train", "-P", "epochs=1",
             "-P", "set=model.reference.dense_units=32 train.optimizer=adam",
             "--env-manager", "local", "--experiment-name", "cifar10-cnn")  # fmt: skip

    runs = [
        r for r in client.search_runs([experiment.experiment_id]) if r.info.run_id not in before
    ]
    assert len(runs) == 1, "the train stage must log into the run that `mlflow run` opened"
    (run,) = runs
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.entryPoint"] == "train"
    assert run.data.params["train.epochs"] == "1"
    assert run.data.params["train.learning_rate"] == "0.0123", "edited in params.yaml"
    assert run.data.params["train.batch_size"] == "50", "params.yaml's, not a default"
    assert run.data.params["model.reference.dense_units"] == "32"
    assert run.data.params["train.optimizer"] == "adam"
    assert "accuracy/val" in run.data.metrics
    run_info = json.loads((repo.root / "models" / "run.json").read_text())
    assert run_info["run_id"] == run.info.run_id
    assert run_info["experiment_id"] == run.info.experiment_id

    # Without --experiment-name MLflow opens the run in "Default": run.json must say so (it
    # once named params.yaml's experiment), and the stage says how to get the named one.
    result = repo.run("mlflow", "run", ".", "-e", "train", "-P", "epochs=1",
                      "--env-manager", "local")  # fmt: skip
    run_info = json.loads((repo.root / "models" / "run.json").read_text())
    default_run = client.get_run(run_info["run_id"])
    assert run_info["experiment_id"] == default_run.info.experiment_id != experiment.experiment_id
    assert "pass `--experiment-name cifar10-cnn`" in result.stderr
