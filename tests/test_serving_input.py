"""The served model's input checks, without a server: what they refuse and what they say.

Both input forms (uint8 pixel arrays and base64 PNG/JPEG strings) go through ``check_images``,
the function ``predict`` calls; every refusal is made for both.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from deploy.serving_client import encode_images
from pipeline.tracking.serving import input_example
from pipeline.tracking.serving_model import (
    EXPECTED,
    EXPECTED_ENCODED,
    MAX_ENCODED_CHARS,
    MAX_IMAGES_ENV,
    ServingConfigError,
    ServingRefusal,
    check_images,
    check_pixels,
    max_images,
)

SHAPE = (32, 32, 3)


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


def encoded_as(pixels: np.ndarray, mode: str, image_format: str = "PNG") -> str:
    """One image in ``mode`` (which may not be RGB), base64."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=image_format)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_whole_numbers_in_range_pass_as_uint8() -> None:
    images = check_pixels(np.full((2, *SHAPE), 255.0), SHAPE)
    assert images.dtype == np.uint8 and images.shape == (2, *SHAPE)


def test_the_logged_input_example_is_one_small_image_the_model_takes() -> None:
    example = input_example(SHAPE)
    # One compact string, not 3,072 numbers: MLflow writes the example indented, a line each.
    assert len(example) == 1 and isinstance(example[0], str) and len(example[0]) < 200
    np.testing.assert_array_equal(check_images(np.asarray(example), SHAPE), np.zeros((1, *SHAPE)))


def test_both_forms_give_the_same_pixels() -> None:
    images = random_images(5)
    from_json_numbers = check_images(images.astype(np.int64), SHAPE)
    from_png = check_images(np.asarray(encode_images(images)), SHAPE)
    assert from_png.dtype == from_json_numbers.dtype == np.uint8
    np.testing.assert_array_equal(from_png, images)
    np.testing.assert_array_equal(from_json_numbers, images)
    # JPEG is lossy: close to the pixels, not equal to them.
    from_jpeg = check_images(encode_images(images, "JPEG"), SHAPE)
    assert from_jpeg.shape == images.shape and not np.array_equal(from_jpeg, images)


@pytest.mark.parametrize(
    ("pixels", "detail"),
    [
        (np.full((1, *SHAPE), 0.5), "not all whole numbers"),
        (np.full((1, *SHAPE), np.nan), "got 3072 NaN or infinite value(s)"),
        (np.full((1, *SHAPE), 300), "from 300 to 300"),
        (np.full((1, *SHAPE), -1), "from -1 to -1"),
        (np.zeros((1, 32, 32)), "got shape (1, 32, 32)"),
        (np.zeros((2, 16, 16, 3)), "got shape (2, 16, 16, 3)"),
        (np.full((1, *SHAPE), "a"), "got values of type"),
    ],
)
def test_pixels_that_are_not_uint8_images_are_refused(pixels: np.ndarray, detail: str) -> None:
    with pytest.raises(ServingRefusal) as refused:
        check_images(pixels, SHAPE)
    assert refused.value.message.startswith(EXPECTED) and detail in refused.value.message


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_nan_or_infinite_pixel_among_whole_numbers_is_named(bad: float) -> None:
    pixels = np.zeros((2, *SHAPE))
    pixels[1, 5, 5, 1] = bad
    with pytest.raises(ServingRefusal) as refused:
        check_images(pixels, SHAPE)
    assert refused.value.message == f"{EXPECTED}: got 1 NaN or infinite value(s)"


@pytest.mark.parametrize(
    ("encoded", "detail"),
    [
        ("not base64!", "image 0 is not valid base64"),
        (base64.b64encode(b"GIF89a not an image").decode(), "not a readable PNG or JPEG"),
        (encoded_as(random_images(1)[0], "L"), "image 0 is 32x32 L, expected 32x32 RGB"),
        (encoded_as(random_images(1)[0], "RGBA"), "32x32 RGBA, expected 32x32 RGB"),
        ("A" * (MAX_ENCODED_CHARS + 4), f"over {MAX_ENCODED_CHARS}"),
    ],
)
def test_encoded_images_that_are_not_rgb_png_or_jpeg_are_refused(encoded: str, detail: str) -> None:
    with pytest.raises(ServingRefusal) as refused:
        check_images(np.asarray([encoded]), SHAPE)
    assert refused.value.message.startswith(EXPECTED_ENCODED), refused.value.message
    assert detail in refused.value.message


def test_an_encoded_image_of_the_wrong_size_is_refused_naming_which() -> None:
    big = np.zeros((64, 48, 3), dtype=np.uint8)
    batch = [*encode_images(random_images(2)), *encode_images(big[None])]
    with pytest.raises(ServingRefusal, match="image 2 is 48x64 RGB, expected 32x32 RGB"):
        check_images(batch, SHAPE)


def test_a_gif_is_refused_even_when_it_is_32x32_rgb() -> None:
    buffer = io.BytesIO()
    Image.fromarray(random_images(1)[0]).save(buffer, format="GIF")
    with pytest.raises(ServingRefusal, match="not a readable PNG or JPEG"):
        check_images([base64.b64encode(buffer.getvalue()).decode()], SHAPE)


@pytest.mark.parametrize("form", ["pixels", "encoded"])
def test_a_batch_over_the_limit_is_refused_naming_it(form: str) -> None:
    images = random_images(3)
    batch = images if form == "pixels" else np.asarray(encode_images(images))
    with pytest.raises(ServingRefusal, match=f"3 images .* limit of 2 .*{MAX_IMAGES_ENV}"):
        check_images(batch, SHAPE, limit=2)
    assert len(check_images(batch[:2], SHAPE, limit=2)) == 2


def test_the_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_IMAGES_ENV, "16")
    assert max_images() == 16
    monkeypatch.setenv(MAX_IMAGES_ENV, "")
    assert max_images() == 1024
    monkeypatch.delenv(MAX_IMAGES_ENV)
    assert max_images() == 1024


@pytest.mark.parametrize("unusable", ["0", "-1", "abc", "2.5"])
def test_an_unusable_limit_is_an_error_not_the_default(
    monkeypatch: pytest.MonkeyPatch, unusable: str
) -> None:
    monkeypatch.setenv(MAX_IMAGES_ENV, unusable)
    with pytest.raises(ServingConfigError, match=f"{MAX_IMAGES_ENV}='{unusable}' is not a whole"):
        max_images()


def test_the_refusal_keeps_its_message_when_mlflow_rewrites_it() -> None:
    # What MLflow's scoring server does to an MlflowException raised by predict().
    with pytest.raises(ServingRefusal) as refused:
        check_pixels(np.full((1, *SHAPE), 0.5), SHAPE)
    refused.value.message = f"Failed to predict data '{'[0.5, ' * 500}'. \nError: ..."
    body = refused.value.serialize_as_json()
    assert EXPECTED in body and "Failed to predict data" not in body and len(body) < 300
