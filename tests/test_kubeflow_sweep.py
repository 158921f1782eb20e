"""The Kubeflow sweep pipeline: compiled YAML, submission of trials, and a whole sweep on kfp.local.

The sweep runs with kfp.local's SubprocessRunner like the single pipeline's tests: tiny learnable
archive (each class its own colour), 1 epoch, three trials two at a time, one MLflow store.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from cifar10_kfp.compile import SWEEP_OUTPUT, compile_sweep_pipeline
from cifar10_kfp.pipeline import Settings
from cifar10_kfp.sections import to_arguments
from cifar10_kfp.sweep import DEFAULT_PARALLELISM, build_sweep_pipeline
from pipeline.core.params import load_params
from tests.cifar_archive import build_archive, encode_records
from tests.conftest import REPO_ROOT, free_port
from tests.test_kubeflow import committed_params, fake_kfp_api, local_session, run_module

pytestmark = pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning")

# 5 batches x 50 = 250 training images, 50 carved for validation, 50 test images.
PER_BATCH, N_TEST, VAL_SIZE = 50, 50, 50
# Trial 1 (the middle one, not the last) learns the class colours in one epoch; the others
# barely move their weights. Two at a time: trial 2 waits for a free slot.
TRIALS = [
    {"train.learning_rate": 1e-7},
    {"train.learning_rate": 0.003, "train.optimizer": "adam"},
    {"train.learning_rate": 2e-7},
]
BEST, PARALLELISM = 1, 2


def compiled_sweep(tmp_path: Path, settings: Settings | None = None) -> tuple[dict, dict]:
    path = compile_sweep_pipeline(tmp_path / "sweep.yaml", settings or Settings())
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_committed_sweep_yaml_is_what_make_kfp_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("KFP_IMAGE", "KFP_GPU_IMAGE", "KFP_MLFLOW_SECRET"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env(params_file=committed_params(tmp_path))
    fresh = compile_sweep_pipeline(tmp_path / "fresh.yaml", settings)
    assert SWEEP_OUTPUT.read_text() == fresh.read_text(), "stale: run `make kfp`, commit the YAML"


def test_sweep_shape_preprocess_once_train_per_trial_then_the_single_evaluate(
    tmp_path: Path,
) -> None:
    spec, platform = compiled_sweep(tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    depends = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert depends == {
        "download": set(),
        "preprocess": {"download"},
        "start-sweep": set(),
        "for-loop-1": {"download", "preprocess", "start-sweep"},
        "pick-best-trial": {"for-loop-1"},
        "evaluate": {"preprocess", "pick-best-trial"},
        "finish-sweep": {"start-sweep", "pick-best-trial", "evaluate"},
    }
    loop = tasks["for-loop-1"]
    assert loop["iteratorPolicy"] == {"parallelismLimit": DEFAULT_PARALLELISM}
    assert loop["parameterIterator"]["items"] == {"inputParameter": "pipelinechannel--trials"}
    inner = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]
    assert list(inner) == ["train-trial"]
    # The trial's train is the train stage's component with two arguments more: the trial, and
    # the sweep's start artifact (its parent MLflow run).
    components = spec["components"]
    train_trial = set(components["comp-train-trial"]["inputDefinitions"]["parameters"])
    single = yaml.safe_load_all((REPO_ROOT / "cifar10_kfp" / "cifar10_pipeline.yaml").read_text())
    single_spec = next(single)
    train = set(single_spec["components"]["comp-train"]["inputDefinitions"]["parameters"])
    assert train_trial == train | {"sweep_trial"}
    trial_artifacts = components["comp-train-trial"]["inputDefinitions"]["artifacts"]
    assert set(trial_artifacts) == {"prepared", "archive", "sweep_run"}
    # Evaluate is the very component of the single pipeline.
    assert components["comp-evaluate"] == single_spec["components"]["comp-evaluate"]
    fan_in = components["comp-pick-best-trial"]["inputDefinitions"]["artifacts"]
    assert fan_in["models"]["isArtifactList"] and fan_in["train_reports"]["isArtifactList"]
    # The trials are the one required parameter; the rest default to params.yaml's values.
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert [name for name, p in parameters.items() if "defaultValue" not in p] == ["trials"]
    assert set(parameters) - {"trials"} == set(
        single_spec["root"]["inputDefinitions"]["parameters"]
    )
    container = spec["deploymentSpec"]["executors"]["exec-train-trial"]["container"]
    assert container["resources"]["accelerator"]["resourceCount"] == "1"
    # MLflow's secret wherever MLflow is written: parent run, trainings, evaluate, closing.
    assert set(platform) == {
        "exec-start-sweep",
        "exec-train-trial",
        "exec-evaluate",
        "exec-finish-sweep",
    }
    caching = {
        name: task.get("cachingOptions", {}).get("enableCache", False)
        for name, task in tasks.items()
    }
    assert not caching["start-sweep"] and not caching["evaluate"] and not caching["finish-sweep"]


def test_sweep_parallelism_below_one_is_refused_at_build() -> None:
    from pipeline.core.errors import ParamsError

    with pytest.raises(ParamsError, match="--parallelism 0: must be a whole number of 1 or more"):
        build_sweep_pipeline(Settings(gpu=False), parallelism=0)


# --- Submission -----------------------------------------------------------------------------


@pytest.mark.e2e
def test_submit_sweep_sends_checked_trials_and_the_parallelism(tmp_path: Path) -> None:
    trials = tmp_path / "trials.yaml"
    trials.write_text(
        "- {train.learning_rate: 1e-3}\n"
        "- {train.learning_rate: 0.002, train.optimizer: adam}\n"
        "- {train.deterministic: false}\n"
    )
    with fake_kfp_api() as (host, requests):
        result = run_module(
            "cifar10_kfp.submit", "--host", host, "--sweep", "--trials", trials,
            "--parallelism", "3", "--set", "mlflow.sweep=lr-adam", "--set", "train.epochs=2",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run,) = [body for method, path, body in requests if method == "POST" and "/runs" in path]
    sent = run["pipeline_spec"]["pipeline_spec"]
    assert sent["pipelineInfo"]["name"] == "cifar10-sweep"
    assert sent["root"]["dag"]["tasks"]["for-loop-1"]["iteratorPolicy"] == {"parallelismLimit": 3}
    sent = run["runtime_config"]["parameters"]
    assert set(sent) == {"mlflow", "train", "trials"}
    assert json.loads(sent["mlflow"])["sweep"] == "lr-adam"
    assert json.loads(sent["train"])["epochs"] == 2
    # Each trial as JSON text, its values typed by the schema (1e-3 a float).
    assert [json.loads(trial) for trial in sent["trials"]] == [
        {"train.learning_rate": 0.001},
        {"train.learning_rate": 0.002, "train.optimizer": "adam"},
        {"train.deterministic": False},
    ]


@pytest.mark.e2e
def test_submit_grid_is_every_combination(tmp_path: Path) -> None:
    with fake_kfp_api() as (host, requests):
        result = run_module(
            "cifar10_kfp.submit", "--host", host, "--sweep",
            "--grid", "train.learning_rate=0.0005,0.001", "--grid", "train.optimizer=adam,sgd",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run,) = [body for method, path, body in requests if method == "POST" and "/runs" in path]
    assert [json.loads(t) for t in run["runtime_config"]["parameters"]["trials"]] == [
        {"train.learning_rate": 0.0005, "train.optimizer": "adam"},
        {"train.learning_rate": 0.0005, "train.optimizer": "sgd"},
        {"train.learning_rate": 0.001, "train.optimizer": "adam"},
        {"train.learning_rate": 0.001, "train.optimizer": "sgd"},
    ]
    spec = run["pipeline_spec"]["pipeline_spec"]
    # No --parallelism: the compiled cap travels as it is.
    assert spec["root"]["dag"]["tasks"]["for-loop-1"]["iteratorPolicy"] == {
        "parallelismLimit": DEFAULT_PARALLELISM
    }


def test_a_trial_key_inside_a_section_changes_that_key_of_the_run_s_section() -> None:
    from cifar10_kfp.runtime import stage_params
    from cifar10_kfp.submit import sweep_arguments
    from cifar10_kfp.trials import trial_overrides

    arguments = sweep_arguments(
        SWEEP_OUTPUT,
        ["model.reference.dropout_dense=0.3"],
        [{"model.reference.dense_units": 32}, {"model.reference.dense_units": 64}],
    )
    # What a trial's training reads: the run's model section with the trial's key on top.
    sections = [
        stage_params({"model": arguments["model"]}, overrides=trial_overrides(trial))[
            0
        ].model.reference
        for trial in arguments["trials"]
    ]
    assert [section.dense_units for section in sections] == [32, 64]
    # The rest of the section is the run's: params.yaml's, with the --set value.
    assert {section.dropout_dense for section in sections} == {0.3}
    assert sections[0].conv_filters == [32, 64, 64]


BAD_TRIALS = {
    "empty list": ("[]\n", "error: no trials: a sweep needs at least one"),
    "not a list": ("train.learning_rate: 0.1\n", "expected a YAML list of trials"),
    "item not a mapping": ("- 0.1\n", "trial 0 is a float, not a mapping of params keys"),
    "unknown key": (
        "- {train.learning_rat: 0.1}\n",
        "trial 0: train.learning_rat is not a key the train stage reads (model.*, train.*); "
        "did you mean train.learning_rate?",
    ),
    "preprocess key": ("- {preprocess.val_size: 100}\n", "is not a key the train stage reads"),
    "fixed key": ("- {train.device: cpu}\n", "trial 0: train.device is set by the sweep"),
    "whole section": (
        "- {train: {device: cpu}}\n",
        "trial 0: train is not a key the train stage reads",
    ),
    "wrong type": ("- {train.epochs: two}\n", "trial 0: pipeline parameters: train.epochs:"),
    "out of range": (
        "- {train.seed: 1}\n- {train.learning_rate: -1}\n",
        "trial 1: pipeline parameters: train.learning_rate: must be",
    ),
    "duplicate": (
        "- {train.learning_rate: 0.002}\n- {train.learning_rate: 2e-3}\n",
        "trial 1 trains the same as trial 0 (train.learning_rate=0.002); drop one",
    ),
    "default spelled out": (
        "- {}\n- {train.optimizer: rmsprop}\n",
        "trial 1 trains the same as trial 0",
    ),
    "duplicate key": (
        "- {train.seed: 1, train.seed: 2}\n",
        "duplicate key 'train.seed'",
    ),
}


@pytest.mark.parametrize(("text", "message"), BAD_TRIALS.values(), ids=BAD_TRIALS.keys())
def test_submit_refuses_bad_trials_in_one_line_before_any_request(
    text: str, message: str, tmp_path: Path
) -> None:
    trials = tmp_path / "trials.yaml"
    trials.write_text(text)
    code, lines = submit_in_process(["--sweep", "--trials", str(trials)])
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


BAD_OPTIONS = {
    "parallelism 0": (
        ["--sweep", "--grid", "train.seed=1,2", "--parallelism", "0"],
        "error: --parallelism 0: must be a whole number of 1 or more",
    ),
    "no trials": (["--sweep"], "error: --sweep takes its trials from --trials FILE or from --grid"),
    "trials without sweep": (
        ["--grid", "train.seed=1,2"],
        "error: --trials, --grid and --parallelism go with --sweep",
    ),
    "grid without values": (["--sweep", "--grid", "train.seed="], "error: --grid train.seed="),
    "grid with a bad value": (
        ["--sweep", "--grid", "train.batch_size=64,0"],
        "error: trial 1: pipeline parameters: train.batch_size: must be between 1 and",
    ),
    "grid twice the same": (
        ["--sweep", "--grid", "train.seed=3,3"],
        "error: trial 1 trains the same as trial 0 (train.seed=3)",
    ),
    "missing file": (["--sweep", "--trials", "/nonexistent/t.yaml"], "file not found"),
}


@pytest.mark.parametrize(("args", "message"), BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_submit_refuses_bad_sweep_options_in_one_line(args: list[str], message: str) -> None:
    code, lines = submit_in_process(args)
    assert code == 2
    assert len(lines) == 1 and message in lines[0], lines


def submit_in_process(args: list[str]) -> tuple[int, list[str]]:
    """``cifar10_kfp.submit.main`` in this process: (exit code, stderr lines).

    Its host is a port nobody listens on: had a refusal let the run through, the submission
    would end in "unreachable" with exit 1, not a params error with exit 2.
    """
    import contextlib
    import io

    from cifar10_kfp.submit import main

    handler = signal.getsignal(signal.SIGTERM)  # main() routes SIGTERM for a stage process
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            with pytest.raises(SystemExit) as exit_:
                main(["--host", f"http://127.0.0.1:{free_port()}", *args])
        finally:
            signal.signal(signal.SIGTERM, handler)
    return exit_.value.code, stderr.getvalue().strip().splitlines()


# --- A whole sweep with kfp.local -------------------------------------------------------------


def colour_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images of one colour per class (10 far-apart colours) plus mild noise, and labels.

    A CNN tells them apart within a few dozen steps at a working learning rate, so one trial's
    win over the others is not down to chance.
    """
    corners = np.array([[r, g, b] for r in (40, 215) for g in (40, 215) for b in (40, 215)])
    colours = np.vstack([corners, [[128, 128, 128], [215, 128, 40]]])
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    rng.shuffle(y)
    x = colours[y][:, None, None, :] + rng.normal(0.0, 16.0, size=(n, 32, 32, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.uint8)


def learnable_archive(path: Path) -> Path:
    """A tiny archive whose classes a CNN learns in a couple of epochs: a colour per class."""
    train_x, train_y = colour_images(5 * PER_BATCH, seed=0)
    test_x, test_y = colour_images(N_TEST, seed=1)
    members = {
        f"data_batch_{i + 1}.bin": encode_records(
            train_x[i * PER_BATCH : (i + 1) * PER_BATCH],
            train_y[i * PER_BATCH : (i + 1) * PER_BATCH],
        )
        for i in range(5)
    }
    members["test_batch.bin"] = encode_records(test_x, test_y)
    build_archive(path, per_batch=PER_BATCH, n_test=N_TEST, members=members)
    return path


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The CPU sweep pipeline run once with kfp.local: three trials, two at a time."""
    root = tmp_path_factory.mktemp("kfp-sweep")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    archive = learnable_archive(root / "cifar-10-binary.tar.gz")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    params = load_params(
        REPO_ROOT / "params.yaml",
        [f"data.url={archive}", f"data.md5={md5}", f"preprocess.val_size={VAL_SIZE}",
         # 2 x 13 steps: what a tiny run costs is starting TensorFlow, not the epochs.
         "train.epochs=2", "train.batch_size=16", "mlflow.sweep=lr-test"],
    )  # fmt: skip
    arguments = to_arguments(params) | {"trials": [json.dumps(trial) for trial in TRIALS]}
    pipeline = build_sweep_pipeline(Settings(gpu=False), parallelism=PARALLELISM)
    print_before = builtins.print
    with local_session(root, tracking_uri):
        run = pipeline(**arguments)
    # Later tests print too: kfp.local's parallel tasks must not leave their indenting print.
    assert builtins.print is print_before
    return {"outputs": run.outputs, "tracking_uri": tracking_uri}


@pytest.mark.e2e
def test_local_sweep_nests_three_trial_runs_under_one_parent(local_sweep: dict[str, Any]) -> None:
    import mlflow

    client = mlflow.MlflowClient(local_sweep["tracking_uri"])
    experiment = client.get_experiment_by_name("cifar10-cnn")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 4 and len(children) == 3
    assert parent.info.status == "FINISHED" and parent.info.run_name == "lr-test"
    assert {run.info.status for run in children} == {"FINISHED"}
    assert {run.data.tags["sweep"] for run in children} == {"lr-test"}
    by_trial = {int(run.data.tags["sweep.trial"]): run for run in children}
    assert sorted(by_trial) == [0, 1, 2]
    for number, trial in enumerate(TRIALS):
        params = by_trial[number].data.params
        assert float(params["train.learning_rate"]) == trial["train.learning_rate"]
        assert params["train.optimizer"] == trial.get("train.optimizer", "rmsprop")
        # Trials share one preprocess: the same data.
        assert params["preprocess.val_size"] == str(VAL_SIZE)
    # At most two at once: the last training started after one of the first two had ended.
    ordered = sorted(children, key=lambda run: run.info.start_time)
    assert ordered[2].info.start_time >= min(run.info.end_time for run in ordered[:2])


@pytest.mark.e2e
def test_local_sweep_registers_the_best_trial_once_not_the_last(
    local_sweep: dict[str, Any],
) -> None:
    import mlflow

    client = mlflow.MlflowClient(local_sweep["tracking_uri"])
    experiment = client.get_experiment_by_name("cifar10-cnn")
    runs = client.search_runs([experiment.experiment_id])
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(children) == len(TRIALS)
    val = {run.info.run_id: run.data.metrics["accuracy/val"] for run in children}
    best_run = max(val, key=val.get)
    trial_of = {run.info.run_id: int(run.data.tags["sweep.trial"]) for run in children}
    # The arrangement holds: trial 1 is clearly best, and it is not the last trial.
    assert trial_of[best_run] == BEST != len(TRIALS) - 1
    assert all(val[best_run] > other + 0.1 for run, other in val.items() if run != best_run)
    # One version, from the best trial's run and model; only that run was evaluated.
    (version,) = client.search_model_versions("name='cifar10-cnn'")
    assert version.run_id == best_run
    model = local_sweep["outputs"]["model"]
    assert model.metadata["mlflow_run_id"] == best_run
    run_info = json.loads((Path(model.path) / "run.json").read_text())
    assert run_info["run_id"] == best_run and version.source == run_info["model_uri"]
    evaluated = [run for run in children if "test/accuracy" in run.data.metrics]
    assert [run.info.run_id for run in evaluated] == [best_run]
    assert local_sweep["outputs"]["test_metrics"].metadata["test_images"] == 50


@pytest.mark.e2e
def test_local_sweep_parent_holds_the_table_and_names_the_winner(
    local_sweep: dict[str, Any], tmp_path: Path
) -> None:
    import mlflow

    client = mlflow.MlflowClient(local_sweep["tracking_uri"])
    experiment = client.get_experiment_by_name("cifar10-cnn")
    (parent,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`sweep.role` = 'parent'"
    )
    children = {
        int(run.data.tags["sweep.trial"]): run
        for run in client.search_runs([experiment.experiment_id])
        if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    best = children[BEST]
    assert parent.data.tags["sweep.best_trial"] == str(BEST)
    assert parent.data.tags["sweep.best_run_id"] == best.info.run_id
    assert parent.data.tags["sweep.registered_version"] == "1"
    assert parent.data.params["best.train.optimizer"] == "adam"
    assert parent.data.metrics["best/accuracy/val"] == pytest.approx(
        best.data.metrics["accuracy/val"], abs=1e-4
    )
    assert parent.data.metrics["best/test/accuracy"] == pytest.approx(
        best.data.metrics["test/accuracy"], abs=1e-4
    )
    folder = Path(client.download_artifacts(parent.info.run_id, "sweep_table.json", tmp_path))
    table = json.loads(folder.read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    # Best first; each trial with its params, val accuracy, and test accuracy where evaluated.
    assert rows[0]["trial"] == BEST
    assert sorted(row["trial"] for row in rows) == [0, 1, 2]
    for row in rows:
        child = children[row["trial"]]
        assert row["run_id"] == child.info.run_id
        assert row["winner"] == (row["trial"] == BEST)
        assert json.loads(row["params"]) == TRIALS[row["trial"]]
        assert row["val_accuracy"] == pytest.approx(child.data.metrics["accuracy/val"])
        assert (row["test_accuracy"] is not None) == (row["trial"] == BEST)
    csv_text = Path(client.download_artifacts(parent.info.run_id, "sweep_table.csv", tmp_path))
    assert len(csv_text.read_text().strip().splitlines()) == 1 + len(TRIALS)
    assert local_sweep["outputs"]["sweep_table"].metadata["best_trial"] == BEST


# --- Trials and the picker (no kfp, no TensorFlow) --------------------------------------------


def test_best_trial_is_the_highest_validation_accuracy_never_the_test_figure() -> None:
    from cifar10_kfp.trials import best_trial

    results = [
        {"val_accuracy": 0.50, "val_loss": 1.2, "test_accuracy": 0.99},
        {"val_accuracy": 0.61, "val_loss": 1.4, "test_accuracy": 0.10},
        {"val_accuracy": 0.55, "val_loss": 0.9},
    ]
    assert best_trial(results) == 1


def test_best_trial_ties_go_to_the_lower_val_loss_then_the_earlier_trial() -> None:
    from cifar10_kfp.trials import best_trial

    assert (
        best_trial([{"val_accuracy": 0.6, "val_loss": 1.0}, {"val_accuracy": 0.6, "val_loss": 0.8}])
        == 1
    )
    assert (
        best_trial([{"val_accuracy": 0.6, "val_loss": 0.8}, {"val_accuracy": 0.6, "val_loss": 0.8}])
        == 0
    )
    # A diverged trial (NaN loss) loses a tie to any finite one.
    nan = float("nan")
    assert (
        best_trial([{"val_accuracy": 0.1, "val_loss": nan}, {"val_accuracy": 0.1, "val_loss": 9.0}])
        == 1
    )


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ([], "no trial results"),
        ([{"val_accuracy": 0.5}, {"val_loss": 1.0}], "trial result 1 has no validation accuracy"),
        ([{"val_accuracy": float("nan")}], "trial result 0 has no validation accuracy"),
    ],
)
def test_best_trial_refuses_what_it_cannot_rank(results: list, message: str) -> None:
    from cifar10_kfp.trials import best_trial

    with pytest.raises(ValueError, match=message):
        best_trial(results)


def test_grid_is_the_product_first_key_slowest_values_read_as_yaml() -> None:
    from cifar10_kfp.trials import grid_trials

    assert grid_trials(["train.learning_rate=1e-3, 2e-3", "train.deterministic=true,false"]) == [
        {"train.learning_rate": 0.001, "train.deterministic": True},
        {"train.learning_rate": 0.001, "train.deterministic": False},
        {"train.learning_rate": 0.002, "train.deterministic": True},
        {"train.learning_rate": 0.002, "train.deterministic": False},
    ]


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["train.seed"], "--grid train.seed: expected KEY=V1,V2,..."),
        (["train.seed=1,,2"], "an empty value"),
        (["train.seed=1", "train.seed=2"], "train.seed is given twice"),
        ([f"train.seed={','.join(map(str, range(11)))}"] * 1
         + [f"train.epochs={','.join(map(str, range(1, 11)))}"], "makes 110 trials; at most 100"),
    ],
)  # fmt: skip
def test_grid_refuses_malformed_specs(specs: list[str], message: str) -> None:
    from cifar10_kfp.trials import grid_trials
    from pipeline.core.errors import ParamsError

    with pytest.raises(ParamsError, match=message):
        grid_trials(specs)


def test_trials_file_alias_bomb_is_refused_unexpanded(tmp_path: Path) -> None:
    from cifar10_kfp.trials import read_trials_file
    from pipeline.core.errors import ParamsError

    # Ten aliases per level, nine levels: 10**9 values once expanded.
    names = "abcdefghi"
    bomb = [f"- a: &a [{', '.join(['1'] * 10)}]"]
    for name, previous in zip(names[1:], names, strict=False):
        bomb.append(f"  {name}: &{name} [{', '.join([f'*{previous}'] * 10)}]")
    path = tmp_path / "trials.yaml"
    path.write_text("\n".join(bomb) + "\n")
    with pytest.raises(ParamsError, match="alias bomb"):
        read_trials_file(path)
