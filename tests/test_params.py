"""params.yaml schema: defaults, one-line errors, --set overrides, and every stage's --help."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.errors import ParamsError
from pipeline.params import Params, flatten_params, load_params
from tests.conftest import REPO_ROOT, run_stage


def test_repo_params_equal_the_schema_defaults() -> None:
    # params.yaml pins every hyperparameter: it must spell out exactly the documented defaults.
    assert load_params(REPO_ROOT / "params.yaml") == Params()
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert set(raw) == {"data", "preprocess", "model", "train", "mlflow", "register"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("preprocess.val_size=0", "preprocess.val_size: must be between 10 and 25000 (got 0)"),
        ("preprocess.val_sise=10", "preprocess.val_sise: unknown key (got 10)"),
        ("trian.epochs=2", "trian: unknown key (got {'epochs': 2})"),
        ("train.epochs=two", "train.epochs: must be a valid integer"),
        ("preprocess.max_train_images=5", "preprocess.max_train_images: must be >= 10 (got 5)"),
        ("data.md5=abc", "data.md5: must be 32 hex digits, or null to skip the check (got 'abc')"),
        ("register.min_accuracy=1.5", "register.min_accuracy: must be between 0.0 and 1.0"),
        ("train.optimizer=adagrad", "train.optimizer: must be 'rmsprop', 'adam' or 'sgd'"),
    ],
)
def test_bad_values_give_one_line_naming_key_problem_and_value(override: str, message: str) -> None:
    with pytest.raises(ParamsError) as caught:
        load_params(REPO_ROOT / "params.yaml", [override])
    text = str(caught.value)
    assert text.startswith(f"params.yaml: {message}")
    assert "\n" not in text
    assert caught.value.exit_code == 2


def test_overrides_are_parsed_as_yaml_values() -> None:
    params = load_params(
        REPO_ROOT / "params.yaml",
        ["data.md5=null", "preprocess.max_train_images=500", "train.deterministic=false"],
    )
    assert params.data.md5 is None
    assert params.preprocess.max_train_images == 500
    assert params.train.deterministic is False


def test_malformed_override_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="expected key=value"):
        load_params(REPO_ROOT / "params.yaml", ["train.epochs"])
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("train: [1, 2")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")


def test_flattened_params_carry_stage_prefixes() -> None:
    flat = flatten_params(Params())
    assert flat["train.epochs"] == 50
    assert flat["model.dense_units"] == 512
    assert flat["register.min_accuracy"] == 0.70
    assert flat["data.md5"] == "c32a1d4ab5d03f1284b67883e8d87530"


@pytest.mark.parametrize("stage", ["download", "preprocess", "train", "evaluate"])
def test_every_stage_has_help(stage: str) -> None:
    result = run_stage(stage, "--help", timeout=120)
    assert result.returncode == 0
    assert f"python -m stages.{stage}" in result.stdout
    assert "--params" in result.stdout and "--set" in result.stdout
