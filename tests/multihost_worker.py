"""One JAX process of a multi-process data-parallel fit, for tests/test_multihost.py.

Started once per process with Keras' distribution variables (``KERAS_DISTRIBUTION_*``, mapped
from the ``JAX_*`` ones Kubeflow Trainer's JAX runtime sets); without them, a plain one-process
run. Fits a one-layer model on a fixed tf.data dataset under ``keras.distribution.DataParallel``
over every global device, then tries the same fit on numpy arrays (the train stage's JAX input),
and writes what it saw as JSON to the path in argv[1].
"""

from __future__ import annotations

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"

import jax

# CPU devices of several processes talk over gloo (on GPUs, XLA uses NCCL).
jax.config.update("jax_cpu_collectives_implementation", "gloo")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

GLOBAL_BATCH = 16


def main(out: str) -> None:
    if "KERAS_DISTRIBUTION_NUM_PROCESSES" in os.environ:
        keras.distribution.initialize()  # reads KERAS_DISTRIBUTION_* from the environment
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    # Every process passes the whole dataset; DataParallel gives each its share of each batch.
    history = model.fit(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH), epochs=3, verbose=0
    )
    weights = [np.asarray(w.value).ravel().tolist() for w in model.weights]
    try:
        model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
        numpy_error = None
    except ValueError as exc:
        numpy_error = str(exc).splitlines()[0]
    result = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "global_devices": len(jax.devices()),
        "local_devices": len(jax.local_devices()),
        "loss": history.history["loss"],
        "weights": weights,
        "numpy_error": numpy_error,
    }
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv[1])
