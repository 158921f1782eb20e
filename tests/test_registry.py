"""The Model Registry: versions, aliases and the champion gate, against a real SQLite store.

The runs and model versions are real (a tiny logged Keras model); only the test accuracy handed
to pipeline.evaluate.registry is chosen, because the promotion logic is what these tests check.
Each test uses its own registered model name, so they share one store and its runs.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from pipeline.core.errors import PipelineError
from pipeline.core.params import RegisterParams
from pipeline.evaluate.registry import register_model_version
from tests import mlflow_fixtures as mf
from tests.conftest import QUIET_ENV, REPO_ROOT, free_port

# End to end: a real MLflow store holding real logged models.
pytestmark = pytest.mark.e2e

GATE = RegisterParams(min_accuracy=0.70, min_improvement=0.0, allow_champion=True)
_names = itertools.count()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Four FINISHED training runs, each with its own logged model, in a fresh store."""
    uri = mf.sqlite_uri(tmp_path_factory.mktemp("registry-store"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        model, _ = mf.train_tiny_model(epochs=1)
        infos = [mf.log_training_run(uri, model) for _ in range(4)]
        infos.append(mf.log_training_run(uri, model, tags={}))  # no lineage tags at all
        yield infos


@pytest.fixture(autouse=True)
def store(runs: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    """Point MLflow at this module's store, whatever another module pointed it at."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", runs[0]["tracking_uri"])
    mlflow.set_tracking_uri(runs[0]["tracking_uri"])


@pytest.fixture
def name() -> str:
    """A registered model name no other test uses."""
    return f"cnn-{next(_names)}"


def register(name: str, run: dict, accuracy: float, policy: RegisterParams = GATE) -> dict:
    """Register ``run``'s model with a chosen test accuracy; return registry.json's content."""
    return register_model_version(
        name, run["model_uri"], run["run_id"], _run_tags(run), accuracy, policy, mf.CLASSES
    ).to_dict()


def _run_tags(run: dict) -> dict[str, str]:
    return dict(mlflow.MlflowClient().get_run(run["run_id"]).data.tags)


def aliases(name: str) -> dict[str, str]:
    aliases = mlflow.MlflowClient().get_registered_model(name).aliases
    return {alias: str(version) for alias, version in aliases.items()}


def test_version_from_logged_model_keeps_its_run_id(runs: list[dict], name: str) -> None:
    # Idempotency searches versions by run_id: MLflow 3 must keep it for "models:/m-..." sources.
    assert runs[0]["model_uri"].startswith("models:/m-")
    register(name, runs[0], 0.8)
    # The same query as the idempotency check: other tests register runs[0] under other names.
    query = f"name = '{name}' and run_id = '{runs[0]['run_id']}'"
    (version,) = mlflow.MlflowClient().search_model_versions(query)
    assert version.run_id == runs[0]["run_id"]
    assert version.source == runs[0]["model_uri"]


def test_first_passing_version_becomes_champion_only(runs: list[dict], name: str) -> None:
    result = register(name, runs[0], 0.75)
    assert (result["status"], result["version"], result["created"]) == ("registered", "1", True)
    assert (result["decision"], result["challenger_version"]) == ("promoted", None)
    assert aliases(name) == {"champion": "1"}


def test_version_tags_and_description_link_run_commit_data_and_accuracy(
    runs: list[dict], name: str
) -> None:
    register(name, runs[0], 0.75)
    version = mlflow.MlflowClient().get_model_version(name, "1")
    assert version.run_id == runs[0]["run_id"]
    # Few tags, so the versions table stays one line a version; the rest is in the description.
    assert set(version.tags) == {"test_accuracy", "registry.decision", "git.commit"}
    assert version.tags["git.commit"] == "0123abc"
    assert float(version.tags["test_accuracy"]) == 0.75
    assert version.tags["registry.decision"] == "promoted"
    assert version.description.split("\n\n")[0] == (
        "test accuracy 0.7500 — promoted: first version to reach register.min_accuracy 0.7000"
    )
    for text in (runs[0]["run_id"], "0123abc", "r" * 32, "p" * 32, "0.7500", "first version"):
        assert text in version.description
    for heading in ("**What**", "**Data**", "**Test accuracy**", "**Decision**: at registration"):
        assert heading in version.description
    # Dated, so "does not beat v2" is read as then, not now, after a later champion.
    assert re.search(
        r"\*\*Decision\*\*: at registration on 20\d\d-\d\d-\d\d \d\d:\d\d UTC, promoted: ",
        version.description,
    )
    model = mlflow.MlflowClient().get_registered_model(name)
    assert "champion" in model.description and "challenger" in model.description
    assert ", ".join(mf.CLASSES) in model.description
    # One model tag, the champion, so the models list's Tags column shows it first.
    assert model.tags == {"champion": "v1 · 0.7500"}


def test_missing_lineage_tags_read_unknown(runs: list[dict], name: str) -> None:
    register(name, runs[4], 0.75)
    version = mlflow.MlflowClient().get_model_version(name, "1")
    assert version.tags["git.commit"] == "unknown"
    assert "raw archive md5 `unknown`, prepared data md5 `unknown`" in version.description


def test_worse_version_becomes_challenger_only(runs: list[dict], name: str) -> None:
    register(name, runs[0], 0.80)
    result = register(name, runs[1], 0.78)
    assert (result["version"], result["decision"], result["champion_version"]) == ("2", "kept", "1")
    assert aliases(name) == {"champion": "1", "challenger": "2"}


def test_better_version_moves_champion(runs: list[dict], name: str) -> None:
    register(name, runs[0], 0.80)
    result = register(name, runs[1], 0.81)
    assert (result["decision"], result["previous_champion_version"]) == ("promoted", "1")
    assert aliases(name) == {"champion": "2"}


def test_promotion_clears_a_waiting_challenger(runs: list[dict], name: str) -> None:
    register(name, runs[0], 0.80)
    register(name, runs[1], 0.79)
    assert aliases(name) == {"champion": "1", "challenger": "2"}
    register(name, runs[2], 0.85)
    assert aliases(name) == {"champion": "3"}


def test_models_list_tag_names_the_champion_when_a_newer_challenger_exists(
    runs: list[dict], name: str
) -> None:
    # MLflow's models list shows the alias of the newest aliased version only (a newer challenger
    # hid the champion behind "+1"); the model's `champion` tag is in the list's Tags column.
    def shown() -> str | None:
        return mlflow.MlflowClient().get_registered_model(name).tags.get("champion")

    register(name, runs[0], 0.60)
    assert shown() is None
    # A tag earlier code wrote, which took the list's room, is removed by the next evaluate.
    mlflow.MlflowClient().set_registered_model_tag(name, "classes", ",".join(mf.CLASSES))
    register(name, runs[1], 0.80)
    register(name, runs[2], 0.75)
    assert aliases(name) == {"champion": "2", "challenger": "3"}
    model_tags = mlflow.MlflowClient().get_registered_model(name).tags
    assert model_tags == {"champion": "v2 · 0.8000"}
    register(name, runs[3], 0.85)
    assert shown() == "v4 · 0.8500"
    # An alias removed by hand: the next evaluate drops the tag too, rather than keep a stale one.
    mlflow.MlflowClient().delete_registered_model_alias(name, "champion")
    register(name, runs[0], 0.60)
    assert shown() is None


def test_equal_accuracy_does_not_move_champion(runs: list[dict], name: str) -> None:
    register(name, runs[0], 0.80)
    assert register(name, runs[1], 0.80)["decision"] == "kept"
    assert aliases(name)["champion"] == "1"


def test_min_improvement_is_respected(runs: list[dict], name: str) -> None:
    gate = GATE.model_copy(update={"min_improvement": 0.05})
    register(name, runs[0], 0.80, gate)
    assert register(name, runs[1], 0.84, gate)["decision"] == "kept"
    assert aliases(name)["champion"] == "1"
    assert register(name, runs[2], 0.86, gate)["decision"] == "promoted"
    assert aliases(name) == {"champion": "3"}


def test_allow_champion_false_never_moves_champion(runs: list[dict], name: str) -> None:
    closed = GATE.model_copy(update={"allow_champion": False})
    result = register(name, runs[0], 0.99, closed)
    assert result["decision"] == "challenger_only"
    assert aliases(name) == {"challenger": "1"}
    register(name, runs[1], 0.75)
    assert register(name, runs[2], 0.99, closed)["decision"] == "challenger_only"
    assert aliases(name) == {"champion": "2", "challenger": "3"}


def test_below_min_accuracy_is_never_champion(runs: list[dict], name: str) -> None:
    result = register(name, runs[0], 0.69)
    assert (result["decision"], result["champion_version"]) == ("rejected", None)
    # Not even challenger: whoever serves @challenger must not get a model below the floor.
    assert aliases(name) == {}
    assert result["challenger_version"] is None
    version = mlflow.MlflowClient().get_model_version(name, "1")
    assert version.tags["registry.decision"] == "rejected"
    assert version.description.startswith("test accuracy 0.6900 — rejected, no alias: was below")
    # Even far better than a champion, a version below the floor stays out.
    register(name, runs[1], 0.70)
    lax = GATE.model_copy(update={"min_accuracy": 0.95})
    assert register(name, runs[2], 0.94, lax)["decision"] == "rejected"
    assert aliases(name) == {"champion": "2"}


def test_challenger_rerun_below_the_floor_loses_its_alias(runs: list[dict], name: str) -> None:
    register(name, runs[0], 0.80)
    register(name, runs[1], 0.75)
    assert aliases(name) == {"champion": "1", "challenger": "2"}
    # v2's evaluation again, on test data where it falls below the floor.
    assert register(name, runs[1], 0.40)["challenger_version"] is None
    assert aliases(name) == {"champion": "1"}


def test_rerun_for_same_run_creates_no_second_version(runs: list[dict], name: str) -> None:
    first = register(name, runs[0], 0.80)
    again = register(name, runs[0], 0.80)
    assert (again["version"], again["created"]) == (first["version"], False)
    assert again["decision"] == "already_champion"
    assert len(mlflow.MlflowClient().search_model_versions(f"name = '{name}'")) == 1
    # The description now dates this evaluation's decision, not the first one's.
    description = mlflow.MlflowClient().get_model_version(name, first["version"]).description
    assert "**Decision**: at re-evaluation on " in description
    assert aliases(name) == {"champion": "1"}


def test_rerun_of_older_run_leaves_challenger_on_newest(runs: list[dict], name: str) -> None:
    register(name, runs[0], 0.80)
    register(name, runs[1], 0.75)
    assert register(name, runs[0], 0.80)["challenger_version"] == "2"
    assert aliases(name) == {"champion": "1", "challenger": "2"}


def test_champion_without_accuracy_tag_is_kept(runs: list[dict], name: str) -> None:
    register(name, runs[0], 0.80)
    mlflow.MlflowClient().delete_model_version_tag(name, "1", "test_accuracy")
    result = register(name, runs[1], 0.99)
    assert result["decision"] == "kept"
    assert "test_accuracy" in result["reason"]


def test_unreachable_tracking_server_is_a_clear_error(
    runs: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    mlflow.set_tracking_uri(dead)
    try:
        with pytest.raises(PipelineError, match=r"registering models:/m-\w+ as model 'cnn-dead'"):
            register_model_version(
                "cnn-dead", runs[0]["model_uri"], runs[0]["run_id"], {}, 0.9, GATE
            )
    finally:
        mlflow.set_tracking_uri(runs[0]["tracking_uri"])


def test_version_records_the_register_params_of_its_decision(runs: list[dict], name: str) -> None:
    strict = RegisterParams(min_accuracy=0.85, min_improvement=0.01, allow_champion=True)
    assert register(name, runs[0], 0.80, strict)["decision"] == "rejected"
    text = mlflow.MlflowClient().get_model_version(name, "1").description
    assert "`register.min_accuracy` 0.85, `register.min_improvement` 0.01" in text
    assert "`register.allow_champion` true" in text
    register(name, runs[0], 0.80, GATE)  # a rerun with another gate records that one
    text = mlflow.MlflowClient().get_model_version(name, "1").description
    assert "`register.min_accuracy` 0.7," in text


# Registers one run's model once the file argv[4] appears, so every racer starts at once.
RACER = """
import json, sys, time
from pathlib import Path
import mlflow
from pipeline.core.params import RegisterParams
from pipeline.evaluate.registry import register_model_version
name, model_uri, run_id, go = sys.argv[1:5]
mlflow.MlflowClient().search_registered_models(max_results=1)  # connected before the start
print("ready", flush=True)
while not Path(go).exists():
    time.sleep(0.001)
gate = RegisterParams(min_accuracy=0.70, min_improvement=0.0, allow_champion=True)
result = register_model_version(name, model_uri, run_id, {}, 0.8, gate)
print(json.dumps(result.to_dict()), flush=True)
"""


def test_concurrent_registrations_of_one_run_make_one_version(
    runs: list[dict], name: str, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    env = {**os.environ, **QUIET_ENV, "MLFLOW_TRACKING_URI": runs[1]["tracking_uri"]}
    command = [sys.executable, "-c", RACER, name, runs[1]["model_uri"], runs[1]["run_id"], str(go)]
    racers = [
        subprocess.Popen(command, cwd=REPO_ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]  # fmt: skip
    try:
        assert [racer.stdout.readline().strip() for racer in racers] == ["ready"] * 4
        go.touch()
        outputs = [racer.communicate(timeout=300) for racer in racers]
    finally:
        for racer in racers:
            racer.kill()
            racer.wait(timeout=60)
    assert [racer.returncode for racer in racers] == [0] * 4, outputs
    results = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    assert len(mlflow.MlflowClient().search_model_versions(f"name = '{name}'")) == 1
    assert {result["version"] for result in results} == {"1"}
    assert sorted(result["created"] for result in results) == [False, False, False, True]
    # Promoted once, by the racer that created it: a promoted version is never the challenger.
    assert aliases(name) == {"champion": "1"}


# Holds the lock of registered model argv[1] in store argv[2] until its stdin closes.
HOLDER = """
import sys
from pipeline.core.locks import exclusive_lock
from pipeline.evaluate.registry import registry_lock_path
with exclusive_lock(registry_lock_path(sys.argv[2], sys.argv[1]), "test", 1.0):
    print("holding", flush=True)
    sys.stdin.read()
"""


def test_registration_waits_for_the_lock_and_names_its_holder(
    runs: list[dict], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = runs[0]["tracking_uri"]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, name, uri], cwd=REPO_ROOT, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, **QUIET_ENV},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "holding"
        monkeypatch.setattr("pipeline.evaluate.registry.REGISTRY_LOCK_WAIT_S", 0.5)
        with pytest.raises(PipelineError) as err:
            register(name, runs[0], 0.8)
    finally:
        holder.communicate(timeout=60)
    message = str(err.value)
    assert f"registered model '{name}' is locked by pid {holder.pid} on host" in message
    assert "another evaluate is registering to it" in message
    assert not mlflow.MlflowClient().search_model_versions(f"name = '{name}'")
    register(name, runs[0], 0.8)  # the lock died with its holder
    assert len(mlflow.MlflowClient().search_model_versions(f"name = '{name}'")) == 1


# Registers like an evaluate, but kill -9s itself just before its argv[5]-th write to the
# registry (1 = the first); prints "done" when it got through all of them.
KILLED_AT = """
import os, signal, sys
from mlflow import MlflowClient
from pipeline.core.params import RegisterParams
from pipeline.evaluate.registry import register_model_version
name, model_uri, run_id, accuracy, kill_at = sys.argv[1:6]
writes = 0
def killing(method):
    def write(*args, **kwargs):
        global writes
        writes += 1
        if writes == int(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)
        return method(*args, **kwargs)
    return write
for method in ("create_registered_model", "create_model_version", "set_registered_model_alias",
               "delete_registered_model_alias", "set_model_version_tag", "update_model_version",
               "update_registered_model", "set_registered_model_tag"):
    setattr(MlflowClient, method, killing(getattr(MlflowClient, method)))
gate = RegisterParams(min_accuracy=0.70, min_improvement=0.0, allow_champion=True)
register_model_version(name, model_uri, run_id, {}, float(accuracy), gate)
print("done", flush=True)
"""


def test_a_promotion_killed_at_any_write_is_healed_by_the_next_evaluate(
    runs: list[dict], name: str
) -> None:
    env = {**os.environ, **QUIET_ENV, "MLFLOW_TRACKING_URI": runs[0]["tracking_uri"]}
    for kill_at in itertools.count(1):
        model = f"{name}-killed-at-{kill_at}"
        register(model, runs[0], 0.80)
        register(model, runs[1], 0.75)
        assert aliases(model) == {"champion": "1", "challenger": "2"}
        # v2's evaluation again, on better test data: it wins, and the run is killed mid-way.
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_AT, model, runs[1]["model_uri"], runs[1]["run_id"],
             "0.85", str(kill_at)],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if killed.returncode == 0:
            assert killed.stdout.strip() == "done"
            break
        assert killed.returncode == -9, killed.stderr[-3000:]
        # The next evaluate of the same run ends where an uninterrupted one would have.
        result = register(model, runs[1], 0.85)
        assert aliases(model) == {"champion": "2"}, f"killed before write {kill_at}"
        assert result["decision"] in {"promoted", "already_champion"}
        assert (result["champion_version"], result["challenger_version"]) == ("2", None)
        tags = mlflow.MlflowClient().get_model_version(model, "2").tags
        assert float(tags["test_accuracy"]) == 0.85
        assert tags["registry.decision"] == result["decision"]
    assert kill_at > 5, "the registration made fewer writes than expected"


def test_both_aliases_on_one_version_are_healed(runs: list[dict], name: str) -> None:
    # What a promotion killed between its alias moves left behind before they were reordered.
    register(name, runs[0], 0.80)
    register(name, runs[1], 0.75)
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", "2")
    result = register(name, runs[1], 0.85)
    assert aliases(name) == {"champion": "2"}
    assert (result["decision"], result["challenger_version"]) == ("already_champion", None)


def test_lock_files_left_by_killed_evaluates_are_removed_and_git_ignored(
    runs: list[dict], name: str
) -> None:
    from pipeline.evaluate.registry import registry_lock_path

    uri = runs[0]["tracking_uri"]
    # What a kill -9 leaves: the file, with no flock on it (flocks die with their process).
    stale = registry_lock_path(uri, f"{name}-gone")
    stale.write_text('{"pid": 1}')
    held = registry_lock_path(uri, f"{name}-held")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, f"{name}-held", uri], cwd=REPO_ROOT, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, **QUIET_ENV},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "holding"
        register(name, runs[0], 0.8)
        assert not stale.exists(), "the next evaluate removes a lock nobody holds"
        assert held.exists(), "but never one a live evaluate holds"
    finally:
        holder.communicate(timeout=60)
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "--no-index", "mlflow.db.registry-0123456789abcdef.lock"],
        cwd=REPO_ROOT,
    )
    assert ignored.returncode == 0, "git status must not list a leftover lock"
