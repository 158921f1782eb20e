"""Log the trained Keras model to MLflow as the served model of ``serving_model.py``.

The logged model carries the Keras file, the class names (its output columns, in the signature
and in every prediction), an input example and pinned requirements, so ``mlflow models serve``
needs nothing else.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline.artifacts.prepared import classes_json
from pipeline.core.paths import CLASSES_FILE, MODEL_FILE

SERVING_CODE = Path(__file__).with_name("serving_model.py")


def model_id(model_uri: str) -> str:
    """The LoggedModel id of a ``models:/m-...`` URI."""
    return model_uri.removeprefix("models:/")


# MLflow shows this tag as a logged model's description.
DESCRIPTION_TAG = "mlflow.note.content"
INPUT_FORMAT = (
    "raw images, N x 32 x 32 x 3 uint8 RGB pixels 0-255 as JSON "
    '(`{"inputs": [[[[r, g, b], ...]]]}`), or the compact form, one base64 32x32 RGB PNG or '
    'JPEG per image (`{"inputs": ["iVBORw0...", ...]}`, see `serving_input_example.json`); '
    "scaled or non-whole values, other sizes and modes are refused with HTTP 400"
)


def model_description(classes: list[str], architecture: str) -> str:
    """The logged model's description: what it is, what goes in and what comes out."""
    return (
        f"CIFAR-10 image classifier (Keras model `{architecture}`) logged by this project's train "
        "stage."
        f"\n\n**Input**: {INPUT_FORMAT}.\n\n**Output**: one float32 probability per class, "
        f"columns {', '.join(classes)}."
    )


def input_example(image_shape: tuple[int, ...]) -> list[str]:
    """One black image of ``image_shape`` in the compact form: ``["iVBORw0KGgo..."]``.

    MLflow saves it as ``serving_input_example.json``, ``{"inputs": ["iVBORw0KGgo..."]}``: a
    request one can send as it is, in about 150 bytes. The pixel form of the same image was
    59.5 KB of zeros, one number a line, as MLflow indents the JSON it writes.
    """
    import base64
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros(image_shape, dtype=np.uint8), mode="RGB").save(buffer, format="PNG")
    return [base64.b64encode(buffer.getvalue()).decode("ascii")]


def log_served_model(model: object, classes: list[str], name: str = "model") -> str:
    """Log ``model`` with its ``classes`` to the active run as ``name``; return its model URI.

    The signature names one float32 output column per class. It declares no input: an input
    schema makes MLflow cast JSON to its dtype (0.5 -> 0) before the model can refuse it; the
    model checks the pixels itself (uint8 values 0-255, N x 32 x 32 x 3). The input format is
    shown instead by an input example (:func:`input_example`; MLflow casts only against a schema)
    and the description. Requirements are explicit: inferring them costs ~25 s a call.
    """
    import keras
    import mlflow
    import numpy as np
    import pandas as pd
    import PIL
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from pipeline.core import keras_backend as backend

    signature = ModelSignature(outputs=Schema([ColSpec("float", label) for label in classes]))
    requirements = [
        f"mlflow=={mlflow.__version__}",
        f"keras=={keras.__version__}",
        # The backend package actually installed: tensorflow-cpu, CUDA tensorflow or jax (+ CUDA).
        *backend.requirements(),
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
        # Decodes the compact input (base64 PNG/JPEG).
        f"pillow=={PIL.__version__}",
    ]
    example = input_example(tuple(model.input_shape[1:]))  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(prefix="served-model-") as folder:
        keras_path, classes_path = Path(folder) / MODEL_FILE, Path(folder) / CLASSES_FILE
        model.save(keras_path)  # type: ignore[attr-defined]
        classes_path.write_text(classes_json(classes), encoding="utf-8")
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(SERVING_CODE),
            artifacts={"keras_model": str(keras_path), "classes": str(classes_path)},
            signature=signature,
            input_example=example,
            pip_requirements=requirements,
            tags={DESCRIPTION_TAG: model_description(classes, model.name)},  # type: ignore[attr-defined]
        )
    return info.model_uri
