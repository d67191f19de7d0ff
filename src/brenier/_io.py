"""Atomic file writing: write to a temporary file in the same folder, then rename.

A reader (or a resumed run after a crash) sees either the old file or the new one, never half.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    def _w(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, default=_jsonable)
            f.write("\n")

    return atomic_write(path, _w)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def _w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, _w)


def _jsonable(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ------------------------------------------------------------------ run folders as a unit
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "brenier.manifest/1"


class CorruptRunError(ValueError):
    """A saved folder is incomplete, tampered with or corrupted (names the file and what is wrong)."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: str | os.PathLike, files: list[str], kind: str) -> Path:
    """Write ``folder/manifest.json`` listing the sha256 and size of each file (paths relative to
    ``folder``). Written last and atomically: a save that dies before it leaves no manifest, so
    the folder does not load as valid."""
    folder = Path(folder)
    entries = {}
    for rel in files:
        p = folder / rel
        entries[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return write_json(folder / MANIFEST, {"format": MANIFEST_FORMAT, "kind": kind, "files": entries})


def verify_manifest(folder: str | os.PathLike, kind: str) -> dict:
    """Check ``folder/manifest.json`` against the files; raise ``CorruptRunError`` naming the first
    missing, resized or altered file. Returns the manifest."""
    folder = Path(folder)
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise CorruptRunError(f"{mpath}: missing (an incomplete save, or not a saved {kind})")
    try:
        meta = json.loads(mpath.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptRunError(f"{mpath}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != MANIFEST_FORMAT or meta.get("kind") != kind:
        raise CorruptRunError(f"{mpath}: not a {MANIFEST_FORMAT} manifest of a {kind}")
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise CorruptRunError(f"{mpath}: lists no files")
    for rel, entry in files.items():
        p = folder / rel
        if not isinstance(rel, str) or ".." in Path(rel).parts or Path(rel).is_absolute():
            raise CorruptRunError(f"{mpath}: bad file name {rel!r}")
        if not p.is_file():
            raise CorruptRunError(f"{p}: missing (listed in {MANIFEST})")
        if not isinstance(entry, dict) or p.stat().st_size != entry.get("bytes") or sha256_file(p) != entry.get("sha256"):
            raise CorruptRunError(f"{p}: checksum mismatch (the file was changed or corrupted after it was saved)")
    return meta
