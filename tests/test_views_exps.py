"""``make exps``: DVC's experiments table, cut to fit 120 columns, over a real DVC repo.

The repo is a tiny one (one stage that writes the project's three headline metrics from its
params in a few milliseconds): the table is about what ``dvc exp show`` prints, not training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, VENV_BIN
from views.exps import Row, differing_params, experiment_rows, render, significant

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
# The project's param layout, with a long data URL and md5 that every experiment overrides.
PARAMS = """\
data:
  url: https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
  md5: c32a1d4ab5d03f1284b67883e8d87530
preprocess:
  max_train_images: null
train:
  epochs: 50
  optimizer: rmsprop
  learning_rate: 0.001
register:
  min_accuracy: 0.7
"""
# Writes the metrics files the project's stages write, with figures that depend on the params.
STAGE = """\
import json, yaml
p = yaml.safe_load(open("params.yaml"))
score = round(0.1 + 0.05 * p["train"]["epochs"] + p["train"]["learning_rate"], 4)
json.dump({"accuracy": score, "loss": 2.0, "macro_f1": score / 2}, open("metrics.json", "w"))
json.dump({"val_loss": 2.2, "mlflow_run_id": "0123456789abcdef0123456789abcdef"},
          open("train_metrics.json", "w"))
"""
DVC_YAML = """\
stages:
  train:
    cmd: python stage.py
    deps: [stage.py]
    params: [data, preprocess, train, register]
    metrics:
      - metrics.json: {cache: false}
      - train_metrics.json: {cache: false}
"""
EXPERIMENTS = {
    "adam-lr1e-3": ["train.optimizer=adam", "train.learning_rate=0.001", "train.epochs=2"],
    "rmsprop-lr1e-3": ["train.optimizer=rmsprop", "train.learning_rate=0.001", "train.epochs=2"],
    "sgd-lr1e-4-e1": ["train.optimizer=sgd", "train.learning_rate=0.0001", "train.epochs=1"],
}
# Set the same way in every experiment: not compared, though each differs from the commit.
COMMON = [
    "data.url=/work/shared/data/cifar-10-binary.tar.gz",
    "data.md5=a413eb6ddea13dd5151cb1bdffea524c",
    "preprocess.max_train_images=2000",
    "register.min_accuracy=0.15",
]


def revision(params: dict) -> dict:
    """One revision of ``dvc exp show --json``, in DVC 3's shape, with only its params."""
    return {"params": {"params.yaml": {"data": params}}}


def test_params_that_differ_between_experiments_not_from_the_baseline() -> None:
    base = {"data": {"url": "https://x"}, "train": {"epochs": 50, "optimizer": "rmsprop"}}
    local = {"data": {"url": "/local"}, "preprocess": {"max_train_images": 2000}}

    def experiment(optimizer: str, gate: bool) -> dict:
        train = {"epochs": 2, "optimizer": optimizer}
        return {"revs": [{"data": revision(local | {"train": train, "register": {"gate": gate}})}]}

    failed = {"revs": [{"name": "failed", "data": None}]}
    shown = [
        {"rev": "workspace", "data": revision(base), "experiments": None},
        {
            "rev": "a" * 40,
            "data": revision(base),
            "experiments": [experiment("adam", True), experiment("sgd", False), failed],
        },
    ]
    # Epochs (2 in both) and data (the baseline's only) differ from the commit, not between them;
    # the registry's gate (register.*) changes no model.
    assert differing_params(shown) == ["train.optimizer"]
    # With one experiment, what differs from the commit, data.* left out.
    shown[1]["experiments"] = shown[1]["experiments"][:1]
    assert differing_params(shown) == [
        "preprocess.max_train_images", "train.epochs", "train.optimizer",
    ]  # fmt: skip


