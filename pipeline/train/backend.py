"""Everything that differs between Keras backends, and nowhere else.

Device choice, seeding and op determinism, the distribution strategy, the input pipeline (tf.data
on TensorFlow, seeded batches of one shape on JAX, plain arrays elsewhere), what XLA may compile,
and XLA compilation. The model and training loop stay backend-neutral; what the rest of the
library may know of the backend (name, version, device, requirements) is
pipeline/core/keras_backend.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pipeline.core.errors import PipelineError

# Name, version, device description and requirements: tracking needs them too, so they live
# below both (pipeline/core/keras_backend.py); the data-parallel devices are planned here.
from pipeline.core.keras_backend import REPLICAS as _replicas
from pipeline.core.keras_backend import gpu_names, name

# What train.device=gpu prints when no GPU is visible: the usual causes, and the way out.
NO_GPU_FIX = (
    "train.device=gpu but {backend} sees no GPU: check the NVIDIA driver (`nvidia-smi`), "
    "CUDA_VISIBLE_DEVICES and the CUDA install (`make setup GPU=1`), "
    "or train on the CPU with --set train.device=cpu"
)
DETERMINISTIC_XLA_FLAG = "--xla_gpu_deterministic_ops=true"
log = logging.getLogger("pipeline")


def select_device(device: str, deterministic: bool) -> list[str]:
    """Apply ``train.device`` (auto | cpu | gpu); return the GPUs that training will use.

    Call it before anything else touches the backend: hiding GPUs and the XLA flags only take
    effect before the backend creates its devices. Raises PipelineError for ``gpu`` when none is
    visible, so a runner whose driver broke fails instead of training on the CPU.
    """
    if name() == "jax":
        use_compilation_cache(os.environ)
        flags = os.environ.get("XLA_FLAGS", "")
        if deterministic and DETERMINISTIC_XLA_FLAG not in flags:
            # XLA on CPU is deterministic already; this flag covers GPU reductions.
            os.environ["XLA_FLAGS"] = f"{flags} {DETERMINISTIC_XLA_FLAG}".strip()
    if device == "cpu":
        # The environment also covers child processes and a backend not initialised yet...
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        if name() == "tensorflow":
            import tensorflow as tf

            try:  # ...and this the TensorFlow runtime in this process.
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:
                raise PipelineError(
                    "train.device=cpu: TensorFlow already started on the GPU in this process; "
                    "set CUDA_VISIBLE_DEVICES= before starting it"
                ) from None
        else:
            import jax

            os.environ["JAX_PLATFORMS"] = "cpu"
            jax.config.update("jax_platforms", "cpu")
        return []
    gpus = gpu_names()
    if device == "gpu" and not gpus:
        raise PipelineError(NO_GPU_FIX.format(backend=name()))
    return gpus


def compilation_cache_dir(env: Mapping[str, str]) -> Path | None:
    """Where JAX keeps compiled steps between runs; None when the user turned the cache off.

    ``JAX_COMPILATION_CACHE_DIR`` wins; otherwise a folder under the user's cache directory.
    ``JAX_ENABLE_COMPILATION_CACHE=false`` (JAX's own switch) turns it off.
    """
    if env.get("JAX_ENABLE_COMPILATION_CACHE", "").strip().lower() in {"0", "false", "no", "off"}:
        return None
    if env.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(env["JAX_COMPILATION_CACHE_DIR"])
    cache_home = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "cifar10-pipeline" / "jax"


def use_compilation_cache(env: Mapping[str, str]) -> Path | None:
    """Turn on JAX's persistent compilation cache (see :func:`compilation_cache_dir`).

    A rerun with the same shapes loads its compiled steps instead of compiling them again: on an
    H200 the first epoch of the reference configuration took 1.9 s instead of 8.4 s, most of it
    two compilations of the train step. Call before the first compilation.
    """
    folder = compilation_cache_dir(env)
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        # Not worth stopping a training for; JAX would warn at every compilation instead.
        log.warning("JAX compilation cache off: cannot create %s (%s)", folder, error.strerror)
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in env:
        # JAX's default (1 s) would leave out the evaluation step, which compiles in 0.5 s.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder


def jit_enabled(model: keras.Model) -> bool:
    """Whether ``model`` (compiled) trains through XLA: always on JAX, on TensorFlow with a GPU."""
    return bool(getattr(model, "jit_compile", False))


def configure_determinism(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and the backend; with ``deterministic``, also force deterministic ops.

    Deterministic TensorFlow ops are slower on a GPU, which is why this is a param. On JAX,
    :func:`select_device` has set the XLA flag that does the same.
    """
    keras.utils.set_random_seed(seed)
    if deterministic and name() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def plan_distribution(distribution: str, devices: int) -> list[str]:
    """Apply ``train.distribution`` and ``train.devices``; return the labels of the devices used.

    Call after :func:`select_device` and before the model exists. data_parallel takes the first
    ``devices`` (0: all) visible GPUs, or the CPU devices when no GPU is visible (one, unless
    virtual ones were configured). Raises PipelineError when fewer are visible than asked for,
    before any MLflow run: the training would otherwise quietly take longer than planned.
    """
    _replicas.clear()
    if distribution == "none":
        return []
    visible = _visible_devices()
    kind = "GPU" if visible[0][1].startswith("gpu") else "CPU"
    wanted = devices or len(visible)
    if wanted > len(visible):
        raise PipelineError(
            f"train.devices={devices} but {name()} sees {len(visible)} {kind} device(s) "
            f"({', '.join(label for _, label in visible)}): lower train.devices, or 0 for all"
        )
    _replicas.extend(visible[:wanted])
    return [label for _, label in _replicas]


def _visible_devices() -> list[tuple[Any, str]]:
    """The GPUs the backend can use, else its CPU devices: (handle, label such as "gpu:0")."""
    if name() == "tensorflow":
        import tensorflow as tf

        logical = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        # "/job:localhost/replica:0/task:0/device:CPU:1" -> "cpu:1"
        return [(device.name, device.name.rsplit("device:", 1)[-1].lower()) for device in logical]
    import jax

    # jax.devices() lists the default platform's: the GPUs when JAX has any, else the CPUs.
    return [(device, f"{device.platform}:{device.id}") for device in jax.devices()]


def model_devices(model: keras.Model) -> list[str]:
    """Labels of the devices that hold copies of ``model``'s first variable: where it trains.

    Read from the variable itself, not from the plan, so the start line shows the placement the
    backend really made (a variable mirrored on two devices has a copy on each).
    """
    value = model.weights[0].value
    if name() == "tensorflow":
        # A MirroredVariable has one component per replica; a plain one, none.
        copies = getattr(value, "values", None) or (value,)
        return [copy.device.rsplit("device:", 1)[-1].lower() for copy in copies]
    return [
        f"{device.platform}:{device.id}"
        for device in sorted(value.sharding.device_set, key=lambda d: d.id)
    ]


def steps_per_execution(requested: int) -> int:
    """``train.steps_per_execution`` as this backend and distribution can run it.

    Keras 3.15 on TensorFlow fails under MirroredStrategy with more than one step per call
    ("You must feed a value for placeholder tensor ..." at the first epoch), so data_parallel
    on TensorFlow runs one step per call, saying so.
    """
    if requested > 1 and _replicas and name() == "tensorflow":
        log.warning(
            "train.steps_per_execution=%d runs as 1: Keras on TensorFlow cannot run several steps "
            "per call under MirroredStrategy",
            requested,
        )
        return 1
    return requested


@contextlib.contextmanager
def distribution_scope() -> Iterator[None]:
    """Build, compile or load the model inside this: data-parallel as :func:`plan_distribution`
    planned, one device otherwise.

    On TensorFlow the model keeps its MirroredStrategy for ``fit``; on JAX the Keras
    distribution is process-wide and stays set for the ``fit`` that follows.
    """
    if not _replicas:
        yield
        return
    handles = [handle for handle, _ in _replicas]
    if name() == "tensorflow":
        import tensorflow as tf

        with tf.distribute.MirroredStrategy(devices=handles).scope():
            yield
    else:
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=handles))
        yield


