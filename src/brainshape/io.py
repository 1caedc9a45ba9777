"""Atomic writers: every output appears complete under its final name, or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainshape.errors import BrainshapeError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file lives in the same directory, so the final ``os.replace`` is atomic on
    POSIX file systems. On error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes a private file: give it the permissions the umask gives a new file,
        # so a lab's group can read what a job wrote.
        tmp_path.chmod(0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask (read without changing it for longer than one call)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_dir(out_dir: str | os.PathLike, rule: str | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside ``out_dir``; it replaces ``out_dir`` if the block succeeds.

    A killed job thus never leaves a half-written folder under the final name. Files and
    folders get the permissions the umask gives (temporary folders and some writers make
    private ones), so a folder written once can be shared by a group. With ``rule`` (the rule
    that writes the folder), its manifest is written last (:func:`write_manifest`).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield tmp
        if rule is not None:
            write_manifest(tmp, rule)
        umask = current_umask()
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        if out_dir.exists():
            old = Path(
                tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent)
            )
            os.replace(out_dir, old / "previous")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


#: The manifest a folder output carries: every file's size, modification time and CRC-32,
#: written last, so a folder with a manifest is complete.
MANIFEST = ".manifest.json"

_CHUNK = 1 << 22


def _crc32(path: Path) -> str:
    import zlib

    crc = 0
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"


#: Files a workflow engine adds to a folder output after it is written (Snakemake stamps
#: directory outputs with this one): not part of what the rule wrote.
ENGINE_FILES = (".snakemake_timestamp",)


def _files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name not in (MANIFEST, *ENGINE_FILES) and not p.is_symlink()
    )


def write_manifest(folder: str | os.PathLike, rule: str) -> None:
    """Record every file of ``folder`` (size, mtime, CRC-32) in its manifest, written last
    (atomically). ``rule`` is the rule that writes the folder, named when it must rerun."""
    folder = Path(folder)
    files = {}
    for path in _files(folder):
        stat = path.stat()
        files[str(path.relative_to(folder))] = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "crc32": _crc32(path),
        }
    save_json(folder / MANIFEST, {"rule": rule, "files": files})


def verify_manifest(folder: str | os.PathLike, *, checksums: bool = True) -> None:
    """Raise if a file of ``folder`` changed since its manifest was written: size, added or
    removed files always; content (CRC-32) where the modification time moved, if
    ``checksums``. A folder without a manifest (written before manifests existed) passes."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        return
    try:
        manifest = json.loads(path.read_text())
        rule, files = manifest["rule"], manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise BrainshapeError(
            f"{path} is damaged; rerun the rule that wrote {folder} (snakemake --forcerun ... "
            f"{folder})"
        ) from None
    fix = f"rerun rule {rule} for it (snakemake --forcerun {rule} ... or delete {folder})"
    present = {str(p.relative_to(folder)) for p in _files(folder)}
    for name in sorted(set(files) ^ present):
        what = "was removed" if name in files else "was added"
        raise BrainshapeError(f"{folder / name} {what} after rule {rule} wrote {folder}; {fix}")
    for name, recorded in files.items():
        stat = (folder / name).stat()
        changed = stat.st_size != recorded["size"]
        if not changed and checksums and stat.st_mtime_ns != recorded["mtime_ns"]:
            changed = _crc32(folder / name) != recorded["crc32"]
        if changed:
            raise BrainshapeError(
                f"{folder / name} changed after rule {rule} wrote it (its size or checksum "
                f"differs from {path}); {fix}"
            )


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as .npy atomically (loadable with ``np.load(path, mmap_mode='r')``)."""
    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array))


def save_parquet(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write a DataFrame as Parquet atomically, without the pandas index."""
    with atomic_path(path, suffix=".parquet") as tmp:
        table.to_parquet(tmp, index=False)


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (indented, keys in insertion order)."""
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def save_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
