"""What ``predict`` reads and how it scores drift, without a model: fast, in `make check`."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import UsageError
from pipeline.predict import drift
from pipeline.predict.inputs import decode_image, read_batch
from tests.cifar_archive import CLASSES, encode_records


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


NOISE_PNG = encoded(
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
)


def test_greyscale_becomes_three_equal_channels_and_any_size_becomes_32x32() -> None:
    grey = Image.fromarray(np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8))
    pixels = decode_image(encoded(grey.convert("L")))
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(
        pixels[..., 1], pixels[..., 2]
    )


def test_a_uniform_photo_keeps_its_colour_through_the_resize() -> None:
    # Antialiased resize of a flat colour is that colour: no ringing, no black border.
    photo = Image.new("RGBA", (400, 300), (200, 100, 50, 128))
    pixels = decode_image(encoded(photo))
    assert np.all(pixels == [200, 100, 50])
    jpeg = decode_image(encoded(photo.convert("RGB"), "JPEG"))
    assert np.abs(jpeg.astype(int) - [200, 100, 50]).max() <= 3


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"hello", "not an image Pillow recognises"),
        (encoded(Image.new("RGB", (8, 8)), "GIF"), "a GIF image; only PNG and JPEG are read"),
        (NOISE_PNG[: len(NOISE_PNG) // 2], "image file is truncated"),
    ],
)
def test_unreadable_files_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises((ValueError, OSError), match=reason):
        decode_image(data)


def test_folder_lists_every_skipped_file_and_labels_class_subfolders(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(tmp_path / "cat" / "a.png")
    Image.new("RGB", (32, 32), (4, 5, 6)).save(tmp_path / "b.png")
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "d.png").write_bytes(b"x")

    batch = read_batch(tmp_path, CLASSES)

    assert batch.names == ["b.png", "cat/a.png"]
    assert batch.labels.tolist() == [-1, CLASSES.index("cat")] and not batch.has_labels
    assert [name for name, _ in batch.skipped] == ["c.png"]
    assert batch.images[1, 0, 0].tolist() == [1, 2, 3]
    assert len(batch.digest) == 64


def test_empty_folder_and_a_file_of_the_wrong_size_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no files to predict"):
        read_batch(tmp_path, CLASSES)
    (tmp_path / "x.bin").write_bytes(b"\0" * 3074)
    with pytest.raises(UsageError, match="not a multiple of the 3,073-byte record"):
        read_batch(tmp_path / "x.bin", CLASSES)


def test_cifar_batch_file_round_trips_with_labels(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 3, 9], np.uint8)
    (tmp_path / "b.bin").write_bytes(encode_records(x, y))
    batch = read_batch(tmp_path / "b.bin", CLASSES)
    assert np.array_equal(batch.images, x) and batch.labels.tolist() == y.tolist()
    assert batch.has_labels and batch.names[4] == "b.bin#4"


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift() -> None:
    uniform = np.full(10, 0.1)
    assert drift.psi(uniform, uniform) == 0.0
    slight = np.array([0.12, 0.08, *[0.1] * 8])
    one_class = np.eye(10)[3]
    assert 0 < drift.psi(uniform, slight) < 0.05 < drift.psi(uniform, one_class)
    assert drift.psi(uniform, one_class) > 5  # ln(1 / 1e-4) weighs an emptied bin heavily


def test_compare_flags_a_darkened_batch_but_not_a_resample() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2000, 32, 32, 3), dtype=np.uint8)
    probabilities = rng.dirichlet(np.ones(10), size=2000)
    reference = drift.reference_of(images[:1000], probabilities[:1000])
    clean = drift.compare(reference, images[1000:], probabilities[1000:], 0.2, 100)
    dark = drift.compare(reference, images[1000:] // 3, probabilities[1000:], 0.2, 100)
    few = drift.compare(reference, images[1000:1050] // 3, probabilities[1000:1050], 0.2, 100)
    assert clean.verdict == "no drift" and max(clean.scores.values()) < 0.05
    assert dark.verdict == "drift" and dark.summary()["over_threshold"] == [
        "pixels_red",
        "pixels_green",
        "pixels_blue",
    ]
    assert few.verdict == "too few images"


def test_reference_round_trips_through_its_json_and_refuses_other_classes() -> None:
    rng = np.random.default_rng(1)
    reference = drift.reference_of(
        rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), rng.dirichlet(np.ones(10), 10)
    )
    data = reference.to_json(10, CLASSES)
    back = drift.read_reference(data, CLASSES)
    assert np.allclose(back.pixels, reference.pixels) and np.allclose(
        back.classes, reference.classes
    )
    with pytest.raises(ValueError, match="other classes"):
        drift.read_reference(data, CLASSES[::-1])
