"""The link ``make ui`` prints: a shared view of the runs table, against a real SQLite store.

The runs are real MLflow runs with params and metrics only (no model): the view is about what the
runs table shows, and three runs take a second.
"""

from __future__ import annotations

import json

import mlflow
import pytest

from views.ui_link import SHARED_VIEW_TAG, compare_link, main, param_width

BASE = "http://127.0.0.1:5000"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> mlflow.MlflowClient:
    """A store with three runs of 'cifar10-cnn' that differ in optimizer and learning rate.

    One for the module (a new SQLite store costs ~2 s): the links only add the one shared-view
    tag that these runs always get.
    """
    tmp_path = tmp_path_factory.mktemp("ui-view")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("cifar10-cnn", (tmp_path / "artifacts").as_uri())
    for optimizer, rate, accuracy in (("adam", "0.001", 0.31), ("sgd", "0.01", 0.25),
                                      ("adam", "0.01", 0.28)):  # fmt: skip
        run = client.create_run(experiment)
        for key, value in {"train.optimizer": optimizer, "train.learning_rate": rate,
                           "train.epochs": "2", "data.md5": "c" * 32}.items():  # fmt: skip
            client.log_param(run.info.run_id, key, value)
        client.log_metric(run.info.run_id, "test/accuracy", accuracy)
        client.set_terminated(run.info.run_id)
    return client


def test_link_opens_the_runs_table_with_the_compared_columns_sorted(client) -> None:
    link = compare_link(client, "cifar10-cnn", BASE)
    experiment = client.get_experiment_by_name("cifar10-cnn")
    prefix = f"{BASE}/#/experiments/{experiment.experiment_id}/runs?viewStateShareKey="
    assert link.startswith(prefix) and link.endswith("&workflowType=machine_learning")
    key = link.removeprefix(prefix).split("&")[0]
    # The state lives where MLflow's own Share button puts it: an experiment tag.
    state = json.loads(experiment.tags[SHARED_VIEW_TAG + key])
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`test/accuracy`", False)
    # Test accuracy, only the params that differ (not epochs, not the data md5), then the other
    # headline figures: on a narrow screen (MLflow's Assistant panel open) these go first.
    assert state["columnOrder"] == [
        "metrics.`test/accuracy`", "params.`train.learning_rate`", "params.`train.optimizer`",
        "metrics.`test/macro_f1`", "metrics.`loss/val`",
    ]  # fmt: skip
    assert state["selectedColumns"][:5] == state["columnOrder"]
    # Param columns as wide as their names and test accuracy a little narrower than MLflow's
    # 100 px, so that they fit beside the Assistant panel; the rest left as they are.
    assert state["columnWidths"] == {
        "metrics.`test/accuracy`": 95,
        "params.`train.learning_rate`": 104 + 20, "params.`train.optimizer`": 86 + 20,
    }  # fmt: skip


def test_a_name_with_wide_letters_gets_their_width() -> None:
    # 97 px cut `train.momentum` to `train.momentu` in Chromium at 1440 x 900.
    assert param_width("train.momentum") >= 107
    assert param_width("train.momentum") > param_width("train.nesterov")  # as long, narrower


def test_same_runs_same_link_and_no_experiment_links_the_list(client) -> None:
    assert compare_link(client, "cifar10-cnn", BASE) == compare_link(client, "cifar10-cnn", BASE)
    shared = [key for key in client.get_experiment_by_name("cifar10-cnn").tags
              if key.startswith(SHARED_VIEW_TAG)]  # fmt: skip
    assert len(shared) == 1
    assert compare_link(client, "other", BASE) == (
        f"{BASE}/#/experiments?workflowType=machine_learning"
    )


def test_main_prints_the_link_for_params_yaml_experiment(
    client, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    assert main(["--base", "http://localhost:5001/"]) == 0
    out = capsys.readouterr().out
    assert "http://localhost:5001/#/experiments/1/runs?viewStateShareKey=" in out
