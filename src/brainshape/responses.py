"""Readers of the response files a runs sheet names: one per format.

- ``fmriprep`` and ``nifti``: a 4-D NIfTI image (x, y, z, volumes), read with nibabel; its TR
  is the header's ``pixdim[4]`` (in the header's time unit), checked against the TR given by the
  runs sheet or config, else by the JSON sidecar beside the image (fMRIPrep writes one with
  ``RepetitionTime``): :func:`run_tr`.
- ``hdf5``: a 2-D matrix (rows = volumes, columns = voxels) in one dataset of an HDF5 file, as
  ds003020 ships its preprocessed responses (``data``, float64), read with h5py.

:func:`shape` reads headers only (for planning and checks before any job runs); the fMRI stage
reads the data (:func:`read_hdf5`).
"""

from __future__ import annotations

import json
import os
import re
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


#: Seconds a repetition time can be. Outside it a header lost its unit (1500 written for
#: 1500 ms) or holds a placeholder (SPM writes 0 into the 4-D images it saves).
TR_RANGE = (0.3, 5.0)
#: Two TRs of one run further apart than this fraction disagree: 1.5 and 1.52 s (1.3 %) agree
#: and are reported; 1 and 2 s do not.
TR_AGREEMENT = 0.02


def plausible_tr(tr: float | None) -> bool:
    """Whether ``tr`` (s) can be a repetition time (:data:`TR_RANGE`)."""
    return tr is not None and TR_RANGE[0] <= tr <= TR_RANGE[1]


def check_tr(tr: float | None, where: str) -> None:
    """Raise unless ``tr`` (s; None: not given) can be a repetition time; ``where`` names the
    file, row or key that gives it."""
    if tr is not None and not plausible_tr(tr):
        low, high = TR_RANGE
        raise BrainshapeError(
            f"{where}: tr is {tr:g} s, outside the {low:g}-{high:g} s a repetition time can be; "
            "write it in seconds"
        )


def trs_agree(a: float, b: float) -> bool:
    """Whether two TRs of one run agree within :data:`TR_AGREEMENT`."""
    return abs(a - b) <= TR_AGREEMENT * max(a, b)


def image_sidecar(image: str | os.PathLike) -> Path:
    """The JSON sidecar beside a NIfTI image (``x.nii.gz`` -> ``x.json``), as fMRIPrep writes
    one beside each derivative."""
    image = Path(image)
    return image.with_name(re.sub(r"\.nii(\.gz)?$", "", image.name) + ".json")


def json_tr(path: str | os.PathLike) -> float | None:
    """``RepetitionTime`` (s) of a JSON sidecar; None when the file or the key is absent."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get("RepetitionTime")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise BrainshapeError(f"{path} is not a JSON object; fix the sidecar") from None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BrainshapeError(
            f"{path}: RepetitionTime is {value!r}, not a number of seconds; fix the sidecar"
        )
    return float(value)


@dataclass(frozen=True)
class GivenTR:
    """A TR given for a run besides its header: its value (s), where it comes from (for
    messages: ``the config (or runs sheet)``, ``its sidecar x.json``) and how to drop it."""

    value: float
    source: str
    remove: str


def configured_tr(value: float | None) -> GivenTR | None:
    """A TR the runs sheet or the config gives (None: neither does)."""
    if value is None:
        return None
    return GivenTR(float(value), "the config (or runs sheet)", "remove the configured tr")


def run_tr(
    image: str | os.PathLike,
    header_tr: float | None,
    given: GivenTR | None = None,
    *,
    overrides_header: bool = False,
    override: str = "set the dataset's tr_overrides_header: true",
    missing: str = "give it in the runs sheet's tr column (or the dataset's tr)",
) -> float:
    """The TR (s) of one NIfTI run, from its header and a TR given elsewhere.

    ``given`` (runs sheet or config) is used, or else the JSON sidecar beside the image
    (:func:`image_sidecar`). A TR outside :data:`TR_RANGE` is refused wherever it comes from,
    except that a header's is only set aside (another source must then give the TR): SPM writes
    0 into its 4-D images, and a header whose unit was lost says 1500 for 1.5 s. A header and a
    given TR further apart than :data:`TR_AGREEMENT` stop with an error unless
    ``overrides_header`` says the given TR wins (``override`` says how to set it).
    Within that, the given TR is used. ``missing``: how to give a TR where none is usable.
    """
    if given is None:
        side = image_sidecar(image)
        value = json_tr(side)
        if value is not None:
            given = GivenTR(value, f"its sidecar {side}", f"correct RepetitionTime in {side.name}")
    lo, hi = TR_RANGE
    if given is not None and not plausible_tr(given.value):
        raise BrainshapeError(
            f"{image}: {given.source} says TR {given.value:g} s, outside the {lo:g}-{hi:g} s a "
            "repetition time can be; write the TR in seconds"
        )
    if not plausible_tr(header_tr):
        if given is not None:
            return given.value
        found = (
            "states no TR in its header"
            if not header_tr
            else f"says TR {header_tr:g} s in its header, outside the {lo:g}-{hi:g} s a "
            "repetition time can be (a TR in ms whose unit was lost, or a placeholder)"
        )
        raise BrainshapeError(f"{image} {found}; {missing}")
    if given is None:
        return float(header_tr)
    if not trs_agree(header_tr, given.value) and not overrides_header:
        raise BrainshapeError(
            f"{image}: its header says TR {header_tr:g} s but {given.source} says "
            f"{given.value:g} s; {given.remove} to use the header's, or, if the header is "
            f"wrong, {override}"
        )
    return given.value


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
