"""params.yaml: one source of values, one-line errors, --set overrides, every stage's --help."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from pipeline.core.errors import ParamsError
from pipeline.core.params import Params, flatten_params, load_params
from tests.conftest import REPO_ROOT, repo_params, run_stage

REPO_PARAMS = (REPO_ROOT / "params.yaml").read_text()


def schema_fields(model: type[BaseModel] = Params, prefix: str = "") -> dict[str, object]:
    """Every leaf field of the schema: ``{"train.epochs": FieldInfo, ...}``."""
    leaves: dict[str, object] = {}
    for name, info in model.model_fields.items():
        key = prefix + (info.alias or name)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            leaves |= schema_fields(info.annotation, key + ".")
        else:
            leaves[key] = info
    return leaves


def test_values_live_in_params_yaml_only() -> None:
    # The schema holds types and ranges; a default there would be a second source of values.
    fields = schema_fields()
    assert [key for key, info in fields.items() if not info.is_required()] == []
    # ...and params.yaml sets every key the schema knows.
    assert set(flatten_params(load_params(REPO_ROOT / "params.yaml"))) == set(fields)
    raw = yaml.safe_load(REPO_PARAMS)
    assert set(raw) == {"data", "preprocess", "model", "train", "mlflow", "register"}


def test_a_key_missing_from_the_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(REPO_PARAMS.replace("  learning_rate: 0.001\n", ""))
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    assert str(caught.value) == (
        "params.yaml: train.learning_rate: missing; the params file must set every key"
    )


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


def test_yaml_scalars_are_read_as_dvc_writes_them() -> None:
    # YAML 1.2, as DVC's -S writes params.yaml: 1e-3 is a float, "on" is not a boolean.
    params = repo_params("train.learning_rate=1e-3", "train.mixed_precision=on")
    assert params.train.learning_rate == 0.001
    assert params.train.mixed_precision == "on"


# Each is refused by the stage before TensorFlow loads: one line, exit 2, no MLflow run.
BAD_INPUT = {
    "zero filters": (["--set", "model.conv_filters=[0]"],
                     "params.yaml: model.conv_filters.0: must be between 1 and 4096 (got 0)"),
    "negative filters": (["--set", "model.conv_filters=[32, -1]"],
                         "params.yaml: model.conv_filters.1: must be between 1 and 4096 (got -1)"),
    "kernel too big for 3 blocks": (
        ["--set", "model.kernel_size=5"],
        "params.yaml: model: kernel_size 5 with 3 conv blocks shrinks the 32x32 image to nothing",
    ),
    "float seed": (["--set", "train.seed=1e20"],
                   "params.yaml: train.seed: must be a valid integer (got 1e+20)"),
    "huge seed": (["--set", "train.seed=100000000000000000000"],
                  "params.yaml: train.seed: must be between 0 and 4294967295"),
    "bool epochs": (["--set", "train.epochs=true"],
                    "params.yaml: train.epochs: must be a valid integer (got true)"),
    "empty file": (["--params", "{tmp}/empty.yaml"],
                   "empty.yaml: is empty; it must set every param"),
    "folder": (["--params", "{tmp}"], "{tmp}: is a folder, not a params file"),
    "duplicate key": (["--params", "{tmp}/dup.yaml"],
                      "dup.yaml: duplicate key 'epochs' (lines "),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_before_any_run(case: str, tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "dup.yaml").write_text(REPO_PARAMS.replace("  epochs: 50\n", "  epochs: 50\n" * 2))
    args, message = BAD_INPUT[case]
    args = [arg.format(tmp=tmp_path) for arg in args]
    store = tmp_path / "mlflow.db"
    result = run_stage(
        "train", *args, "--models-dir", tmp_path / "models",
        "--checkpoints-dir", tmp_path / "checkpoints",
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"}, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], "one line"
    assert result.stderr.startswith("error: " + message.format(tmp=tmp_path))
    assert not store.exists(), "refused before the MLflow store was touched"


def test_malformed_override_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="expected key=value"):
        load_params(REPO_ROOT / "params.yaml", ["train.epochs"])
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("train: [1, 2")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")


def test_flattened_params_carry_stage_prefixes() -> None:
    flat = flatten_params(repo_params())
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
