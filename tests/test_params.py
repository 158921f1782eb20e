"""params.yaml: one source of values, one-line errors, --set overrides, every stage's --help."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from pipeline.core.errors import ParamsError
from pipeline.core.params import Params, flatten_params, load_params, parse_override
from tests.conftest import REPO_ROOT, repo_params, run_stage

REPO_PARAMS = (REPO_ROOT / "params.yaml").read_text()
# The line number of the first line appended to REPO_PARAMS: params.yaml grows with new keys.
APPENDED = REPO_PARAMS.count("\n") + 1


def line_of(text: str) -> int:
    """The line number of the first line of params.yaml that starts with ``text``."""
    lines = REPO_PARAMS.splitlines()
    return next(number for number, line in enumerate(lines, 1) if line.startswith(text))


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
    flat = flatten_params(load_params(REPO_ROOT / "params.yaml"))
    # A nested section (model.reference) is one value there; its keys are leaves here.
    leaves = {
        f"{key}.{inner}" if isinstance(value, dict) else key
        for key, value in flat.items()
        for inner in (value if isinstance(value, dict) else [None])
    }
    assert leaves == set(fields)
    raw = yaml.safe_load(REPO_PARAMS)
    sections = ["data", "preprocess", "model", "train", "mlflow", "evaluate", "register"]
    assert set(raw) == {*sections, "predict", "checks"}


def test_a_long_refused_name_is_not_echoed_whole() -> None:
    name = "x" * 501
    with pytest.raises(ParamsError) as caught:
        load_params(REPO_ROOT / "params.yaml", [f"mlflow.experiment_name={name}"])
    assert str(caught.value) == (
        "params.yaml: mlflow.experiment_name: must have at most 500 characters "
        f"(got {'x' * 40!r}... (501 characters))"
    )


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
    "zero filters": (
        ["--set", "model.reference.conv_filters=[0]"],
        "params.yaml: model.reference.conv_filters.0: must be between 1 and 4096 (got 0)",
    ),
    "negative filters": (
        ["--set", "model.reference.conv_filters=[32, -1]"],
        "params.yaml: model.reference.conv_filters.1: must be between 1 and 4096 (got -1)",
    ),
    "kernel too big for 3 blocks": (
        ["--set", "model.reference.kernel_size=5"],
        "params.yaml: model.reference: kernel_size 5 with 3 conv blocks shrinks the 32x32 image"
        " to nothing",
    ),
    "unknown arch": (
        ["--set", "model.arch=resnet50"],
        "params.yaml: model.arch: must be one of reference, fast_resnet (got 'resnet50')",
    ),
    "float seed": (["--set", "train.seed=1e20"],
                   "params.yaml: train.seed: must be a valid integer (got 1e+20)"),
    "huge seed": (["--set", "train.seed=100000000000000000000"],
                  "params.yaml: train.seed: must be between 0 and 4294967295"),
    "bool epochs": (["--set", "train.epochs=true"],
                    "params.yaml: train.epochs: must be a valid integer (got true)"),
    # YAML 1.2, the one --set parser: `yes` is a string, not a boolean.
    "yes for a bool": (["--set", "train.deterministic=yes"],
                       "params.yaml: train.deterministic: must be a valid boolean (got 'yes')"),
    "empty file": (["--params", "{tmp}/empty.yaml"],
                   "empty.yaml: is empty; it must set every param"),
    "folder": (["--params", "{tmp}"], "{tmp}: is a folder, not a params file"),
    "duplicate key": (["--params", "{tmp}/dup.yaml"],
                      "dup.yaml: duplicate key 'epochs' (lines "),
}  # fmt: skip


@pytest.mark.e2e
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
    assert flat["model.arch"] == "reference"
    # A nested section stays one value: Kubeflow passes it as one struct parameter.
    assert flat["model.reference"]["dense_units"] == 512
    assert flat["register.min_accuracy"] == 0.70
    assert flat["data.md5"] == "c32a1d4ab5d03f1284b67883e8d87530"


@pytest.mark.e2e
@pytest.mark.parametrize("stage", ["download", "preprocess", "train", "evaluate", "predict"])
def test_every_stage_has_help(stage: str) -> None:
    result = run_stage(stage, "--help", timeout=120)
    assert result.returncode == 0
    assert f"python -m stages.{stage}" in result.stdout
    assert "--params" in result.stdout and "--set" in result.stdout


# --- how params.yaml is read (YAML 1.2, strict) --------------------------------------------------


def write_params(folder: Path, text: str, name: str = "params.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def load_error(path: Path, overrides: list[str] | None = None) -> str:
    """The one-line ParamsError message of loading ``path`` (the test fails if it loads)."""
    with pytest.raises(ParamsError) as caught:
        load_params(path, overrides)
    text = str(caught.value)
    assert "\n" not in text, text
    return text


def test_yaml_1_2_scalars_in_the_file(tmp_path: Path) -> None:
    # YAML 1.1's booleans are strings in 1.2 (DVC's reading): refused for a bool, kept for a str.
    for word in ["yes", "no", "on", "off", "y", "n", "Yes", "ON"]:
        text = REPO_PARAMS.replace("  deterministic: true\n", f"  deterministic: {word}\n")
        expected = f"train.deterministic: must be a valid boolean (got '{word}')"
        assert load_error(write_params(tmp_path, text)) == f"params.yaml: {expected}"
    text = REPO_PARAMS.replace("  learning_rate: 0.001\n", "  learning_rate: 1e-3\n")
    text = text.replace("  seed: 42\n", "  seed: 0o17\n")  # YAML 1.2 octal
    text = text.replace("  experiment_name: cifar10-cnn\n", "  experiment_name: off\n")
    params = load_params(write_params(tmp_path, text))
    assert params.train.learning_rate == 0.001
    assert params.preprocess.seed == params.train.seed == 15
    assert params.mlflow.experiment_name == "off"


def test_duplicate_keys_name_both_lines(tmp_path: Path) -> None:
    text = REPO_PARAMS.replace("  epochs: 50\n", "  epochs: 50\n  epochs: 5\n")
    assert load_error(write_params(tmp_path, text)) == (
        f"params.yaml: duplicate key 'epochs' (lines {line_of('  epochs:')} and"
        f" {line_of('  epochs:') + 1})"
    )
    text = REPO_PARAMS + "train:\n  epochs: 5\n"  # a whole section given twice
    assert load_error(write_params(tmp_path, text)) == (
        f"params.yaml: duplicate key 'train' (lines {line_of('train:')} and {APPENDED})"
    )


def test_yaml_syntax_error_is_one_line_with_its_line(tmp_path: Path) -> None:
    text = REPO_PARAMS.replace("    kernel_size: 3\n", "    kernel_size: [3\n")
    message = load_error(write_params(tmp_path, text))
    assert message == (
        f"params.yaml: not valid YAML: line {line_of('    kernel_size:') + 1}: expected ',' or"
        f" ']', but got ':' (while parsing a flow sequence from line {line_of('    kernel_size:')})"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # An alias inside its own anchor: the data would nest itself forever.
        ("loop: &a [1, *a]\n", f"line {APPENDED}: alias *a refers to its own anchor"),
        (
            "a: &x 1\nb: &x 2\n",
            f"line {APPENDED + 1}: anchor &x defined again (first on line {APPENDED})",
        ),
        (
            "base: &b {epochs: 2}\nmore:\n  <<: *b\n",
            f"line {APPENDED + 2}: merge keys (<<) are not read; write the keys out",
        ),
        (
            "deep: " + "[" * 200 + "]" * 200 + "\n",
            f"line {APPENDED}: nested more than 20 levels deep",
        ),
    ],
    ids=["recursive alias", "anchor defined twice", "merge key", "deep nesting"],
)
def test_anchor_and_nesting_tricks_are_refused_in_one_line(
    text: str, message: str, tmp_path: Path
) -> None:
    assert load_error(write_params(tmp_path, REPO_PARAMS + text)) == f"params.yaml: {message}"


def test_a_yaml_1_1_directive_is_refused(tmp_path: Path) -> None:
    # Under `%YAML 1.1` ruamel (and DVC) read `yes` as true: the stages would disagree with DVC.
    text = "%YAML 1.1\n---\n" + REPO_PARAMS
    assert load_error(write_params(tmp_path, text)) == (
        "params.yaml: declares %YAML 1.1; params are read as YAML 1.2: remove the directive"
    )


def test_small_anchors_are_fine(tmp_path: Path) -> None:
    text = REPO_PARAMS.replace("  seed: 42\n", "  seed: &seed 42\n", 1)
    text = text.replace("  seed: 42\n", "  seed: *seed\n")
    params = load_params(write_params(tmp_path, text))
    assert params.preprocess.seed == params.train.seed == 42


# Billion laughs: ten anchors, each nine aliases of the one before, 9**10 leaves once expanded.
LAUGHS = [f"&a0 [{', '.join(['lol'] * 9)}]"]
LAUGHS += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
BOMB = f"[{', '.join(LAUGHS)}]"
# Loads params in a child with 2 GiB of address space: a bomb that got expanded fails, not swaps.
LOAD_IN_A_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from pipeline.core.params import load_params
from stages.cli import call_stage
call_stage(lambda: load_params(sys.argv[1], sys.argv[2:]))
"""


