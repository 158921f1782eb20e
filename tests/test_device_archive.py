"""benchmarks/device_archive.py: an archive carried in pieces over several calls, checked."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_archive.py"


def run(*args: object) -> subprocess.CompletedProcess:
    """The script as the device runs it: its own process, the bare interpreter."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, check=False
    )


@pytest.fixture
def pieces(tmp_path: Path) -> tuple[Path, Path]:
    """A random 10,000-byte archive split into pieces of 3,000 bytes (the last one 1,000)."""
    archive = tmp_path / "data.tar.gz"
    archive.write_bytes(os.urandom(10_000))
    out = tmp_path / "pieces"
    result = run("split", archive, "--out", out, "--piece-bytes", 3000)
    assert result.returncode == 0, result.stderr
    return archive, out


def test_split_writes_pieces_and_manifest(pieces: tuple[Path, Path]) -> None:
    archive, out = pieces
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["archive"] == "data.tar.gz"
    assert manifest["size"] == 10_000
    assert manifest["md5"] == hashlib.md5(archive.read_bytes()).hexdigest()
    assert [p["name"] for p in manifest["pieces"]] == [f"piece-00{i}" for i in range(4)]
    assert [p["size"] for p in manifest["pieces"]] == [3000, 3000, 3000, 1000]
    for piece in manifest["pieces"]:
        data = (out / piece["name"]).read_bytes()
        assert hashlib.md5(data).hexdigest() == piece["md5"]
    assert b"".join((out / f"piece-00{i}").read_bytes() for i in range(4)) == archive.read_bytes()


def carry(out: Path, call: Path, names: list[str]) -> Path:
    """What one device call carries: the manifest and the named pieces."""
    call.mkdir()
    for name in ["manifest.json", *names]:
        shutil.copy(out / name, call / name)
    return call


def test_received_over_two_calls_assembles_identical(pieces, tmp_path: Path) -> None:
    archive, out = pieces
    stash, target = tmp_path / "stash", tmp_path / "assembled.tar.gz"
    first = run("receive", carry(out, tmp_path / "call1", ["piece-000", "piece-002"]),
                "--stash", stash)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "stash holds: piece-000 piece-002; missing: piece-001 piece-003"
    early = run("assemble", "--stash", stash, "--out", target)
    assert early.returncode == 2
    assert early.stderr.strip() == f"error: {stash}: missing piece-001, piece-003"
    assert not target.exists()
    # The second call carries the rest; the stash kept the first call's pieces.
    second = run("receive", carry(out, tmp_path / "call2", ["piece-001", "piece-003"]),
                 "--stash", stash)  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == (
        "stash holds: piece-000 piece-001 piece-002 piece-003; missing: -"
    )
    done = run("assemble", "--stash", stash, "--out", target)
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == archive.read_bytes()
    assert hashlib.md5(target.read_bytes()).hexdigest() in done.stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def corrupt(path: Path) -> None:
    """Flip one byte, keeping the size (only the md5 can tell)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_receive_refuses_a_corrupt_piece(pieces, tmp_path: Path) -> None:
    _, out = pieces
    call = carry(out, tmp_path / "call", ["piece-001"])
    corrupt(call / "piece-001")
    stash = tmp_path / "stash"
    result = run("receive", call, "--stash", stash)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {call / 'piece-001'}: size or md5 does not match manifest.json"
    )
    assert not (stash / "piece-001").exists()


def test_assemble_refuses_a_corrupt_stashed_piece(pieces, tmp_path: Path) -> None:
    _, out = pieces
    stash, target = tmp_path / "stash", tmp_path / "assembled.tar.gz"
    assert run("receive", out, "--stash", stash).returncode == 0
    corrupt(stash / "piece-002")  # e.g. a disk error after it was stashed
    result = run("assemble", "--stash", stash, "--out", target)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {stash / 'piece-002'}: size or md5 does not match manifest.json"
    )
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.tar.gz", "pieces", "stash"]


def test_assemble_names_a_missing_piece(pieces, tmp_path: Path) -> None:
    _, out = pieces
    stash, target = tmp_path / "stash", tmp_path / "assembled.tar.gz"
    assert run("receive", out, "--stash", stash).returncode == 0
    (stash / "piece-003").unlink()
    result = run("assemble", "--stash", stash, "--out", target)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {stash}: missing piece-003"
    assert not target.exists()


def test_help_names_the_subcommands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("split", "receive", "assemble"):
        assert command in result.stdout


def test_receive_refuses_to_mix_two_archives(pieces, tmp_path: Path) -> None:
    _, out = pieces
    stash = tmp_path / "stash"
    assert (
        run("receive", carry(out, tmp_path / "call", ["piece-000"]), "--stash", stash).returncode
        == 0
    )
    other = tmp_path / "other.tar.gz"
    other.write_bytes(os.urandom(5000))
    assert run("split", other, "--out", tmp_path / "other", "--piece-bytes", 3000).returncode == 0
    result = run("receive", tmp_path / "other", "--stash", stash)
    assert result.returncode == 2
    assert (
        result.stderr.strip() == f"error: {stash}: holds pieces of another archive; remove it first"
    )
    assert (stash / "piece-000").read_bytes() == (out / "piece-000").read_bytes()


@pytest.mark.keras  # imports Keras (a few seconds): not in the fast tier
def test_real_run_imports_need_no_pandas_nor_sklearn() -> None:
    """RUNS=real on the GPU machine: prepare, time_to_accuracy and fit_run's training chain
    import without pandas or scikit-learn (neither is carried there)."""
    code = (
        "import sys\n"
        "sys.modules['pandas'] = sys.modules['sklearn'] = None\n"  # any import now fails
        "import benchmarks.data, benchmarks.time_to_accuracy, benchmarks.fit_run\n"
        "import pipeline.train.fit, pipeline.evaluate.tta, pipeline.train.checkpoints\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False,
        cwd=SCRIPT.parents[1], env={**os.environ, "KERAS_BACKEND": "jax"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
