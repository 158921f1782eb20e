"""Carry a large archive to the GPU machine in pieces, one piece per call (standard library only).

A call to the lent machine carries at most 64 MiB, but files it leaves outside the repository
stay while the machine is warm. So the archive is split here, each call carries one piece and
stashes it (checked against the manifest), and a last call assembles the whole (checked again):

    python3 benchmarks/device_archive.py split ARCHIVE --out benchmarks/.device/pieces
    python3 benchmarks/device_archive.py receive benchmarks/.device/pieces --stash /tmp/stash
    python3 benchmarks/device_archive.py assemble --stash /tmp/stash --out /tmp/archive.tar.gz

Runs on the device's bare Python: no import outside the standard library (so no
pipeline.core.atomic; the same write-beside-then-rename is done here).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

MANIFEST = "manifest.json"
MIB = 1024 * 1024
CHUNK = 4 * MIB


class ArchiveError(Exception):
    """A piece or manifest that is missing or does not match: reported as one error line."""


def md5_of(path: Path) -> str:
    """The hex md5 of the file at ``path``, read in chunks."""
    digest = hashlib.md5()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(target: Path, write) -> None:
    """Call ``write(handle)`` on a temp file beside ``target``, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the archive from other users
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def split(archive: Path, out: Path, piece_bytes: int) -> dict:
    """Write ``piece-000``, ... (at most ``piece_bytes`` each) and ``manifest.json`` in ``out``."""
    if not archive.is_file():
        raise ArchiveError(f"{archive}: archive not found")
    if piece_bytes <= 0:
        raise ArchiveError("the piece size must be positive")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("piece-*"):  # an earlier split's pieces would not match this manifest
        stale.unlink()
    pieces = []
    whole = hashlib.md5()
    with archive.open("rb") as source:
        while block := source.read(piece_bytes):
            whole.update(block)
            name = f"piece-{len(pieces):03d}"
            _write_atomically(out / name, lambda handle, data=block: handle.write(data))
            pieces.append({"name": name, "size": len(block), "md5": hashlib.md5(block).hexdigest()})
    manifest = {
        "archive": archive.name,
        "size": archive.stat().st_size,
        "md5": whole.hexdigest(),
        "pieces": pieces,
    }
    text = json.dumps(manifest, indent=2).encode() + b"\n"
    _write_atomically(out / MANIFEST, lambda handle: handle.write(text))
    return manifest


def read_manifest(folder: Path) -> dict:
    """The manifest in ``folder``, or an ArchiveError naming what is wrong with it."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        _ = [(p["name"], p["size"], p["md5"]) for p in manifest["pieces"]]
        _ = (manifest["archive"], manifest["size"], manifest["md5"])
    except FileNotFoundError:
        raise ArchiveError(f"{path}: manifest not found") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ArchiveError(f"{path}: not a piece manifest ({exc})") from None
    return manifest


def _piece_matches(path: Path, piece: dict) -> bool:
    return path.is_file() and path.stat().st_size == piece["size"] and md5_of(path) == piece["md5"]


def receive(folder: Path, stash: Path) -> tuple[list[str], list[str]]:
    """Copy each piece in ``folder`` that matches its manifest into ``stash``; (held, missing).

    The manifest is copied too (the last call may carry none). A piece in ``folder`` that does
    not match is an ArchiveError (nothing of it reaches the stash).
    """
    manifest = read_manifest(folder)
    stash.mkdir(parents=True, exist_ok=True)
    if (stash / MANIFEST).is_file() and read_manifest(stash)["md5"] != manifest["md5"]:
        raise ArchiveError(f"{stash}: holds pieces of another archive; remove it first")
    for piece in manifest["pieces"]:
        source = folder / piece["name"]
        if not source.exists():
            continue
        if not _piece_matches(source, piece):
            raise ArchiveError(f"{source}: size or md5 does not match {MANIFEST}")
        _write_atomically(stash / piece["name"], lambda h, s=source: _copy_into(s, h))
    text = (folder / MANIFEST).read_bytes()
    _write_atomically(stash / MANIFEST, lambda handle: handle.write(text))
    names = [piece["name"] for piece in manifest["pieces"]]
    held = [name for name in names if (stash / name).is_file()]
    return held, [name for name in names if name not in held]


def _copy_into(source: Path, handle) -> None:
    with source.open("rb") as data:
        shutil.copyfileobj(data, handle, CHUNK)


def assemble(stash: Path, out: Path) -> dict:
    """Concatenate the stash's pieces into ``out`` after checking each, then the whole md5."""
    manifest = read_manifest(stash)
    missing = [p["name"] for p in manifest["pieces"] if not (stash / p["name"]).is_file()]
    if missing:
        raise ArchiveError(f"{stash}: missing {', '.join(missing)}")
    for piece in manifest["pieces"]:
        if not _piece_matches(stash / piece["name"], piece):
            raise ArchiveError(f"{stash / piece['name']}: size or md5 does not match {MANIFEST}")
    whole = hashlib.md5()

    def write(handle) -> None:
        for piece in manifest["pieces"]:
            with (stash / piece["name"]).open("rb") as data:
                while block := data.read(CHUNK):
                    whole.update(block)
                    handle.write(block)
        if whole.hexdigest() != manifest["md5"]:  # raising here leaves no file behind
            raise ArchiveError(f"{out}: assembled md5 {whole.hexdigest()} != {manifest['md5']}")

    _write_atomically(out, write)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    cut = commands.add_parser("split", help="cut ARCHIVE into pieces plus manifest.json")
    cut.add_argument("archive", type=Path)
    cut.add_argument("--out", type=Path, required=True, help="folder for the pieces")
    cut.add_argument(
        "--piece-mib", type=int, default=48,
        help="largest piece in MiB (default 48: a piece plus the repository fits a 64 MiB call)",
    )  # fmt: skip
    cut.add_argument("--piece-bytes", type=int, help=argparse.SUPPRESS)  # tests: tiny pieces
    take = commands.add_parser("receive", help="stash the pieces in DIR that match the manifest")
    take.add_argument("folder", type=Path, metavar="DIR")
    take.add_argument("--stash", type=Path, required=True, help="folder outside the repository")
    join = commands.add_parser("assemble", help="concatenate the stash's pieces, check the md5")
    join.add_argument("--stash", type=Path, required=True)
    join.add_argument("--out", type=Path, required=True, help="the archive to write")
    args = parser.parse_args(argv)
    try:
        if args.command == "split":
            manifest = split(args.archive, args.out, args.piece_bytes or args.piece_mib * MIB)
            print(f"{len(manifest['pieces'])} pieces of {args.archive} in {args.out}")
        elif args.command == "receive":
            held, missing = receive(args.folder, args.stash)
            print(f"stash holds: {' '.join(held) or '-'}; missing: {' '.join(missing) or '-'}")
        else:
            manifest = assemble(args.stash, args.out)
            print(f"{args.out}: {manifest['size']} bytes, md5 {manifest['md5']}")
    except (ArchiveError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