@pytest.mark.parametrize("where", ["file", "--set"])
def test_an_alias_bomb_is_refused_fast_and_unexpanded(where: str, tmp_path: Path) -> None:
    if where == "file":
        path = write_params(tmp_path, REPO_PARAMS.replace("  epochs: 50\n", f"  epochs: {BOMB}\n"))
        args, label = [path], f"params.yaml: line {line_of('  epochs:')}"
    else:
        args, label = [REPO_ROOT / "params.yaml", f"train.epochs={BOMB}"], "--set train.epochs"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", LOAD_IN_A_CHILD, *map(str, args)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert result.stderr.startswith(
        f"error: {label}: aliases would expand to more than 10000 values"
    ), result.stderr
    assert elapsed < 20, f"took {elapsed:.1f} s"


# --- one parser for `--set key=value`: the stages, .ci/retrain.py, cifar10_kfp.submit ------------


@pytest.mark.parametrize(
    ("override", "parsed"),
    [
        ("train.learning_rate=1e-3", ("train.learning_rate", 0.001)),
        ("train.seed=1e20", ("train.seed", 1e20)),
        ("train.deterministic=yes", ("train.deterministic", "yes")),  # a string in YAML 1.2
        ("train.deterministic=false", ("train.deterministic", False)),
        ("train.mixed_precision=on", ("train.mixed_precision", "on")),
        ("data.md5=null", ("data.md5", None)),
        ("data.md5=", ("data.md5", None)),
        ("model.reference.conv_filters=[8, 16]", ("model.reference.conv_filters", [8, 16])),
        ("train.optimizer=[adam", ("train.optimizer", "[adam")),  # not YAML: kept as text
        ("data.url=http://x/a=b", ("data.url", "http://x/a=b")),
    ],
)
def test_parse_override_types_values_as_yaml_1_2(override: str, parsed: tuple) -> None:
    assert parse_override(override) == parsed


