"""The preprocess stage: archive decoding, the stratified split, the outputs and the stage CLI.

Every archive here is a small one built in the official layout with known pixels
(tests/cifar_archive.py); nothing is mocked.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.core.params import DataChecksParams, PreprocessParams
from pipeline.data import preview
from pipeline.data.cifar import RECORD_BYTES, read_cifar_archive
from pipeline.data.preprocess import run_preprocess
from pipeline.data.splits import allocate_stratified, prepare_splits, split_indices
from tests.cifar_archive import (
    CLASSES,
    PREFIX,
    TinyCifar,
    archive_members,
    build_archive,
    encode_records,
    random_images,
    write_tar_gz,
)
from tests.conftest import run_stage

PER_BATCH, N_TEST = 60, 50  # 300 training images, 30 per class; 50 test images, 5 per class
OUTPUTS = {
    "prepared": ["train.npz", "val.npz", "test.npz", "classes.json"],
    "reports": ["data_summary.json", "data_preview.png", "data_checks.json"],
}


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, TinyCifar]:
    archive = tmp_path / "a.tar.gz"
    return archive, build_archive(archive, per_batch=PER_BATCH, n_test=N_TEST)


def official_members(**replace: bytes) -> dict[str, bytes]:
    """The members of a valid tiny archive (names relative to the batches folder)."""
    _, files = archive_members(PER_BATCH, N_TEST)
    return files | replace


def write_members(path: Path, files: dict[str, bytes], prefix: str = PREFIX) -> Path:
    write_tar_gz(
        path, {f"{prefix}/{name}" if prefix else name: data for name, data in files.items()}
    )
    return path


def files_under(*folders: Path) -> list[Path]:
    """Every file (temp files included) left in ``folders``."""
    return [p for folder in folders if folder.exists() for p in folder.rglob("*") if p.is_file()]


def params(val_size: int = 50, max_train_images: int | None = None, seed: int = 42):
    return PreprocessParams(val_size=val_size, max_train_images=max_train_images, seed=seed)


# --- decoding ----------------------------------------------------------------------------------


def test_archive_round_trips_known_pixels(tiny: tuple[Path, TinyCifar]) -> None:
    archive, known = tiny
    data = read_cifar_archive(archive)
    assert data.classes == CLASSES
    # Training batches concatenated in order 1..5, each image exactly as written.
    np.testing.assert_array_equal(data.train_x, known.train_x)
    np.testing.assert_array_equal(data.train_y, known.train_y)
    np.testing.assert_array_equal(data.test_x, known.test_x)
    np.testing.assert_array_equal(data.test_y, known.test_y)
    assert data.train_x.dtype == np.uint8 and data.train_x.shape == (5 * PER_BATCH, 32, 32, 3)
    assert data.train_y.dtype == np.uint8 and data.test_x.shape == (N_TEST, 32, 32, 3)


def test_channel_order_and_row_major_layout_of_a_hand_made_record(tmp_path: Path) -> None:
    # Built byte by byte, independently of encode_records: label, then the R, G and B planes.
    red, green, blue = bytearray(1024), bytearray(1024), bytearray(1024)
    red[1], green[1], blue[1] = 1, 2, 3  # row 0, column 1
    red[32], green[32], blue[32] = 10, 20, 30  # row 1, column 0
    red[1023], green[1023], blue[1023] = 250, 251, 252  # row 31, column 31
    record = bytes([7]) + bytes(red) + bytes(green) + bytes(blue)
    assert len(record) == RECORD_BYTES
    archive = write_members(tmp_path / "a.tar.gz", official_members(**{"data_batch_1.bin": record}))

    data = read_cifar_archive(archive)
    image, label = data.train_x[0], data.train_y[0]

    assert label == 7
    assert image[0, 1].tolist() == [1, 2, 3]
    assert image[1, 0].tolist() == [10, 20, 30]
    assert image[31, 31].tolist() == [250, 251, 252]
    assert int(image.sum()) == 6 + 60 + 753


def test_readme_and_other_members_are_ignored(tmp_path: Path) -> None:
    # Junk that would fail as a batch (not a multiple of 3,073 bytes), under the batches folder.
    files = official_members(**{"readme.html": b"\xff" * (RECORD_BYTES + 1), "notes.txt": b"x"})
    archive = write_members(tmp_path / "a.tar.gz", files)
    assert read_cifar_archive(archive).train_x.shape[0] == 5 * PER_BATCH


def test_any_single_top_folder_is_accepted(tmp_path: Path) -> None:
    archive = write_members(tmp_path / "a.tar.gz", official_members(), prefix="some-other-name")
    assert read_cifar_archive(archive).classes == CLASSES


# --- archive errors: one clear PipelineError, and no outputs from the stage ----------------------


def _truncated(path: Path) -> None:
    build_archive(path, per_batch=PER_BATCH, n_test=N_TEST)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 40)


def _trailer_cut(path: Path) -> None:
    # All members intact; only the gzip trailer (CRC + size) is cut.
    build_archive(path, per_batch=PER_BATCH, n_test=N_TEST)
    path.write_bytes(path.read_bytes()[:-4])


def _members(**replace: bytes):
    return lambda path: write_members(path, official_members(**replace))


def _without_test_batch(path: Path) -> None:
    files = official_members()
    del files["test_batch.bin"]
    write_members(path, files)


def _bad_size(path: Path) -> None:
    files = official_members()
    files["data_batch_3.bin"] += b"\x00" * 5
    write_members(path, files)


def _label_10(path: Path) -> None:
    files = official_members()
    batch = bytearray(files["data_batch_2.bin"])
    batch[4 * RECORD_BYTES] = 10  # the label byte of record 4
    files["data_batch_2.bin"] = bytes(batch)
    write_members(path, files)


def _nine_classes(path: Path) -> None:
    write_members(path, official_members(**{"batches.meta.txt": "\n".join(CLASSES[:9]).encode()}))


def _with_extra(name: str):
    def build(path: Path) -> None:
        files = {f"{PREFIX}/{n}": data for n, data in official_members().items()}
        files[name] = b"payload"
        write_tar_gz(path, files)

    return build


def _symlink(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in official_members().items():
            info = tarfile.TarInfo(f"{PREFIX}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(f"{PREFIX}/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)


def _duplicate(path: Path) -> None:
    files = {f"{PREFIX}/{n}": data for n, data in official_members().items()}
    files["elsewhere/data_batch_1.bin"] = files[f"{PREFIX}/data_batch_1.bin"]
    write_tar_gz(path, files)


def _missing(path: Path) -> None:
    """Write nothing: the archive does not exist."""


def _many_members(path: Path) -> None:
    files = {f"{PREFIX}/{n}": data for n, data in official_members().items()}
    files |= {f"{PREFIX}/empty-{i}": b"" for i in range(100)}
    write_tar_gz(path, files)


def _big_readme(path: Path) -> None:
    write_members(path, official_members(**{"readme.html": b"<p>" * (1 << 19)}))


ARCHIVE_ERRORS = {
    "truncated gzip": (_truncated, r"not a valid \.tar\.gz, or truncated \(while reading member"),
    "garbage bytes": (_garbage, r"not a valid \.tar\.gz, or truncated.*[Nn]ot a gzipped file"),
    "gzip trailer cut": (_trailer_cut, r"not a valid \.tar\.gz, or truncated \(after the last"),
    "missing member": (_without_test_batch, r"member test_batch\.bin is missing"),
    "record size": (
        _bad_size,
        r"member 'cifar-10-batches-bin/data_batch_3\.bin': size 184,385 bytes is not a multiple"
        r" of the 3,073-byte record",
    ),
    "label 10": (
        _label_10,
        r"member 'cifar-10-batches-bin/data_batch_2\.bin': record 4 has label 10; labels must be",
    ),
    "nine class names": (
        _nine_classes,
        r"batches\.meta\.txt': expected 10 non-empty class names.*\(got 9 names",
    ),
    "empty batch": (
        _members(**{"data_batch_5.bin": b""}),
        r"data_batch_5\.bin': holds no records",
    ),
    "dot-dot member": (_with_extra("../evil"), r"member '\.\./evil': path contains '\.\.'"),
    "nested dot-dot": (_with_extra(f"{PREFIX}/../../evil"), r"path contains '\.\.'"),
    "absolute member": (_with_extra("/etc/evil"), r"member '/etc/evil': absolute path"),
    "symlink member": (_symlink, r"member 'cifar-10-batches-bin/link': is a link"),
    "duplicate member": (
        _duplicate,
        r"member data_batch_1\.bin appears twice, as 'cifar-10-batches-bin/data_batch_1\.bin'"
        r" and 'elsewhere/data_batch_1\.bin'",
    ),
    "missing archive": (_missing, r"archive not found; run `dvc repro download` first"),
    "too many members": (_many_members, r"holds more than 64 members \(the CIFAR-10 binary"),
    "oversized other member": (
        _big_readme,
        r"member 'cifar-10-batches-bin/readme\.html': declares 1,572,864 bytes, more than the"
        r" 1,048,576 of any such member",
    ),
}


@pytest.mark.parametrize("case", list(ARCHIVE_ERRORS))
def test_bad_archive_raises_one_clear_error_and_writes_nothing(tmp_path: Path, case: str) -> None:
    build, message = ARCHIVE_ERRORS[case]
    archive = tmp_path / "in" / "a.tar.gz"
    archive.parent.mkdir()
    build(archive)
    prepared, reports = tmp_path / "prepared", tmp_path / "reports"

    with pytest.raises(PipelineError, match=message) as caught:
        run_preprocess(archive, prepared, reports, params())

    text = str(caught.value)
    assert "\n" not in text and str(archive) in text
    assert files_under(prepared, reports) == []


def test_oversized_member_is_refused_from_its_header_before_it_is_read(tmp_path: Path) -> None:
    # 64 MiB of zeros gzip to ~64 KiB: more than the 30,730,000 bytes of a real batch.
    archive = write_members(tmp_path / "bomb.tar.gz", official_members(
        **{"data_batch_1.bin": bytes(64 << 20)}))  # fmt: skip
    assert archive.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(PipelineError) as caught:
            read_cifar_archive(archive)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(caught.value) == (
        f"{archive}: member 'cifar-10-batches-bin/data_batch_1.bin': declares 67,108,864 bytes,"
        " more than the 30,730,000 of any such member of the CIFAR-10 binary release; refusing"
        " this archive"
    )
    assert peak < 8 << 20, f"{peak:,} bytes held: the member was read before being refused"


def test_archive_expanding_beyond_the_real_one_is_refused(tmp_path: Path) -> None:
    # A valid tiny archive, then 208 MiB of zeros in appended gzip members (~200 KiB on disk).
    archive = write_members(tmp_path / "a.tar.gz", official_members())
    zeros = gzip.compress(bytes(16 << 20), compresslevel=9)
    assert 13 * len(zeros) < 1 << 20
    with archive.open("ab") as handle:
        for _ in range(13):
            handle.write(zeros)
    with pytest.raises(PipelineError, match=r"expands to more than 200,000,000 bytes"):
        read_cifar_archive(archive)


def test_failed_write_leaves_no_outputs(tiny: tuple[Path, TinyCifar], tmp_path: Path) -> None:
    archive, _ = tiny
    prepared = tmp_path / "prepared"
    reports = tmp_path / "reports"
    reports.write_text("a file where the reports folder should be")

    with pytest.raises(PipelineError, match="cannot write the preprocess outputs"):
        run_preprocess(archive, prepared, reports, params())

    # The arrays were written to temp files before the failure: none may be left, renamed or not.
    assert files_under(prepared) == []


# --- the split ---------------------------------------------------------------------------------


def balanced(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return random_images(n, seed)


def test_split_sizes_and_stratification_are_exact() -> None:
    x, y = balanced()
    train_x, train_y, val_x, val_y = prepare_splits(x, y, 50, None, seed=1)
    assert (len(train_x), len(train_y), len(val_x), len(val_y)) == (250, 250, 50, 50)
    assert np.bincount(val_y, minlength=10).tolist() == [5] * 10
    assert np.bincount(train_y, minlength=10).tolist() == [25] * 10
    # Each image keeps its own label.
    train_idx, val_idx = split_indices(y, 50, None, seed=1)
    np.testing.assert_array_equal(val_x, x[val_idx])
    np.testing.assert_array_equal(val_y, y[val_idx])
    np.testing.assert_array_equal(train_y, y[train_idx])


def test_the_real_proportions_give_500_validation_images_per_class() -> None:
    y = np.repeat(np.arange(10, dtype=np.uint8), 5000)
    train_idx, val_idx = split_indices(y, 5000, None, seed=42)
    assert np.bincount(y[val_idx]).tolist() == [500] * 10
    assert np.bincount(y[train_idx]).tolist() == [4500] * 10


def test_train_and_val_partition_the_training_set() -> None:
    x, y = balanced()
    train_idx, val_idx = split_indices(y, 50, None, seed=3)
    assert np.intersect1d(train_idx, val_idx).size == 0
    np.testing.assert_array_equal(np.union1d(train_idx, val_idx), np.arange(len(y)))
    # The same, by image content: every original image lands in exactly one split.
    train_x, _, val_x, _ = prepare_splits(x, y, 50, None, seed=3)
    rows = sorted(img.tobytes() for img in np.concatenate([train_x, val_x]))
    assert rows == sorted(img.tobytes() for img in x)


def test_split_is_deterministic_for_a_seed_and_differs_across_seeds() -> None:
    _, y = balanced()
    first = split_indices(y, 50, 100, seed=7)
    again = split_indices(y, 50, 100, seed=7)
    other = split_indices(y, 50, 100, seed=8)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])
    assert not np.array_equal(first[0], other[0])


def test_outputs_keep_the_original_order() -> None:
    _, y = balanced()
    train_idx, val_idx = split_indices(y, 50, 120, seed=5)
    assert np.all(np.diff(train_idx) > 0) and np.all(np.diff(val_idx) > 0)


def test_max_train_images_is_applied_after_carving_validation_and_is_stratified() -> None:
    _, y = balanced()
    full_train, full_val = split_indices(y, 50, None, seed=11)
    capped_train, capped_val = split_indices(y, 50, 100, seed=11)
    # Validation is carved first, so capping the training images does not change it...
    np.testing.assert_array_equal(capped_val, full_val)
    # ...and the cap takes a stratified subset of what remains.
    assert len(capped_train) == 100
    assert np.isin(capped_train, full_train).all()
    assert np.bincount(y[capped_train], minlength=10).tolist() == [10] * 10


def test_largest_remainder_allocation_sums_exactly() -> None:
    # Quotas 3.5, 3.5, 3.0: the floors give 9, the spare seat goes to the first of the tie.
    assert allocate_stratified(np.array([7, 7, 6]), 10).tolist() == [4, 3, 3]
    counts = np.array([13, 29, 7, 51])
    for total in range(1, int(counts.sum()) + 1):
        alloc = allocate_stratified(counts, total)
        assert alloc.sum() == total
        exact = counts * total / counts.sum()
        assert np.all(alloc >= np.floor(exact)) and np.all(alloc <= np.ceil(exact))


def test_imbalanced_classes_are_split_in_proportion() -> None:
    y = np.repeat(np.arange(10, dtype=np.uint8), [40, 40, 40, 40, 40, 20, 20, 20, 20, 20])
    _, val_idx = split_indices(y, 60, None, seed=0)
    assert np.bincount(y[val_idx]).tolist() == [8] * 5 + [4] * 5


def test_val_size_too_large_names_both_numbers() -> None:
    _, y = balanced()
    with pytest.raises(PipelineError, match=r"val_size: 300 must be smaller than the 300 training"):
        split_indices(y, 300, None, seed=0)


def test_max_train_images_too_large_names_both_numbers() -> None:
    _, y = balanced()
    with pytest.raises(PipelineError, match=r"max_train_images: 251 is more than the 250 training"):
        split_indices(y, 50, 251, seed=0)


def test_a_class_without_validation_images_is_an_error() -> None:
    y = np.repeat(np.arange(10, dtype=np.uint8), [100] * 9 + [2])
    with pytest.raises(PipelineError, match=r"validation split of 10 images would get no image"):
        split_indices(y, 10, None, seed=0)


# --- the stage's outputs -----------------------------------------------------------------------


def test_run_preprocess_writes_every_output(tiny: tuple[Path, TinyCifar], tmp_path: Path) -> None:
    archive, known = tiny
    prepared, reports = tmp_path / "prepared", tmp_path / "reports"

    summary = run_preprocess(archive, prepared, reports, params(val_size=50, max_train_images=200))

    assert sorted(p.name for p in files_under(prepared, reports)) == sorted(
        OUTPUTS["prepared"] + OUTPUTS["reports"]
    )
    train, val, test = (np.load(prepared / f"{s}.npz") for s in ("train", "val", "test"))
    assert train["x"].shape == (200, 32, 32, 3) and val["x"].shape == (50, 32, 32, 3)
    # The test batch passes through untouched, in its original order.
    np.testing.assert_array_equal(test["x"], known.test_x)
    np.testing.assert_array_equal(test["y"], known.test_y)
    # Train and val images are the original training images with their labels.
    train_idx, val_idx = split_indices(known.train_y, 50, 200, seed=42)
    np.testing.assert_array_equal(train["x"], known.train_x[train_idx])
    np.testing.assert_array_equal(val["y"], known.train_y[val_idx])
    assert json.loads((reports / "data_summary.json").read_text()) == summary
    assert summary["train"]["per_class"] == dict.fromkeys(CLASSES, 20)
    assert summary["val"] == {"total": 50, "per_class": dict.fromkeys(CLASSES, 5)}


def _archive_without_cat(path: Path, where: str) -> Path:
    """A tiny archive whose training batches (or test batch) hold no image of 'cat' (label 3)."""
    files = official_members()
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if where == "train" else ["test_batch.bin"]
    for name in names:
        records = np.frombuffer(files[name], np.uint8).reshape(-1, RECORD_BYTES).copy()
        records[records[:, 0] == 3, 0] = 4
        files[name] = records.tobytes()
    return write_members(path, files)


def test_a_class_missing_from_train_and_val_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    archive = _archive_without_cat(tmp_path / "a.tar.gz", "train")
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        summary = run_preprocess(archive, tmp_path / "prepared", tmp_path / "reports", params())
    assert summary["train"]["per_class"]["cat"] == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "warning: the train split has no image of class 'cat': the model cannot learn it",
        "warning: the val split has no image of class 'cat': validation accuracy says nothing"
        " about it",
    ]


def test_a_class_missing_from_the_test_batch_is_an_error(tmp_path: Path) -> None:
    archive = _archive_without_cat(tmp_path / "a.tar.gz", "test")
    prepared, reports = tmp_path / "prepared", tmp_path / "reports"
    with pytest.raises(PipelineError, match=r"the test batch has no image of class 'cat'"):
        run_preprocess(archive, prepared, reports, params())
    assert files_under(prepared, reports) == []


def test_preview_shows_the_exact_pixels_sharp(tiny: tuple[Path, TinyCifar], tmp_path: Path) -> None:
    # Through the stage's own code path: the PNG run_preprocess writes into the reports folder.
    archive, _ = tiny
    prepared, reports = tmp_path / "prepared", tmp_path / "reports"
    run_preprocess(archive, prepared, reports, params())

    image = np.asarray(Image.open(reports / "data_preview.png").convert("RGB"))
    with np.load(prepared / "train.npz") as train:
        train_x, train_y = train["x"], train["y"]
    tile = 32 * preview.SCALE
    # Row c, column k: the k-th image of class c in the prepared train split (shuffled by the
    # split, so not the archive's order), each pixel repeated SCALE times.
    for label, col in [(0, 0), (3, 2), (9, 7)]:
        source = train_x[np.flatnonzero(train_y == label)[col]]
        top = preview.MARGIN + label * (tile + preview.GAP)
        left = preview.LABEL_WIDTH + col * (tile + preview.GAP)
        expected = source.repeat(preview.SCALE, axis=0).repeat(preview.SCALE, axis=1)
        np.testing.assert_array_equal(image[top : top + tile, left : left + tile], expected)
    assert image.shape[0] == 10 * tile + 9 * preview.GAP + 2 * preview.MARGIN
    assert image.shape[1] == preview.LABEL_WIDTH + 8 * tile + 7 * preview.GAP + preview.MARGIN
    assert sorted(p.name for p in files_under(reports)) == sorted(OUTPUTS["reports"])


# --- the stage CLI, end to end -----------------------------------------------------------------


def stage_paths(tmp_path: Path, archive: Path) -> list[str | Path]:
    return [
        "--archive",
        archive,
        "--prepared-dir",
        tmp_path / "prepared",
        "--reports-dir",
        tmp_path / "reports",
    ]


@pytest.mark.e2e
def test_stage_cli_end_to_end(tiny: tuple[Path, TinyCifar], tmp_path: Path) -> None:
    archive, known = tiny
    result = run_stage(
        "preprocess",
        *stage_paths(tmp_path, archive),
        "--set",
        "preprocess.val_size=50",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr

    prepared, reports = tmp_path / "prepared", tmp_path / "reports"
    for name, n in {"train": 250, "val": 50, "test": N_TEST}.items():
        with np.load(prepared / f"{name}.npz") as arrays:
            assert arrays["x"].dtype == np.uint8 and arrays["x"].shape == (n, 32, 32, 3)
            assert arrays["y"].dtype == np.uint8 and arrays["y"].shape == (n,)
    assert json.loads((prepared / "classes.json").read_text()) == CLASSES
    summary = json.loads((reports / "data_summary.json").read_text())
    assert {s: summary[s]["total"] for s in ("train", "val", "test")} == {
        "train": 250,
        "val": 50,
        "test": 50,
    }
    assert summary["val"]["per_class"] == dict.fromkeys(CLASSES, 5)
    assert summary["train"]["per_class"] == dict.fromkeys(CLASSES, 25)
    assert summary["test"]["per_class"] == {
        name: int(n)
        for name, n in zip(CLASSES, np.bincount(known.test_y, minlength=10), strict=True)
    }
    png = (reports / "data_preview.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    Image.open(io.BytesIO(png)).verify()
    # The split sizes, in one line: every class has the same count in each split here.
    assert "images: train 250 (25 per class), val 50 (5 per class), test 50 (" in result.stderr


@pytest.mark.e2e
def test_stage_cli_corrupt_archive(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    _truncated(archive)
    result = run_stage("preprocess", *stage_paths(tmp_path, archive), timeout=120)
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        result.stderr.strip()
    ]
    assert "Traceback" not in result.stderr
    assert files_under(tmp_path / "prepared", tmp_path / "reports") == []


@pytest.mark.e2e
def test_stage_cli_bad_param(tiny: tuple[Path, TinyCifar], tmp_path: Path) -> None:
    archive, _ = tiny
    result = run_stage(
        "preprocess", *stage_paths(tmp_path, archive), "--set", "preprocess.val_size=0", timeout=120
    )
    assert result.returncode == 2
    assert "preprocess.val_size: must be between 10 and 25000 (got 0)" in result.stderr
    assert files_under(tmp_path / "prepared", tmp_path / "reports") == []


# --- the data report (pipeline/data/checks.py) ----------------------------------------------------


def _archive_with_planted_faults(path: Path) -> TinyCifar:
    """A tiny archive whose training batches hold 2 copies of image 0, a copy of test image 0
    and a blank image; the test batch a blank image too."""
    known, files = archive_members(PER_BATCH, N_TEST)
    train_x, test_x = known.train_x.copy(), known.test_x.copy()
    train_x[[7, 100]] = train_x[0]  # image 0 and two copies: 2 duplicates
    train_x[150] = test_x[0]  # a test image also in the training batches
    train_x[200] = 0  # a black image
    test_x[10] = [200, 10, 10]  # a single-colour test image
    for i in range(5):
        rows = slice(i * PER_BATCH, (i + 1) * PER_BATCH)
        files[f"data_batch_{i + 1}.bin"] = encode_records(train_x[rows], known.train_y[rows])
    files["test_batch.bin"] = encode_records(test_x, known.test_y)
    write_members(path, files)
    return TinyCifar(train_x, known.train_y, test_x, known.test_y)


def lenient() -> DataChecksParams:
    return DataChecksParams(max_duplicate_share=1.0, max_overlap_share=1.0, max_constant_share=1.0)


def test_data_report_finds_planted_duplicates_overlap_and_blank_images(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    _archive_with_planted_faults(archive)
    reports = tmp_path / "reports"
    # A planted training image may land in the validation split: counts are summed over both.
    run_preprocess(archive, tmp_path / "prepared", reports, params(val_size=10), lenient())

    report = json.loads((reports / "data_checks.json").read_text())
    assert report["images"] == {"train": 290, "val": 10, "test": N_TEST}
    assert report["constant_train"] + report["constant_val"] == 1
    assert report["constant_test"] == 1
    assert report["duplicates_train"] + report["overlap_val_train"] == 2
    assert report["overlap_test_train"] == 1
    assert report["labels_out_of_range"] == 0


def test_clean_data_reports_nothing(tiny: tuple[Path, TinyCifar], tmp_path: Path) -> None:
    archive, _ = tiny
    run_preprocess(archive, tmp_path / "prepared", tmp_path / "reports", params(), lenient())
    report = json.loads((tmp_path / "reports" / "data_checks.json").read_text())
    counts = {key: value for key, value in report.items() if key != "images"}
    assert set(counts.values()) == {0}


@pytest.mark.e2e
def test_a_breached_threshold_stops_the_stage_with_one_line_and_writes_nothing(
    tmp_path: Path,
) -> None:
    archive = tmp_path / "a.tar.gz"
    _archive_with_planted_faults(archive)
    # One planted test image in 50 (2%) is over the default 1%: the repo's params.yaml stops it.
    paths = stage_paths(tmp_path, archive)
    result = run_stage("preprocess", *paths, "--set", "preprocess.val_size=50", timeout=120)

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.strip().splitlines()[-1]] and len(errors) == 1
    assert "data checks failed: " in errors[0]
    expected = "overlap_test_train 1 of 50 test images (2.00%) > checks.max_overlap_share"
    assert expected in errors[0]
    assert "constant_test 1 of 50" in errors[0]
    assert files_under(tmp_path / "prepared", tmp_path / "reports") == []


def test_balanced_splits_are_one_log_line_and_unbalanced_ones_name_each_class() -> None:
    from pipeline.data.preprocess import describe_splits, summarise

    classes = ["a", "b"]
    balanced = summarise(
        {"train": np.array([0, 1, 0, 1]), "val": np.array([0, 1]), "test": np.array([0, 1])},
        classes,
    )
    assert describe_splits(balanced) == [
        "images: train 4 (2 per class), val 2 (1 per class), test 2 (1 per class)"
    ]
    uneven = summarise(
        {"train": np.array([0, 1, 1]), "val": np.array([0, 1]), "test": np.array([0, 1])},
        classes,
    )
    assert describe_splits(uneven) == [
        "train: 3 images (a 1, b 2)",
        "val: 2 images (a 1, b 1)",
        "test: 2 images (a 1, b 1)",
    ]
