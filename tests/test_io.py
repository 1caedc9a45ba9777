"""Atomic writers, folder manifests and the permissions outputs get."""

import os
import time

import numpy as np
import pytest

from brainshape import io
from brainshape.errors import BrainshapeError


def folder_with_manifest(tmp_path):
    out = tmp_path / "features" / "m" / "v"
    with io.atomic_dir(out, rule="features") as tmp:
        np.save(tmp / "a.npy", np.arange(10.0))
        (tmp / "b.txt").write_text("hello")
    return out


def test_a_folder_output_is_verified_against_its_manifest(tmp_path):
    out = folder_with_manifest(tmp_path)
    assert (out / io.MANIFEST).is_file()
    io.verify_manifest(out)
    # Touched but unchanged: fine (the checksum is compared only when the time moved).
    os.utime(out / "b.txt", ns=(time.time_ns(), time.time_ns()))
    io.verify_manifest(out)
    # Same size, other content: named, with the rule to rerun.
    (out / "b.txt").write_text("HELLO")
    with pytest.raises(BrainshapeError) as error:
        io.verify_manifest(out)
    assert str(error.value) == (
        f"{out / 'b.txt'} changed after rule features wrote it (its size or checksum differs "
        f"from {out / io.MANIFEST}); rerun rule features for it (snakemake --forcerun features "
        f"... or delete {out})"
    )
    (out / "b.txt").write_text("hello")
    io.verify_manifest(out)
    (out / "c.npy").write_bytes(b"x")
    with pytest.raises(BrainshapeError, match=r"c.npy was added after rule features wrote"):
        io.verify_manifest(out)
    (out / "c.npy").unlink()
    (out / "a.npy").unlink()
    with pytest.raises(BrainshapeError, match=r"a.npy was removed after rule features wrote"):
        io.verify_manifest(out)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_get_the_permissions_the_umask_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        io.save_npy(tmp_path / "x.npy", np.zeros(3))
        io.save_text(tmp_path / "x.txt", "x")
        out = folder_with_manifest(tmp_path)
    finally:
        os.umask(old)
    for path in (tmp_path / "x.npy", tmp_path / "x.txt", out / "a.npy", out / io.MANIFEST):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