@pytest.mark.parametrize("override", ["train.epochs", "=2", ""])
def test_parse_override_refuses_a_malformed_override(override: str) -> None:
    with pytest.raises(ParamsError) as caught:
        parse_override(override)
    assert str(caught.value) == f"--set {override}: expected key=value, e.g. train.epochs=2"


def load_retrain() -> Any:
    """.ci/retrain.py as a module (it is a script, not in a package)."""
    spec = importlib.util.spec_from_file_location("ci_retrain", REPO_ROOT / ".ci" / "retrain.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_retrain_writes_overrides_the_stages_read_back(tmp_path: Path) -> None:
    path = write_params(tmp_path, REPO_PARAMS)
    load_retrain().apply_overrides(path, ["train.learning_rate=1e-3", "train.epochs=2"])
    params = load_params(path)  # what `dvc repro`'s stages will read
    assert params.train.learning_rate == 0.001
    assert params.train.epochs == 2
    assert "# rmsprop | adam | sgd" in path.read_text(), "comments kept"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.deterministic=yes", "train.deterministic: must be a valid boolean (got 'yes')"),
        ("train.epochs=0", "train.epochs: must be between 1 and 10000 (got 0)"),
    ],
)
def test_retrain_refuses_a_bad_override_and_leaves_params_unchanged(
    override: str, message: str, tmp_path: Path
) -> None:
    path = write_params(tmp_path, REPO_PARAMS)
    with pytest.raises(ParamsError) as caught:
        load_retrain().apply_overrides(path, ["train.epochs=2", override])
    assert str(caught.value) == f"params.yaml: {message}"
    assert path.read_text() == REPO_PARAMS
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"], "no temp file left"


