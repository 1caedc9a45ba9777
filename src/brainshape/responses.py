"""Readers of the response files a runs sheet names: one per format.

- ``fmriprep`` and ``nifti``: a 4-D NIfTI image (x, y, z, volumes), read with nibabel; its TR
  is the header's ``pixdim[4]`` (in the header's time unit).
- ``hdf5``: a 2-D matrix (rows = volumes, columns = voxels) in one dataset of an HDF5 file, as
  ds003020 ships its preprocessed responses (``data``, float64), read with h5py.

:func:`shape` reads headers only (for planning and checks before any job runs); the fMRI stage
reads the data (:func:`read_hdf5`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainshape.errors import BrainshapeError


@dataclass(frozen=True)
class ResponseShape:
    """Rows (volumes), columns (voxels of the image, or matrix columns) and the TR the file
    itself states (None when it states none)."""

    rows: int
    columns: int
    tr: float | None


def nifti_tr(img) -> float:
    """Repetition time in seconds from a NIfTI header (pixdim[4]; 0 when unknown)."""
    zooms = img.header.get_zooms()
    if len(zooms) < 4:
        return 0.0
    tr = float(zooms[3])
    unit = img.header.get_xyzt_units()[1]
    return tr / 1000.0 if unit == "msec" else tr / 1e6 if unit == "usec" else tr


def shape(path: str | os.PathLike, fmt: str, key: str = "data") -> ResponseShape:
    """The shape of a response file from its header alone."""
    path = Path(path)
    if fmt == "hdf5":
        with _open_hdf5(path) as handle:
            data = _dataset(handle, path, key)
            if len(data.shape) != 2:
                raise BrainshapeError(
                    f"{path}: dataset '{key}' has shape {data.shape}; expected rows x columns "
                    "(volumes x voxels)"
                )
            return ResponseShape(int(data.shape[0]), int(data.shape[1]), None)
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise BrainshapeError(f"response {path} does not exist; check the runs sheet") from None
    except Exception as error:  # noqa: BLE001 - nibabel raises many kinds for a bad header
        raise BrainshapeError(f"cannot read the NIfTI header of {path}: {error}") from None
    dims = img.shape
    if len(dims) != 4:
        raise BrainshapeError(
            f"response {path} has shape {dims}; expected a 4-D image (x, y, z, volumes)"
        )
    tr = nifti_tr(img)
    return ResponseShape(int(dims[3]), int(np.prod(dims[:3])), tr if tr > 0 else None)


def _open_hdf5(path: Path):
    import h5py

    if not path.is_file():
        raise BrainshapeError(f"response {path} does not exist; check the runs sheet")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise BrainshapeError(
            f"cannot open {path} as HDF5 ({error}); the file is damaged or not HDF5: fetch it again"
        ) from None


def _dataset(handle, path: Path, key: str):
    if key not in handle:
        keys = ", ".join(sorted(handle.keys())) or "none"
        raise BrainshapeError(
            f"{path} has no dataset '{key}' (it has: {keys}); set the runs sheet's key column "
            "to the dataset holding the responses"
        )
    return handle[key]


def read_hdf5(path: str | os.PathLike, key: str = "data") -> np.ndarray:
    """The responses of an HDF5 file: float64 ``(rows, columns)`` (or, for a repeats dataset,
    ``(repeats, rows, columns)``)."""
    path = Path(path)
    with _open_hdf5(path) as handle:
        data = np.asarray(_dataset(handle, path, key), dtype=np.float64)
    if data.ndim not in (2, 3):
        raise BrainshapeError(
            f"{path}: dataset '{key}' has shape {data.shape}; expected rows x columns"
        )
    return data
