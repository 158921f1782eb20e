"""Everything that differs between Keras backends, and nowhere else.

Seeding and op determinism, the device and distribution strategy, and the input pipeline
(tf.data on TensorFlow, plain arrays elsewhere). The model and training loop stay backend-neutral.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np


def name() -> str:
    """The active Keras backend: "tensorflow" or "jax"."""
    return keras.backend.backend()


def version() -> str:
    """Version of the backend library itself."""
    if name() == "tensorflow":
        import tensorflow as tf

        return tf.__version__
    import jax

    return jax.__version__


def configure_determinism(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and the backend; with ``deterministic``, also force deterministic ops.

    Deterministic TensorFlow ops are slower on a GPU, which is why this is a param.
    """
    keras.utils.set_random_seed(seed)
    if not deterministic:
        return
    if name() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    else:
        # XLA on CPU is deterministic already; this flag covers GPU reductions. It only takes
        # effect if set before JAX creates its backend, which happens at first use.
        os.environ.setdefault("XLA_FLAGS", "--xla_gpu_deterministic_ops=true")


def gpu_names() -> list[str]:
    """Names of the GPUs the backend can use (empty on a CPU-only machine)."""
    if name() == "tensorflow":
        import tensorflow as tf

        return [gpu.name for gpu in tf.config.list_physical_devices("GPU")]
    import jax

    return [str(device) for device in jax.devices() if device.platform == "gpu"]


def device_description() -> str:
    """The device for the lineage tags: "cpu", or e.g. "gpu x2 (...)"."""
    gpus = gpu_names()
    return f"gpu x{len(gpus)} ({', '.join(gpus)})" if gpus else "cpu"


@contextlib.contextmanager
def distribution_scope() -> Iterator[None]:
    """Build and compile the model inside this: data-parallel across GPUs when there are several."""
    gpus = gpu_names()
    if len(gpus) < 2:
        yield
        return
    if name() == "tensorflow":
        import tensorflow as tf

        with tf.distribute.MirroredStrategy().scope():
            yield
    else:
        keras.distribution.set_distribution(keras.distribution.DataParallel())
        yield


def fit_inputs(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, seed: int
) -> dict[str, Any]:
    """Keyword arguments for ``model.fit``/``evaluate`` that feed (x, y) in batches.

    Images stay uint8 all the way to the model (a quarter of the bytes of float32); the model
    rescales them itself.
    """
    if name() != "tensorflow":
        return {"x": x, "y": y, "batch_size": batch_size, "shuffle": shuffle}
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    # shuffle=False tells Keras not to shuffle again: the dataset already did, with our seed.
    return {"x": dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE), "shuffle": False}
