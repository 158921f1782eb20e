"""model.arch: the registry of architectures, their params sections, and the training recipe.

The schema tests need no TensorFlow (fast tier); the rest build or train Keras models. The one
end-to-end test trains every registered architecture for one step through the train stage and
serves the logged model through its MLflow pyfunc, the code ``mlflow models serve`` runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cifar10_kfp.submit import run_arguments
from pipeline.core.errors import ParamsError
from pipeline.core.params import architecture_names, load_params
from pipeline.core.paths import REPO_ROOT
from pipeline.core.profiles import load_profile
from tests.conftest import repo_params, run_stage, store_env, train_args

KFP_PACKAGE = REPO_ROOT / "cifar10_kfp" / "cifar10_pipeline.yaml"
ARCHITECTURES_DIR = REPO_ROOT / "pipeline" / "train" / "architectures"
# Each architecture shrunk to train one step on tiny data in seconds; an architecture missing
# here trains at its params.yaml size (still one step).
TINY = {
    "reference": ["model.reference.conv_filters=[8]", "model.reference.dense_units=16"],
    "fast_resnet": ["model.fast_resnet.stem_width=8", "model.fast_resnet.widths=[8, 16]"],
}


def test_reference_is_the_default_and_every_section_is_an_architecture() -> None:
    params = repo_params()
    assert params.model.arch == "reference"
    assert params.model.selected is params.model.reference
    # The registry is the folder: one architecture per module, each with a params.yaml section.
    modules = sorted(p.stem for p in ARCHITECTURES_DIR.glob("[!_]*.py"))
    assert sorted(architecture_names()) == modules
    assert set(params.model.model_dump()) == {"arch", *modules}
    for arch in architecture_names():
        chosen = repo_params(f"model.arch={arch}")
        assert chosen.model.selected is getattr(chosen.model, arch)
        assert type(chosen.model.selected).__module__ == f"pipeline.train.architectures.{arch}"


def test_a_module_without_params_or_builder_is_refused_by_name(tmp_path: Path) -> None:
    # A new module that breaks the registry's contract fails at import, naming its file and
    # what it lacks, instead of vanishing from model.arch.
    package = tmp_path / "probe_architectures"
    package.mkdir()
    registry = (ARCHITECTURES_DIR / "__init__.py").read_text()
    (package / "__init__.py").write_text(registry)
    (package / "reference.py").write_text((ARCHITECTURES_DIR / "reference.py").read_text())
    (package / "half_done.py").write_text("def build(params, seed=None):\n    return None\n")
    code = "import probe_architectures"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "half_done.py: an architecture module defines `class Params(Section)`" in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.arch=resnet50", f"model.arch: must be one of {', '.join(architecture_names())} (g"),
        ("model.fast_resnet.widths=[]", "model.fast_resnet.widths: must have at least 1 item"),
        ("model.fast_resnet.translate_pixels=9", "model.fast_resnet.translate_pixels: must be"),
        ("model.fast_resnet.activation=tanh", "model.fast_resnet.activation: must be 'relu' or"),
        ("model.fast_resnet.depth=9", "model.fast_resnet.depth: unknown key (got 9)"),
        ("train.label_smoothing=1.0", "train.label_smoothing: must be >= 0.0 and < 1.0 (got 1.0)"),
        ("train.momentum=0.9", "train: momentum and nesterov are for optimizer sgd (got optimizer"),
        ("train.nesterov=true", "train: momentum and nesterov are for optimizer sgd"),
        ("train.weight_decay=-0.1", "train.weight_decay: must be between 0.0 and 1.0 (got -0.1)"),
    ],
)  # fmt: skip
def test_bad_architecture_and_recipe_params_are_one_line(override: str, message: str) -> None:
    with pytest.raises(ParamsError) as refused:
        repo_params(override)
    assert str(refused.value).startswith(f"params.yaml: {message}")
    assert "\n" not in str(refused.value)


def test_params_of_the_old_layout_say_where_the_keys_went(tmp_path: Path) -> None:
    moved = "moved under model.reference (model.arch picks the architecture"
    with pytest.raises(ParamsError, match=r"^params.yaml: model: dense_units " + re.escape(moved)):
        repo_params("model.dense_units=256")  # an override written for the old layout
    old = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    old["model"] = old["model"]["reference"]  # model: {conv_filters: ..., ...} as before
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(ParamsError) as refused:
        load_params(tmp_path / "params.yaml")
    assert str(refused.value) == (
        "params.yaml: model: conv_filters, kernel_size, dense_units, dropout_conv, dropout_dense,"
        f" augment {moved}; see docs/architecture.md, Choosing the model)"
    )


def test_nesterov_needs_sgd_with_momentum() -> None:
    with pytest.raises(ParamsError, match="train: nesterov needs a momentum above 0"):
        repo_params("train.optimizer=sgd", "train.nesterov=true")
    recipe = repo_params("train.optimizer=sgd", "train.momentum=0.9", "train.nesterov=true")
    assert (recipe.train.momentum, recipe.train.nesterov) == (0.9, True)


def test_fast_resnet_profile_picks_the_net_and_its_recipe() -> None:
    params = repo_params(*load_profile("fast-resnet").overrides)
    assert params.model.arch == "fast_resnet"
    # params.yaml's section, with the recipe elements that are off by default switched on.
    recipe_elements = repo_params("model.fast_resnet.stem=whiten").model.fast_resnet
    assert params.model.fast_resnet == recipe_elements
    assert params.evaluate.flip_tta and params.evaluate.translate_tta
    assert params.train.optimizer == "sgd" and params.train.nesterov
    assert params.train.label_smoothing > 0 and params.train.weight_decay > 0
    assert params.train.lr_schedule == "one_cycle"


def test_kubeflow_passes_each_architecture_section_inside_the_model_section() -> None:
    # One key of a section, given the way DVC and the stages take it, changes only that key.
    arguments = run_arguments(
        KFP_PACKAGE, ["model.arch=fast_resnet", "model.fast_resnet.widths=[16, 32]"]
    )
    expected = repo_params().model.model_dump()
    expected["arch"] = "fast_resnet"
    expected["fast_resnet"]["widths"] = [16, 32]
    assert {name: json.loads(text) for name, text in arguments.items()} == {"model": expected}
    assert set(expected) == {"arch", *architecture_names()}
    with pytest.raises(ParamsError, match=r"model.reference.dense_units: must be between 1"):
        run_arguments(KFP_PACKAGE, ["model.reference.dense_units=0"])


@pytest.mark.keras
def test_every_registered_architecture_has_the_pipeline_contract() -> None:
    import keras

    from pipeline.train.architectures import ARCHITECTURES
    from pipeline.train.model import build_model

    assert list(ARCHITECTURES) == architecture_names()
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    model_names = set()
    for arch in ARCHITECTURES:
        model = build_model(repo_params(f"model.arch={arch}", *TINY.get(arch, [])).model, seed=1)
        # Its own name: the train stage's model_summary.txt tells the architectures apart by it.
        assert model.name not in model_names, arch
        model_names.add(model.name)
        assert model.inputs[0].dtype == "uint8", arch
        probabilities = np.asarray(model(images, training=False))
        assert probabilities.shape == (4, 10) and probabilities.dtype == np.float32, arch
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
        # Built-in layers only: a served model loads without this project's code.
        config = keras.saving.serialize_keras_object(model)
        rebuilt = keras.saving.deserialize_keras_object(config, safe_mode=True)
        assert rebuilt.count_params() == model.count_params(), arch


@pytest.mark.keras
def test_fast_resnet_augments_in_training_only_and_standardises_raw_pixels() -> None:
    import keras

    from pipeline.train.model import build_model

    model = build_model(repo_params("model.arch=fast_resnet", *TINY["fast_resnet"]).model, seed=1)
    names = [layer.name for layer in model.layers]
    assert names.index("augment_translate") < names.index("stem_conv")
    augmented = keras.Model(model.inputs, model.get_layer("augment_translate").output)
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    scaled = images.astype("float32") / 255
    np.testing.assert_allclose(np.asarray(augmented(images, training=False)), scaled, rtol=1e-6)
    shifted = np.asarray(augmented(images, training=True))
    assert not np.allclose(shifted, scaled)
    # Whole-pixel shifts: every value is one of the image's own pixels, no bilinear blend.
    assert set(np.round(shifted.ravel() * 255).astype(int)) <= set(images.ravel().astype(int))
    standardized = keras.Model(model.inputs, model.get_layer("standardize").output)
    grey = np.full((1, 32, 32, 3), 125, dtype=np.uint8)  # about CIFAR-10's mean pixel
    assert np.abs(np.asarray(standardized(grey))).max() < 0.2


@pytest.mark.keras
def test_whitening_stem_decorrelates_patches_and_never_trains(tmp_path: Path) -> None:
    """stem: whiten is computed from the training images (unit variance, no correlation
    between its first 12 channels on those images), the same every time, and frozen."""
    import keras

    from pipeline.train.checkpoints import TrainingCheckpoint
    from pipeline.train.fit import fit, load_prepared, new_model
    from tests.conftest import write_prepared

    data = load_prepared(write_prepared(tmp_path / "data", {"train": 200, "val": 20}))
    chosen = repo_params(
        *load_profile("fast-resnet").overrides, *TINY["fast_resnet"],
        "model.fast_resnet.stem=whiten", "train.epochs=1", "train.batch_size=100",
    )  # fmt: skip
    model = new_model(chosen.model, chosen.train, train_x=data.train_x)
    whiten = model.get_layer("stem_whiten")
    kernel = np.asarray(whiten.kernel)
    assert kernel.shape == (2, 2, 3, 24) and not whiten.trainable
    # The same images give the same kernel: deterministic, no random start.
    again = new_model(chosen.model, chosen.train, train_x=data.train_x).get_layer("stem_whiten")
    np.testing.assert_array_equal(kernel, np.asarray(again.kernel))
    outputs = keras.Model(model.inputs, whiten.output)(data.train_x, training=False)
    channels = np.asarray(outputs, dtype=np.float64).reshape(-1, 24)[:, :12]
    covariance = np.cov(channels.T)
    # Unit variance, a little less where an eigenvalue is small beside WHITEN_EPS.
    assert np.all((np.diag(covariance) > 0.9) & (np.diag(covariance) < 1.01))
    assert np.abs(covariance - np.diag(np.diag(covariance))).max() < 0.05
    # Without the data (a model built to compare with a checkpoint), the stem is unset.
    unset = new_model(chosen.model, chosen.train).get_layer("stem_whiten")
    assert not np.array_equal(kernel, np.asarray(unset.kernel))
    trained, _ = fit(
        data, chosen.model, chosen.train, TrainingCheckpoint(tmp_path / "ckpt", {}), "run",
        None, lambda _: None,
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(trained.get_layer("stem_whiten").kernel), kernel)


@pytest.mark.keras
def test_recipe_params_reach_the_optimizer_and_the_loss() -> None:
    import keras

    from pipeline.train.fit import SmoothedSparseCrossentropy, new_model

    default = new_model(repo_params(*TINY["reference"]).model, repo_params().train)
    # The reference trains exactly as before: plain loss, no momentum or weight decay added.
    assert type(default.loss) is keras.losses.SparseCategoricalCrossentropy
    assert default.optimizer.weight_decay is None
    chosen = repo_params(*load_profile("fast-resnet").overrides, *TINY["fast_resnet"])
    model = new_model(chosen.model, chosen.train)
    assert type(model.optimizer) is keras.optimizers.SGD
    assert model.optimizer.nesterov and model.optimizer.momentum == chosen.train.momentum
    assert model.optimizer.weight_decay == chosen.train.weight_decay
    assert model.loss.label_smoothing == chosen.train.label_smoothing
    # The same numbers as Keras's own smoothing of one-hot labels.
    labels = np.array([3, 0, 9])
    probabilities = np.random.default_rng(0).dirichlet(np.ones(10), size=3).astype("float32")
    expected = keras.losses.CategoricalCrossentropy(label_smoothing=0.2)(
        np.eye(10, dtype="float32")[labels], probabilities
    )
    smoothed = SmoothedSparseCrossentropy(0.2)(labels, probabilities)
    assert float(smoothed) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.keras
@pytest.mark.e2e
def test_fast_resnet_is_deterministic_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    """The recipe (BatchNorm, augmentation, Nesterov SGD, smoothed loss) in deterministic mode:
    the same seed gives the same weights, and a checkpoint resumes with its optimizer state and
    loss, the same way every time."""
    import shutil

    import keras

    from pipeline.train import backend
    from pipeline.train.checkpoints import TrainingCheckpoint
    from pipeline.train.fit import SmoothedSparseCrossentropy, fit, load_prepared
    from tests.conftest import write_prepared

    data = load_prepared(write_prepared(tmp_path / "data", {"train": 100, "val": 20}))
    chosen = repo_params(
        *load_profile("fast-resnet").overrides, *TINY["fast_resnet"],
        "train.epochs=2", "train.batch_size=50",
    )  # fmt: skip

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.model.stop_training = True

    def train(folder: str, resume: object = None, stop: bool = False) -> keras.Model:
        # As the train stage does before every training, fresh or resumed.
        backend.configure_determinism(chosen.train.seed, chosen.train.deterministic)
        checkpoint = TrainingCheckpoint(tmp_path / folder, {})
        callbacks = [StopAfterFirstEpoch()] if stop else []
        model, _ = fit(
            data, chosen.model, chosen.train, checkpoint, "run", resume, lambda _: None, callbacks
        )
        return model

    def assert_same_weights(a: keras.Model, b: keras.Model) -> None:
        for one, other in zip(a.weights, b.weights, strict=True):
            np.testing.assert_array_equal(np.asarray(one), np.asarray(other), err_msg=one.path)

    assert_same_weights(train("first"), train("second"))
    train("interrupted", stop=True)
    shutil.copytree(tmp_path / "interrupted", tmp_path / "copy")
    resumed = []
    for folder in ("interrupted", "copy"):
        state = TrainingCheckpoint(tmp_path / folder, {}).load()
        assert state is not None and state.epochs_done == 1
        resumed.append(train(folder, resume=state))
    assert_same_weights(*resumed)
    model = resumed[0]
    # The checkpoint carried the optimizer's state and the registered loss: 2 epochs x 2 steps.
    assert int(model.optimizer.iterations) == 4
    assert model.optimizer.nesterov and model.optimizer.momentum == chosen.train.momentum
    assert isinstance(model.loss, SmoothedSparseCrossentropy)
    assert model.loss.label_smoothing == chosen.train.label_smoothing


@pytest.mark.keras
@pytest.mark.e2e
@pytest.mark.parametrize(
    ("arch", "recipe"),
    # Each architecture as params.yaml has it, and the recipe elements its profile switches on.
    [(arch, []) for arch in architecture_names()]
    + [("fast_resnet", ["model.fast_resnet.stem=whiten"])],
)
def test_each_architecture_trains_through_the_stage_and_serves(
    arch: str, recipe: list[str], tmp_path: Path, prepared_dir: Path
) -> None:
    import mlflow

    sets = [
        f"model.arch={arch}", *TINY.get(arch, []), *recipe, "train.epochs=1",
        "train.batch_size=200",
    ]  # fmt: skip
    result = run_stage("train", *train_args(tmp_path, prepared_dir, *sets), env=store_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    history = (tmp_path / "reports" / "history.csv").read_text().splitlines()
    assert len(history) == 2  # header + one epoch (of one step: 200 images, batch 200)
    run_info = json.loads((tmp_path / "models" / "run.json").read_text())
    mlflow.set_tracking_uri(store_env(tmp_path)["MLFLOW_TRACKING_URI"])
    run = mlflow.MlflowClient().get_run(run_info["run_id"])
    assert run.data.params["model.arch"] == arch
    assert {key.split(".")[1] for key in run.data.params if key.startswith("model.")} == {
        "arch",
        arch,
    }
    # The summary is of the model this architecture builds (each has its own name, checked in
    # test_every_registered_architecture_has_the_pipeline_contract).
    summary = (tmp_path / "reports" / "model_summary.txt").read_text()
    from pipeline.train.model import build_model

    built = build_model(repo_params(*sets).model)
    assert f'Model: "{built.name}"' in summary
    # Served as `mlflow models serve` serves it: raw uint8 images in, a probability per class out.
    served = mlflow.pyfunc.load_model(run_info["model_uri"])
    with np.load(prepared_dir / "test.npz") as test:
        images = test["x"][:5]
    predictions = served.predict(images)
    assert list(predictions.columns) == run_info["classes"]
    np.testing.assert_allclose(predictions.to_numpy().sum(axis=1), 1.0, rtol=1e-4)
