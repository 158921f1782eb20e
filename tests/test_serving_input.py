"""The served model's input check, without a server: what it refuses and what it says."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.tracking.serving_model import (
    EXPECTED,
    MAX_IMAGES_ENV,
    ServingRefusal,
    check_pixels,
    max_images,
)

SHAPE = (32, 32, 3)


def test_whole_numbers_in_range_pass_as_uint8() -> None:
    images = check_pixels(np.full((2, *SHAPE), 255.0), SHAPE)
    assert images.dtype == np.uint8 and images.shape == (2, *SHAPE)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_nan_or_infinite_pixel_is_named(bad: float) -> None:
    images = np.zeros((1, *SHAPE))
    images[0, 3, 4, 1] = bad
    with pytest.raises(ServingRefusal) as refused:
        check_pixels(images, SHAPE)
    assert refused.value.message == f"{EXPECTED}: got 1 NaN or infinite value(s)"


def test_a_batch_over_the_limit_is_refused_naming_it() -> None:
    with pytest.raises(ServingRefusal, match=f"3 images .* limit of 2 .*{MAX_IMAGES_ENV}"):
        check_pixels(np.zeros((3, *SHAPE), np.uint8), SHAPE, limit=2)
    assert len(check_pixels(np.zeros((2, *SHAPE), np.uint8), SHAPE, limit=2)) == 2


def test_the_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_IMAGES_ENV, "16")
    assert max_images() == 16
    for unusable in ("0", "-3", "many", ""):
        monkeypatch.setenv(MAX_IMAGES_ENV, unusable)
        assert max_images() == 1024


def test_the_refusal_keeps_its_message_when_mlflow_rewrites_it() -> None:
    # What MLflow's scoring server does to an MlflowException raised by predict().
    with pytest.raises(ServingRefusal) as refused:
        check_pixels(np.full((1, *SHAPE), 0.5), SHAPE)
    refused.value.message = f"Failed to predict data '{'[0.5, ' * 500}'. \nError: ..."
    body = refused.value.serialize_as_json()
    assert EXPECTED in body and "Failed to predict data" not in body and len(body) < 300