def display_width(line: str) -> int:
    """Terminal cells a line takes (box-drawing characters take one, wide characters two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


@pytest.mark.e2e
def test_make_exps_table_fits_120_columns_with_three_experiments(tmp_path: Path) -> None:
    files = {"params.yaml": PARAMS, "stage.py": STAGE, "dvc.yaml": DVC_YAML}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "COLUMNS": "120"}
    env["PYTHONPATH"] = str(REPO_ROOT)

    def run(*command: str) -> str:
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    run(*GIT, "init", "-q")
    run("dvc", "init", "-q")
    run(*GIT, "add", "-A")
    run(*GIT, "commit", "-qm", "baseline")
    for name, sets in EXPERIMENTS.items():
        run("dvc", "exp", "run", "-q", "-n", name, *(f"-S{s}" for s in [*COMMON, *sets]))

    table = run(sys.executable, "-m", "views.exps").splitlines()
    assert max(display_width(line) for line in table) <= 120
    text = "\n".join(table)
    assert "…" not in text  # nothing cut
    header = next(line for line in table if "Experiment" in line).split()
    # The headline metrics, then the params that differ, keys without their section.
    assert header == [
        "Experiment", "accuracy", "macro_f1", "val_loss", "epochs", "learning_rate", "optimizer",
    ]  # fmt: skip
    # Best test accuracy first: adam (0.201) above rmsprop (0.201, then name) above sgd (0.1501).
    rows = [line for line in table if "[" in line]
    assert [row.split("[")[1].split("]")[0] for row in rows][-1] == "sgd-lr1e-4-e1"
    assert "0.1501" in rows[-1] and "sgd" in rows[-1] and "0.0001" in rows[-1]
    assert "0.07505" in rows[-1], "macro F1 at 4 significant digits"
    assert "workspace" not in text
    # The same params DVC itself reports as changed, but for the ones set alike everywhere.
    listed = json.loads(run("dvc", "exp", "show", "--json"))
    assert differing_params(listed) == ["train.epochs", "train.learning_rate", "train.optimizer"]


def test_metrics_at_four_significant_digits() -> None:
    assert [significant(v) for v in (0.1, 0.1825, 0.0967367, 2.20291, 0.048932)] == [
        "0.1000", "0.1825", "0.09674", "2.203", "0.04893",
    ]  # fmt: skip


def shown_rev(name: str, state: str, accuracy: float | None, lr: str) -> dict:
    metrics = {} if accuracy is None else {"m.json": {"data": {"accuracy": accuracy}}}
    data = {"params": {"params.yaml": {"data": {"train": {"learning_rate": lr}}}}}
    return {
        "executor": {"state": state},
        "revs": [{"rev": name[0] * 40, "name": name, "data": data | {"metrics": metrics}}],
    }


def test_queued_and_running_experiments_sort_below_finished_ones() -> None:
    shown = [{"rev": "b" * 40, "data": {}, "experiments": [
        shown_rev("queued-one", "queued", None, "0.01"),
        shown_rev("good", "success", 0.3, "0.001"),
        shown_rev("running-one", "running", None, "0.02"),
        shown_rev("better", "success", 0.4, "0.002"),
    ]}]  # fmt: skip
    labels = [row.label.split("[")[1].rstrip("]") for row in experiment_rows(shown)]
    assert labels == ["better", "good", "queued-one", "running-one"]
    table = render(experiment_rows(shown), ["train.learning_rate"], 120)
    assert "queued" in table[3] and "running" in table[4]


def test_columns_that_do_not_fit_are_dropped_and_named() -> None:
    params = [f"train.param_{n}" for n in range(8)] + ["model.param_0"]
    row = Row("abc1234 [exp]", "success", {"accuracy": 0.5}, {p: '"long-value"' for p in params})
    wide = render([row], params, 200)
    assert "train.param_0" in wide[0] and "model.param_0" in wide[0], "ambiguous keys keep sections"
    assert "param_1" in wide[0] and "train.param_1" not in wide[0]
    narrow = render([row], params, 80)
    assert max(map(len, narrow)) <= 80
    note = " ".join(narrow[2:])
    assert note.startswith("(not shown, to fit 80 columns: ") and "model.param_0" in note