def compile_augmentation(model: keras.Model) -> None:
    """On JAX, let XLA compile a model that translates its images (``RandomTranslation``).

    Keras marks RandomTranslation as not XLA-compatible, which turns compilation off for the
    whole model: on JAX the fast net then ran op by op. JAX's version is plain jnp
    (``map_coordinates``) and compiles: measured on a small fit, the same losses to 1e-5 and
    2.6x faster, compilation included. TensorFlow keeps Keras' choice (its CPU runs never
    compile with XLA anyway).
    """
    if name() != "jax" or model.run_eagerly:
        return
    translations = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.RandomTranslation)
    ]
    for layer in translations:
        layer.supports_jit = True
    if translations and all(layer.supports_jit for layer in model._flatten_layers()):
        model.jit_compile = True


def pads_last_batch(model: keras.Model, n: int, batch_size: int, requested: bool) -> bool:
    """Whether ``fit_inputs(..., pad=True)`` should fill the last short batch of ``n`` images.

    On JAX each new batch shape is a new XLA compilation of the train (and test) step: with
    45,000 images in batches of 256 the last batch of 200 compiled a second train step, 3.0 s of
    an 8.4 s first epoch on an H200. Padding it with zero-weight images keeps one shape. Not on
    TensorFlow (tf.data here; the CPU graph takes any batch size), and not for a model with
    BatchNorm, whose batch statistics would count the padding.
    """
    if not requested or name() != "jax" or n % batch_size == 0:
        return False
    if any(isinstance(layer, keras.layers.BatchNormalization) for layer in model._flatten_layers()):
        log.info("not padding the last batch: the model has BatchNorm, which would count it")
        return False
    return True


