"""The client side of the served model's compact input: images as base64 PNG strings.

The server side (decoding and checking) is ``serving_model.decode_images``; this module writes
what it reads, for the benchmarks, the tests and anyone calling the server from Python.
"""

from __future__ import annotations

import base64
import io

import numpy as np


def encode_images(images: np.ndarray, image_format: str = "PNG") -> list[str]:
    """N x H x W x 3 uint8 ``images`` as base64 strings of ``image_format`` (PNG or JPEG).

    PNG is lossless: the server sees exactly these pixels. JPEG is smaller but lossy.
    """
    from PIL import Image

    encoded = []
    for pixels in np.asarray(images, dtype=np.uint8):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=image_format)
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return encoded