def test_retrain_command_refuses_yes_for_a_bool_before_any_work() -> None:
    before = (REPO_ROOT / "params.yaml").read_bytes()
    result = subprocess.run(
        [sys.executable, ".ci/retrain.py", "--no-push", "--set", "train.deterministic=yes"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: params.yaml: train.deterministic: must be a valid boolean (got 'yes')"
    ]
    assert (REPO_ROOT / "params.yaml").read_bytes() == before


def test_submit_types_overrides_like_the_stages() -> None:
    from cifar10_kfp.compile import OUTPUT
    from cifar10_kfp.submit import run_arguments

    (train,) = run_arguments(OUTPUT, ["train.learning_rate=1e-3", "train.seed=7"]).values()
    sent = json.loads(train)
    assert (sent["learning_rate"], sent["seed"]) == (0.001, 7)
    assert isinstance(sent["seed"], int)
    with pytest.raises(ParamsError) as caught:
        run_arguments(OUTPUT, ["train.deterministic=yes"])
    assert str(caught.value) == (
        "pipeline parameters: train.deterministic: must be a valid boolean (got 'yes')"
    )
    with pytest.raises(ParamsError, match="expected key=value"):
        run_arguments(OUTPUT, ["train.epochs"])


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["train.devices=2"],
            "train: devices 2 needs distribution data_parallel (distribution none trains on one "
            "device)",
        ),
        (
            ["train.distribution=data_parallel", "train.devices=3"],
            "train: batch_size 256 does not split evenly over 3 devices",
        ),
        (
            ["train.distribution=data_parallel", "train.devices=-1"],
            "train.devices: must be between 0 and 4096 (got -1)",
        ),
        (
            ["train.distribution=mirrored"],
            "train.distribution: must be 'none' or 'data_parallel' (got 'mirrored')",
        ),
    ],
    ids=["devices without data_parallel", "uneven split", "negative", "unknown distribution"],
)
def test_distribution_settings_are_checked_in_one_line(sets: list[str], message: str) -> None:
    with pytest.raises(ParamsError) as caught:
        repo_params(*sets)
    assert str(caught.value) == f"params.yaml: {message}"


def test_data_parallel_takes_all_devices_or_a_count_that_splits_the_batch() -> None:
    assert repo_params("train.distribution=data_parallel").train.devices == 0  # 0: all
    chosen = repo_params("train.distribution=data_parallel", "train.devices=4").train
    assert (chosen.distribution, chosen.devices, chosen.batch_size) == ("data_parallel", 4, 256)


@pytest.mark.parametrize(
    "override",
    [
        "mlflow.registered_model_name=team/cnn",
        "mlflow.registered_model_name=cnn:v2",
        "mlflow.experiment_name=it's-mine",
        'mlflow.experiment_name=say "hi"',
        "mlflow.experiment_name=" + "x" * 501,
        "mlflow.registered_model_name=..cnn",
        "mlflow.sweep=lr's grid",
        "mlflow.sweep=lr/grid",
    ],
    ids=[
        "slash",
        "colon",
        "apostrophe",
        "double quotes",
        "501 characters",
        "dot-dot",
        "sweep apostrophe",
        "sweep slash",
    ],
)
def test_names_mlflow_would_refuse_after_training_are_refused_first(override: str) -> None:
    # MLflow refused these only when the trained model was registered (or the experiment made).
    key = override.split("=")[0]
    with pytest.raises(ParamsError, match=rf"^params\.yaml: {re.escape(key)}: ") as refused:
        load_params(REPO_ROOT / "params.yaml", [override])
    assert "\n" not in str(refused.value)
    load_params(REPO_ROOT / "params.yaml", ["mlflow.experiment_name=cifar10 cnn (team A)"])


def test_sweep_is_null_by_default_and_takes_a_name() -> None:
    assert repo_params().mlflow.sweep is None
    assert repo_params("mlflow.sweep=lr-grid").mlflow.sweep == "lr-grid"
    # `-S mlflow.sweep=` writes an empty value: null, a run of its own again.
    assert repo_params("mlflow.sweep=").mlflow.sweep is None
