"""What the rest of the library may know of the Keras backend: its name and version, the
device it trains on, and the pip requirements of the packages installed for it.

Below both pipeline/train (which chooses devices and trains) and pipeline/tracking (which tags
runs and logs served models with these facts), so tracking never imports the trainer. Keras is
imported inside the functions: stages that never touch a model load no backend through this.
The devices a data-parallel training uses are set by ``pipeline.train.backend.plan_distribution``
in :data:`REPLICAS`, which :func:`device_description` reports.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any

from pipeline.core.errors import PipelineError

# The devices that train.distribution=data_parallel splits each batch over, as
# (backend handle, label) pairs; empty for one device. Set by plan_distribution.
REPLICAS: list[tuple[Any, str]] = []


def name() -> str:
    """The active Keras backend: "tensorflow" or "jax"."""
    import keras

    return keras.backend.backend()


def version() -> str:
    """Version of the backend library itself."""
    if name() == "tensorflow":
        import tensorflow as tf

        return tf.__version__
    import jax

    return jax.__version__


def gpu_names() -> list[str]:
    """Card names of the GPUs the backend can use (empty on a CPU-only machine)."""
    if name() == "tensorflow":
        import tensorflow as tf

        # Visible ones: train.device=cpu hides the GPUs without removing them physically.
        gpus = tf.config.get_visible_devices("GPU")
        details = [tf.config.experimental.get_device_details(gpu) for gpu in gpus]
        return [info.get("device_name", gpu.name) for gpu, info in zip(gpus, details, strict=True)]
    import jax

    return [device.device_kind for device in jax.devices() if device.platform == "gpu"]


def device_description() -> str:
    """The device for the start line and the lineage tags: "cpu", "gpu x1 (...)", or the
    data-parallel devices, e.g. "data_parallel x2 (gpu:0, gpu:1; NVIDIA H200)"."""
    gpus = gpu_names()
    if REPLICAS:
        labels = ", ".join(label for _, label in REPLICAS)
        cards = f"; {', '.join(sorted(set(gpus)))}" if gpus else ""
        return f"data_parallel x{len(REPLICAS)} ({labels}{cards})"
    return f"gpu x{len(gpus)} ({', '.join(gpus)})" if gpus else "cpu"


def requirements() -> list[str]:
    """Pip requirements, exact versions, of the backend packages installed here.

    A model trained with tensorflow-cpu names tensorflow-cpu, one trained with the CUDA build names
    tensorflow[and-cuda], and a JAX model names jax, jaxlib and, on a GPU install, the CUDA plugin:
    so an environment rebuilt from a logged model installs what trained it.
    """
    return backend_requirements(name(), _installed_version)


def backend_requirements(backend: str, installed: Callable[[str], str | None]) -> list[str]:
    """The requirements of ``backend`` given ``installed(distribution) -> version | None``."""
    if backend == "tensorflow":
        for dist, requirement in (
            ("tensorflow-cpu", "tensorflow-cpu"),
            ("tensorflow", "tensorflow[and-cuda]"),
        ):
            version = installed(dist)
            if version:
                if requirement.endswith("[and-cuda]") and not installed("nvidia-cudnn-cu12"):
                    requirement = "tensorflow"  # a plain tensorflow, without the CUDA wheels
                return [f"{requirement}=={version}"]
        raise PipelineError(
            "the tensorflow backend is active but no tensorflow package is installed"
        )
    pins = [f"{dist}=={installed(dist)}" for dist in ("jax", "jaxlib") if installed(dist)]
    plugin = installed("jax-cuda12-plugin")
    if plugin:
        # with-cuda brings the CUDA libraries as wheels, the way jax[cuda12] installs them.
        pins.append(f"jax-cuda12-plugin[with-cuda]=={plugin}")
        pjrt = installed("jax-cuda12-pjrt")
        if pjrt:
            pins.append(f"jax-cuda12-pjrt=={pjrt}")
    return pins


def _installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