class SeededBatches(keras.utils.PyDataset):
    """(images, labels, sample weights) batches for the JAX trainer, shuffled each epoch by a
    generator seeded with ``seed`` and the epoch's number.

    ``pad``: the last batch is filled up with zero images of weight 0, which the loss
    (``mean_with_sample_weight``) and the weighted accuracy leave out, so every batch has one
    shape and what trains is what the short batch trained. Only the epoch's mean loss, as Keras
    reports it, weighs the padded batch as a full one: 200 images of 45,000 in batches of 256
    count as 256 (0.1% of the weight).
    """

    def __init__(
        self, x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, seed: int, pad: bool
    ) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.pad = x, y, batch_size, pad
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.order = self._order()

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        picked = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images, labels = self.x[picked], self.y[picked]
        weights = np.ones(len(picked), dtype=np.float32)
        missing = self.batch_size - len(picked)
        if self.pad and missing:
            images = np.concatenate([images, np.zeros((missing, *images.shape[1:]), images.dtype)])
            labels = np.concatenate([labels, np.zeros((missing, *labels.shape[1:]), labels.dtype)])
            weights = np.concatenate([weights, np.zeros(missing, dtype=np.float32)])
        return images, labels, weights

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.x))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))


def fit_inputs(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    pad: bool = False,
) -> dict[str, Any]:
    """Keyword arguments for ``model.fit``/``evaluate`` that feed (x, y) in batches.

    Images stay uint8 all the way to the model (a quarter of the bytes of float32); the model
    rescales them itself. ``pad`` (JAX, see :func:`pads_last_batch`): batches of one shape.
    """
    if name() == "jax":
        batches = SeededBatches(x, y, batch_size, shuffle=shuffle, seed=seed, pad=pad)
        return {"x": batches, "shuffle": False}
    if name() != "tensorflow":
        return {"x": x, "y": y, "batch_size": batch_size, "shuffle": shuffle}
    import tensorflow as tf

    # Shuffle and batch indices, then gather each batch from the numpy arrays: slicing the
    # images themselves would make TensorFlow hold two more copies of them (a constant tensor and
    # a full shuffle buffer), about 280 MB at 45,000 images. A seeded shuffle draws the same
    # permutation whatever the elements are, so the order is what it was with the images.
    indices = tf.data.Dataset.range(len(x))
    if shuffle:
        indices = indices.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)

    def gather(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x[batch], y[batch]

    def load(batch: Any) -> tuple[Any, Any]:
        # stateful=False: a pure function of the indices, so op determinism allows it.
        images, labels = tf.numpy_function(
            gather, [batch], (tf.as_dtype(x.dtype), tf.as_dtype(y.dtype)), stateful=False
        )
        images.set_shape((None, *x.shape[1:]))
        labels.set_shape((None, *y.shape[1:]))
        return images, labels

    dataset = indices.batch(batch_size).map(load).prefetch(tf.data.AUTOTUNE)
    # shuffle=False tells Keras not to shuffle again: the dataset already did, with our seed.
    return {"x": dataset, "shuffle": False}
