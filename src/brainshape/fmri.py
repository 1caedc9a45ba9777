"""fMRI targets: cleaned, trimmed, z-scored BOLD time courses per ROI x hemisphere or voxel.

Input is fMRIPrep-style derivatives (one 4-D BOLD image, brain mask and confounds table per
subject and story) and an atlas label image with its BIDS dseg table. Output, per subject, is the
subject folder ``results/<dataset>/fmri/sub-<sub>/`` (see ``docs/outputs.md``): ``<story>.npy``
float32 ``(n_kept_trs, n_targets)``, ``targets.parquet`` and ``runs.json``, written by
``brainshape.subjects.write_subject``. The folder's reader and writer live in their own module so
that the stages reading it do not depend on this one's preprocessing code (a change here reruns
the fmri jobs only).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import scipy.sparse

from brainshape.errors import BrainshapeError
from brainshape.subjects import write_subject, zscore

log = logging.getLogger("brainshape.fmri")

#: fMRIPrep derivative names, relative to the fMRIPrep derivatives folder.
BOLD = "sub-{sub}/func/sub-{sub}_task-{story}_space-{space}_desc-preproc_bold.nii.gz"
MASK = "sub-{sub}/func/sub-{sub}_task-{story}_space-{space}_desc-brain_mask.nii.gz"
CONFOUNDS = "sub-{sub}/func/sub-{sub}_task-{story}_desc-confounds_timeseries.tsv"

#: Target kinds: one mean time course per ROI x hemisphere, or every voxel of the ROIs.
MODES = ("roi_mean", "voxels")

#: Fewest volumes a run may keep after trimming; fewer cannot support detrending, confound
#: regression and a cross-validated encoding model.
MIN_KEPT_TRS = 10

#: Voxels cleaned per batch: bounds memory for whole-brain voxel targets (every cleaning step
#: works column by column, so batching changes nothing in the result).
VOXEL_BATCH = 20_000

#: Voxel centres within this distance (mm) of the x = 0 plane count as midline (no hemisphere).
MIDLINE_TOL = 1e-6

#: Two images share a grid when shapes match and affines agree to this tolerance (mm).
AFFINE_TOL = 1e-3

#: Share of an atlas's labelled voxels that must fall in the brain mask once resampled to the
#: BOLD grid (``fmri.min_atlas_coverage``); fewer means the two are not in the same space (a
#: shifted or foreign atlas). Atlases are often not cut to a brain mask, so the default only
#: catches gross misalignment; a small shift (the demo atlas moved by 12 mm keeps about 75%)
#: shows as lopsided hemispheres (:data:`LOPSIDED`), which the log reports.
MIN_ATLAS_COVERAGE = 0.4

#: An ROI whose voxels in one hemisphere outnumber the other's this many times is reported.
LOPSIDED = 4.0

#: Leading rows of a confounds table that may be n/a (fMRIPrep's derivative columns).
MAX_LEADING_NA = 2

#: Response formats of a runs sheet: images (fMRIPrep's, cleaned here; or already cleaned)
#: and matrices of preprocessed responses.
IMAGE_FORMATS = ("fmriprep", "nifti")


@dataclass(frozen=True)
class RunPaths:
    """The files of one subject's run of one story: the BOLD image (or response file), and
    the brain mask and confounds table where the run has them (None otherwise)."""

    bold: Path
    mask: Path | None
    confounds: Path | None
    sub: str = ""
    story: str = ""

    def missing(self) -> list[Path]:
        """The files of this run that do not exist."""
        files = (self.bold, self.mask, self.confounds)
        return [p for p in files if p is not None and not Path(p).is_file()]


@dataclass(frozen=True)
class TargetMap:
    """Which in-mask voxel feeds which target.

    ``mask`` is the boolean brain mask ``(X, Y, Z)`` on the BOLD grid given by ``affine``;
    ``voxel_target`` holds, for every in-mask voxel in C order (the order of ``data[mask]``),
    the column of the target it belongs to, or -1 for voxels outside the selected ROIs and the
    midline. ``targets`` is the contract table: ``target, roi, hemisphere, n_voxels`` (+ ``i, j,
    k`` for ``mode == "voxels"``), one row per column of the run arrays.
    """

    mask: np.ndarray
    affine: np.ndarray
    voxel_target: np.ndarray
    targets: pd.DataFrame
    mode: str

    @property
    def n_targets(self) -> int:
        return len(self.targets)


# --- paths --------------------------------------------------------------------------------------


def bids_paths(fmriprep_dir: str | os.PathLike, sub: str, story: str, space: str) -> RunPaths:
    """Paths of the BOLD image, brain mask and confounds table of one run (``task-<story>``).

    Only builds the paths; :func:`check_runs` says which are missing.
    """
    base = Path(fmriprep_dir)
    fmt = {"sub": sub, "story": story, "space": space}
    return RunPaths(
        bold=base / BOLD.format(**fmt),
        mask=base / MASK.format(**fmt),
        confounds=base / CONFOUNDS.format(**fmt),
        sub=sub,
        story=story,
    )


def check_runs(runs: Sequence[RunPaths], fmriprep_dir: str | os.PathLike, space: str) -> None:
    """Raise one BrainshapeError that lists every missing derivative of ``runs``."""
    missing = [(r, p) for r in runs for p in r.missing()]
    if not missing:
        return
    listed = "; ".join(f"{p} (story '{r.story}')" for r, p in missing)
    raise BrainshapeError(
        f"missing fMRIPrep derivatives: {listed}. Expected, under fmriprep_dir {fmriprep_dir} "
        f"for every subject and story: {BOLD}, {MASK} and {CONFOUNDS} with space '{space}'; "
        "check fmriprep_dir, space, subjects and stories in the config"
    )


# --- images -------------------------------------------------------------------------------------


def _load(path: str | os.PathLike, what: str) -> nib.spatialimages.SpatialImage:
    try:
        return nib.load(str(path))
    except FileNotFoundError:
        raise BrainshapeError(
            f"{what} {path} does not exist; check the path in the config"
        ) from None
    except Exception as error:  # nibabel raises many types for unreadable files
        raise BrainshapeError(
            f"cannot read {what} {path} as NIfTI ({error}); is the file complete?"
        ) from None


def _same_grid(shape_a, affine_a, shape_b, affine_b) -> bool:
    return tuple(shape_a[:3]) == tuple(shape_b[:3]) and np.allclose(
        affine_a, affine_b, atol=AFFINE_TOL
    )


def _grid_text(shape, affine) -> str:
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    return f"{tuple(int(s) for s in shape[:3])} voxels of {np.round(zooms, 3).tolist()} mm"


def _load_mask(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Boolean mask ``(X, Y, Z)`` and its affine."""
    img = _load(path, "brain mask")
    data = np.asarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise BrainshapeError(f"brain mask {path} has shape {data.shape}; expected a 3-D image")
    mask = np.nan_to_num(data.astype(np.float64)) > 0
    if not mask.any():
        raise BrainshapeError(
            f"brain mask {path} holds no voxel (no value > 0); is it the right file?"
        )
    return mask, img.affine


# --- atlas --------------------------------------------------------------------------------------


def _read_labels(labels_path: str | os.PathLike) -> pd.DataFrame:
    try:
        table = pd.read_csv(labels_path, sep="\t")
    except FileNotFoundError:
        raise BrainshapeError(
            f"atlas label table {labels_path} does not exist; give a BIDS dseg TSV with columns "
            "index and name"
        ) from None
    missing = [c for c in ("index", "name") if c not in table.columns]
    if missing:
        raise BrainshapeError(
            f"atlas label table {labels_path} lacks column(s) {missing} (has "
            f"{list(table.columns)}); a BIDS dseg TSV needs tab-separated columns index and name"
        )
    try:
        index = table["index"].astype("int64")
    except (ValueError, TypeError):
        raise BrainshapeError(
            f"atlas label table {labels_path}: column index must hold integers"
        ) from None
    labels = pd.DataFrame({"index": index, "name": table["name"].astype(str)})
    # 0 is background in a dseg image, even where the table lists it.
    labels = labels[labels["index"] != 0].reset_index(drop=True)
    dup = labels["name"][labels["name"].duplicated()].tolist()
    if dup or labels["index"].duplicated().any():
        raise BrainshapeError(
            f"atlas label table {labels_path} repeats a label (names {dup}); every index and name "
            "must appear once"
        )
    if labels.empty:
        raise BrainshapeError(f"atlas label table {labels_path} lists no label other than 0")
    return labels


def _atlas_on_grid(atlas_path, shape, affine) -> np.ndarray:
    """Integer atlas labels on the grid ``(shape, affine)``, resampled by nearest neighbour."""
    img = _load(atlas_path, "atlas image")
    if len(img.shape) == 4 and img.shape[3] == 1:
        img = nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine, img.header)
    if len(img.shape) != 3:
        raise BrainshapeError(
            f"atlas image {atlas_path} has shape {img.shape}; expected a 3-D integer label image"
        )
    if not _same_grid(img.shape, img.affine, shape, affine):
        from nilearn.image import resample_img

        img = resample_img(
            img,
            target_affine=affine,
            target_shape=tuple(shape[:3]),
            interpolation="nearest",
            force_resample=True,
            copy_header=True,
        )
    data = np.asarray(img.dataobj)
    if not np.issubdtype(data.dtype, np.integer):
        finite = np.nan_to_num(data.astype(np.float64))
        if not np.allclose(finite, np.round(finite)):
            raise BrainshapeError(
                f"atlas image {atlas_path} holds non-integer values; it must be a label (dseg) "
                "image, not a probabilistic map"
            )
        data = np.round(finite)
    return data.astype(np.int64)


def atlas_targets(
    atlas_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    reference_img: nib.spatialimages.SpatialImage | str | os.PathLike,
    mask: np.ndarray,
    rois: Sequence[str] | None = None,
    mode: str = "roi_mean",
    min_coverage: float = MIN_ATLAS_COVERAGE,
) -> TargetMap:
    """Assign in-mask voxels to targets: ROI x hemisphere means, or single voxels.

    ``reference_img`` (image or path) gives the BOLD grid; ``mask`` is a boolean ``(X, Y, Z)``
    array on it. The atlas is resampled to that grid by nearest neighbour where it lies on
    another one; if fewer than ``min_coverage`` (``fmri.min_atlas_coverage``) of its
    labelled voxels (within the BOLD's field of view) then fall in the brain mask, the two are
    not in the same space and the atlas is refused. The hemisphere of a voxel is the sign of
    its world x coordinate (x < 0: "L", x > 0: "R"); voxels on x == 0 are left out. ``rois``
    selects label names (None: all). Targets are ordered by the label table, L before R, then
    (voxels) by voxel index in C order, with their grid (``i, j, k``) and world (``x, y, z``,
    mm) coordinates. ROI x hemisphere combinations without an in-mask voxel are dropped with a
    warning, and an ROI whose hemispheres differ in size more than :data:`LOPSIDED` times is
    reported.
    """
    if mode not in MODES:
        raise BrainshapeError(f"fmri.targets is '{mode}'; use one of {list(MODES)}")
    ref = reference_img if hasattr(reference_img, "affine") else _load(reference_img, "image")
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != tuple(ref.shape[:3]):
        raise BrainshapeError(
            f"brain mask has shape {mask.shape} but the reference image has {tuple(ref.shape[:3])}"
        )
    labels = _selected_labels(labels_path, rois)
    atlas = _atlas_on_grid(atlas_path, ref.shape, ref.affine)
    _check_coverage(atlas, mask, labels, atlas_path, min_coverage)
    ijk = np.stack(np.nonzero(mask))  # (3, n_mask) in C order, as data[mask]
    x = ref.affine[0, :3] @ ijk + ref.affine[0, 3]
    hemi = np.full(ijk.shape[1], "", dtype=object)
    hemi[x < -MIDLINE_TOL] = "L"
    hemi[x > MIDLINE_TOL] = "R"
    voxel_target, pieces = _assign(atlas[mask], hemi, labels, ijk, ref.affine, mode)
    _report_sides(pieces, atlas_path)
    if not pieces:
        raise BrainshapeError(
            f"no voxel of the brain mask lies in a selected ROI of atlas {atlas_path}; are the "
            "atlas and the BOLD images in the same space?"
        )
    targets = pd.concat(pieces, ignore_index=True)
    targets.insert(0, "target", np.arange(len(targets), dtype=np.int64))
    int_cols = ["n_voxels"] + (["i", "j", "k"] if mode == "voxels" else [])
    targets[int_cols] = targets[int_cols].astype("int64")
    targets[["roi", "hemisphere"]] = targets[["roi", "hemisphere"]].astype(str)
    return TargetMap(
        mask=mask,
        affine=np.asarray(ref.affine),
        voxel_target=voxel_target,
        targets=targets,
        mode=mode,
    )


def _selected_labels(labels_path, rois: Sequence[str] | None) -> pd.DataFrame:
    labels = _read_labels(labels_path)
    if rois is None:
        return labels
    known = labels["name"].tolist()
    unknown = [r for r in rois if r not in known]
    if unknown:
        raise BrainshapeError(
            f"fmri.rois names {unknown} that the atlas label table {labels_path} lacks; "
            f"available: {', '.join(known)}"
        )
    return labels[labels["name"].isin(set(rois))].reset_index(drop=True)


def _check_coverage(atlas: np.ndarray, mask: np.ndarray, labels: pd.DataFrame, path, least) -> None:
    """Refuse an atlas whose selected labels mostly miss the brain mask: another space."""
    labelled = np.isin(atlas, labels["index"].to_numpy())
    if not labelled.any():
        return  # reported below as "no voxel of the brain mask lies in a selected ROI"
    coverage = float((labelled & mask).sum() / labelled.sum())
    if coverage < least:
        raise BrainshapeError(
            f"only {coverage:.1%} of the labelled voxels of atlas {path} fall in the brain mask "
            f"(fmri.min_atlas_coverage is {least:.0%}): the atlas and the BOLD images are not "
            "aligned (another space, or a shifted affine); give an atlas in the BOLD's space, "
            "or lower fmri.min_atlas_coverage if the mask really leaves out that much of it"
        )


def _assign(label, hemi, labels, ijk, affine, mode) -> tuple[np.ndarray, list[pd.DataFrame]]:
    """Target column of every in-mask voxel (-1: none) and the targets table's pieces."""
    voxel_target = np.full(ijk.shape[1], -1, dtype=np.int64)
    pieces: list[pd.DataFrame] = []
    n_rows = 0
    for index, name in zip(labels["index"], labels["name"], strict=True):
        for side in ("L", "R"):
            members = np.flatnonzero((label == index) & (hemi == side))
            if members.size == 0:
                pieces.append(pd.DataFrame({"roi": [name], "hemisphere": [side], "n_voxels": 0}))
                continue
            if mode == "roi_mean":
                voxel_target[members] = n_rows
                piece = pd.DataFrame(
                    {"roi": [name], "hemisphere": [side], "n_voxels": [members.size]}
                )
            else:
                voxel_target[members] = n_rows + np.arange(members.size)
                xyz = affine[:3, :3] @ ijk[:, members] + affine[:3, 3:4]
                piece = pd.DataFrame(
                    {
                        "roi": name,
                        "hemisphere": side,
                        "n_voxels": 1,
                        "i": ijk[0, members],
                        "j": ijk[1, members],
                        "k": ijk[2, members],
                        "x": xyz[0].round(3),
                        "y": xyz[1].round(3),
                        "z": xyz[2].round(3),
                    }
                )
            pieces.append(piece)
            n_rows += len(piece)
    return voxel_target, pieces


def _report_sides(pieces: list[pd.DataFrame], atlas_path) -> None:
    """Warn about empty ROI x hemispheres (and drop them) and lopsided ROIs."""
    sizes: dict[str, dict[str, int]] = {}
    for piece in pieces:
        name, side = str(piece["roi"].iloc[0]), str(piece["hemisphere"].iloc[0])
        sizes.setdefault(name, {})[side] = int(piece["n_voxels"].sum())
    empty = [f"{n} {s}" for n, sides in sizes.items() for s, k in sides.items() if k == 0]
    pieces[:] = [p for p in pieces if int(p["n_voxels"].sum()) > 0]
    if empty:
        warnings.warn(
            f"atlas {atlas_path}: no voxel of the brain mask in {', '.join(empty)}; "
            "these ROI x hemisphere targets are left out",
            stacklevel=3,
        )
    lopsided = [
        f"{n} ({sides.get('L', 0)} L, {sides.get('R', 0)} R)"
        for n, sides in sizes.items()
        if max(sides.values()) >= 10 and max(sides.values()) > LOPSIDED * min(sides.values())
    ]
    if lopsided:
        log.warning(
            "atlas %s: ROIs with very unequal hemispheres in the brain mask: %s; check that the "
            "atlas and the BOLD images are aligned",
            atlas_path,
            ", ".join(lopsided),
        )


# --- one run ------------------------------------------------------------------------------------


def _read_confounds(path: Path, columns: Sequence[str], n_vols: int) -> np.ndarray | None:
    """Requested confound columns ``(n_vols, n_confounds)``.

    ``n/a`` is allowed only in the leading rows, where fMRIPrep leaves its derivative columns
    without a value (at most :data:`MAX_LEADING_NA` rows); they take the column's first value,
    which adds no step. ``n/a`` anywhere else, or a column without values, is an error.
    """
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise BrainshapeError(f"cannot read confounds table {path} as TSV ({error})") from None
    if len(table) != n_vols:
        raise BrainshapeError(
            f"confounds table {path} has {len(table)} rows but its BOLD image has {n_vols} "
            "volumes; they must match (one row per volume, before trimming)"
        )
    if not columns:
        return None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise BrainshapeError(
            f"confound column(s) {missing} of fmri.confounds are not in {path}; available: "
            f"{', '.join(map(str, table.columns))}"
        )
    try:
        values = table[list(columns)].astype(np.float64).to_numpy()
    except (ValueError, TypeError):
        raise BrainshapeError(
            f"confounds table {path}: columns {list(columns)} must be numeric (or n/a)"
        ) from None
    for j, column in enumerate(columns):
        values[:, j] = _fill_leading_na(values[:, j], path, column)
    if not np.isfinite(values).all():
        raise BrainshapeError(f"confounds table {path}: columns {list(columns)} contain inf")
    return values


def _fill_leading_na(column: np.ndarray, path: Path, name: str) -> np.ndarray:
    missing = np.isnan(column)
    if not missing.any():
        return column
    if missing.all():
        raise BrainshapeError(
            f"confounds table {path}: column {name} is n/a in every row; drop it from "
            "fmri.confounds or fix the table"
        )
    first = int(np.argmin(missing))
    later = np.flatnonzero(missing[first:])
    if later.size or first > MAX_LEADING_NA:
        row = first + int(later[0]) if later.size else MAX_LEADING_NA
        raise BrainshapeError(
            f"confounds table {path}: column {name} is n/a in row {row + 1} (after a value, or "
            f"beyond the first {MAX_LEADING_NA} rows where fMRIPrep leaves derivatives empty); a "
            "gap there would be filled with a made-up value: fix the table or drop the column "
            "from fmri.confounds"
        )
    out = column.copy()
    out[:first] = column[first]
    return out


def verify_gzip(path: str | os.PathLike) -> None:
    """Read a ``.gz`` file to its end, so that its CRC and length are checked: a corrupt byte in
    the middle of a compressed image otherwise decodes to garbage without an error."""
    import gzip
    import zlib

    path = Path(path)
    if path.suffix != ".gz":
        return
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass
    except (OSError, EOFError, zlib.error) as error:
        raise BrainshapeError(
            f"{path} is corrupt or truncated (its gzip check fails: "
            f"{_gzip_problem(path, error)}); fetch or regenerate the file"
        ) from error


def _gzip_problem(path: Path, error: BaseException) -> str:
    """What is wrong with a ``.gz`` file, in words that do not depend on its bytes: Python's own
    messages quote checksums and header bytes, and which of them a damaged stream gives
    depends on the bytes damaged, which differ from one copy of the data to the next."""
    with open(path, "rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            return "the file does not start with a gzip header"
    if isinstance(error, EOFError):
        return "the file ends before its end-of-stream marker"
    return "its compressed data are damaged"


def _clean(signals, confounds, detrend, high_pass, t_r) -> np.ndarray:
    from nilearn.signal import clean

    with warnings.catch_warnings():
        # A note for nilearn developers about a future default for confound scaling; the
        # scaling of confounds does not change the regression, so the result is the same.
        warnings.filterwarnings("ignore", message="From release 0.14.0, confounds")
        return clean(
            signals,
            confounds=confounds,
            detrend=detrend,
            # z-scored by the caller, so that std is the population std in every nilearn version
            standardize=None,
            high_pass=None if high_pass is None else float(high_pass),
            t_r=float(t_r),
            filter="butterworth",
            # Filter all columns in one call (nilearn's default loops over them, far slower).
            butterworth__copy=True,
            ensure_finite=False,
        )


def preprocess_run(
    paths: RunPaths,
    target_map: TargetMap,
    *,
    confounds: Sequence[str],
    detrend: bool = True,
    standardize: bool = True,
    high_pass: float | None = None,
    trim_start: int = 0,
    trim_end: int = 0,
    t_r: float,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """Target time courses of one run, float32 ``(n_kept_trs, n_targets)``.

    Kept volumes are ``[trim_start, n_vols - trim_end)``; the confound rows are trimmed alike.
    The voxels of ``target_map.mask`` are cleaned with ``nilearn.signal.clean`` (regression of
    the ``confounds`` columns of ``paths.confounds``, none without a table, linear detrending,
    optional Butterworth high-pass at ``high_pass`` Hz; ``t_r`` in seconds) and, with
    ``standardize``, z-scored over the kept volumes. ``roi_mean`` targets average their voxels
    and are z-scored again; ``voxels`` targets keep them. A voxel constant over the kept volumes
    carries no signal: it is left out of its ROI's mean (``counts``, if given, is raised to the
    number left out of each target), and as a voxel target it stays constant (the subject
    folder's writer drops it). ``paths.mask``, when given, must be on the BOLD's grid.
    """
    bold = _load(paths.bold, "BOLD image")
    verify_gzip(paths.bold)
    n_vols = _check_image(paths, bold, target_map, trim_start, trim_end, t_r, high_pass)
    conf = None
    if paths.confounds is not None:
        conf = _read_confounds(Path(paths.confounds), confounds, n_vols)
    if conf is not None:
        conf = conf[trim_start : n_vols - trim_end]
    # Slicing the data proxy reads only the kept volumes.
    data = np.asarray(bold.dataobj[..., trim_start : n_vols - trim_end], dtype=np.float32)
    voxels = data[target_map.mask]  # (n_mask, n_kept)
    del data
    bad = ~np.isfinite(voxels).all(axis=1)
    if bad.any():
        raise BrainshapeError(
            f"{int(bad.sum())} in-mask voxels of {paths.bold} contain NaN or inf in the kept "
            f"volumes; fix: remove them from the brain mask {paths.mask} or rerun the "
            "preprocessing of this run"
        )
    cleaning = (conf, detrend, high_pass, t_r, standardize)
    return to_targets(voxels, target_map, cleaning, counts)


def _check_image(paths, bold, target_map, trim_start, trim_end, t_r, high_pass) -> int:
    """The volumes of a BOLD image once its shape, grid, trimming, TR and filter are checked."""
    if len(bold.shape) != 4:
        raise BrainshapeError(
            f"BOLD image {paths.bold} has shape {bold.shape}; expected a 4-D image (x, y, z, time)"
        )
    if paths.mask is not None:
        mask_img = _load(paths.mask, "brain mask")
        if not _same_grid(mask_img.shape, mask_img.affine, bold.shape, bold.affine):
            raise BrainshapeError(
                f"brain mask {paths.mask} ({_grid_text(mask_img.shape, mask_img.affine)}) is not "
                f"on the grid of BOLD image {paths.bold} ({_grid_text(bold.shape, bold.affine)}); "
                "use the mask fMRIPrep wrote for the same space"
            )
    if not _same_grid(bold.shape, bold.affine, target_map.mask.shape, target_map.affine):
        raise BrainshapeError(
            f"BOLD image {paths.bold} ({_grid_text(bold.shape, bold.affine)}) is not on the grid "
            f"of the subject's first run ({_grid_text(target_map.mask.shape, target_map.affine)});"
            " every story of a subject must be in the same space and resolution"
        )
    n_vols = int(bold.shape[3])
    _check_trim(paths.bold, n_vols, trim_start, trim_end)
    _check_filter(paths.bold, t_r, high_pass)
    return n_vols


def _check_trim(path, n_vols: int, trim_start: int, trim_end: int) -> None:
    if trim_start < 0 or trim_end < 0:
        raise BrainshapeError("fmri.trim_start and fmri.trim_end must be >= 0")
    n_kept = n_vols - trim_start - trim_end
    if n_kept < MIN_KEPT_TRS:
        raise BrainshapeError(
            f"{path} has {n_vols} volumes; trimming {trim_start} at the start and {trim_end} at "
            f"the end leaves {n_kept}, fewer than {MIN_KEPT_TRS}; lower fmri.trim_start / "
            "fmri.trim_end"
        )


def _check_filter(path, t_r, high_pass) -> None:
    if t_r is None or not t_r > 0:
        raise BrainshapeError(f"repetition time for {path} is {t_r}; give a TR > 0 s")
    if high_pass is not None and not 0 < high_pass < 0.5 / t_r:
        raise BrainshapeError(
            f"fmri.high_pass is {high_pass} Hz; it must lie between 0 and the Nyquist frequency "
            f"{0.5 / t_r:g} Hz of TR {t_r} s ({path})"
        )


def to_targets(
    voxels: np.ndarray,
    target_map: TargetMap,
    cleaning: tuple,
    counts: np.ndarray | None = None,
    nonfinite: np.ndarray | None = None,
) -> np.ndarray:
    """Cleaned target time courses float32 ``(n_kept, n_targets)`` from one run's voxels
    ``(n_voxels, n_kept)`` (those of ``target_map.voxel_target``'s order). ``cleaning`` is
    ``(confounds or None, detrend, high_pass, tr, standardize)``. Voxels constant over the run
    stay out of ROI means; ``counts`` (per target) is raised to how many did. Voxels with a NaN
    or inf in the run (response matrices published with them) are left out the same way, as
    zeros (constant), and ``nonfinite`` (per target) is raised to how many they were."""
    conf, detrend, high_pass, t_r, standardize = cleaning
    used = np.flatnonzero(target_map.voxel_target >= 0)
    finite = np.isfinite(voxels[used]).all(axis=1)
    flat = (voxels[used].max(axis=1) == voxels[used].min(axis=1)) & finite
    columns = target_map.voxel_target[used]
    n_targets = target_map.n_targets
    if counts is not None:
        np.maximum(counts, np.bincount(columns[flat], minlength=n_targets), out=counts)
    if nonfinite is not None:
        np.maximum(nonfinite, np.bincount(columns[~finite], minlength=n_targets), out=nonfinite)
    if target_map.mode == "roi_mean":
        keep = ~flat & finite
        per_target = np.bincount(columns[keep], minlength=n_targets)
        share = np.where(keep, 1.0 / np.maximum(per_target[columns], 1), 0.0)
        weights = scipy.sparse.csr_matrix(
            (share, (np.arange(used.size), columns)), shape=(used.size, n_targets)
        )
    out = np.zeros((voxels.shape[1], n_targets), dtype=np.float64)
    for start in range(0, used.size, VOXEL_BATCH):
        batch = slice(start, start + VOXEL_BATCH)
        values = voxels[used[batch]].T.astype(np.float64)
        values[:, ~finite[batch]] = 0.0
        cleaned = _clean(values, conf, detrend, high_pass, t_r)
        if standardize:
            cleaned = zscore(cleaned)
        if target_map.mode == "roi_mean":
            out += np.asarray(weights[batch].T @ cleaned.T).T
        else:
            out[:, columns[batch]] = cleaned
    if standardize and target_map.mode == "roi_mean":
        out = zscore(out)
    return out.astype(np.float32)


# --- one subject --------------------------------------------------------------------------------


def _run_tr(img, path: Path, given: float | None, overrides_header: bool = False) -> float:
    """The TR (s) of one BOLD image: :func:`brainshape.responses.run_tr` on its header and the
    TR the runs sheet or config gives (else the sidecar beside the image)."""
    from brainshape import responses

    if len(img.shape) != 4:  # preprocess_run says what is wrong with the image
        return float(given) if given is not None else 0.0
    return responses.run_tr(
        path,
        responses.nifti_tr(img),
        responses.configured_tr(given),
        overrides_header=overrides_header,
    )


@dataclass(frozen=True)
class Cleaning:
    """How every run of a subject is cleaned (the ``fmri`` config section); ``tr``: the
    dataset's configured TR (None: each file's own), ``tr_overrides_header``: it wins over a
    header that disagrees."""

    confounds: tuple[str, ...] = ()
    detrend: bool = True
    standardize: bool = True
    high_pass: float | None = None
    trim_start: int = 0
    trim_end: int = 0
    tr: float | None = None
    tr_overrides_header: bool = False


def preprocess_subject(
    fmriprep_dir: str | os.PathLike,
    sub: str,
    stories: Sequence[str],
    space: str,
    atlas_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    rois: Sequence[str] | None,
    mode: str,
    confounds: Sequence[str],
    detrend: bool,
    standardize: bool,
    high_pass: float | None,
    trim_start: int,
    trim_end: int,
    t_r: float | None = None,
    tr_overrides_header: bool = False,
) -> None:
    """Write the subject folder of one subject of a regular BIDS + fMRIPrep dataset (every
    story's derivatives under ``fmriprep_dir``): :func:`preprocess_runs` on its runs."""
    stories = list(stories)
    if not stories:
        raise BrainshapeError(f"sub-{sub}: no stories to preprocess; list them in the config")
    dup = sorted({s for s in stories if stories.count(s) > 1})
    if dup:
        raise BrainshapeError(f"sub-{sub}: stories {dup} are listed more than once")
    runs = [bids_paths(fmriprep_dir, sub, story, space) for story in stories]
    check_runs(runs, fmriprep_dir, space)
    rows = [
        {"story": r.story, "response": str(r.bold), "format": "fmriprep", "mask": str(r.mask),
         "confounds": str(r.confounds)}
        for r in runs
    ]  # fmt: skip
    cleaning = Cleaning(
        tuple(confounds), detrend, standardize, high_pass, trim_start, trim_end, t_r,
        tr_overrides_header,
    )  # fmt: skip
    preprocess_runs(sub, rows, out_dir, atlas=(atlas_path, labels_path), rois=rois, mode=mode,
                    cleaning=cleaning)  # fmt: skip


def preprocess_runs(
    sub: str,
    rows: Sequence[Mapping],
    out_dir: str | os.PathLike,
    *,
    atlas: tuple[str | os.PathLike, str | os.PathLike] | None,
    rois: Sequence[str] | None,
    mode: str,
    cleaning: Cleaning,
    min_coverage: float = MIN_ATLAS_COVERAGE,
) -> None:
    """Write the subject folder (``subjects.write_subject``) of one subject from its runs.

    ``rows`` are the subject's rows of the runs sheet (``brainshape.sheet``; paths resolved):
    ``story``, ``run``, ``response``, ``format`` (``fmriprep``: cleaned here with the
    ``confounds`` table; ``nifti``: already cleaned, no confound regression; ``hdf5``: a
    matrix of responses), ``mask``, ``confounds``, ``key``, ``labels``, ``repeats_key``,
    ``tr``, ``offset``, ``removed_end``, ``split``. Image runs take their targets from
    ``atlas`` (image, labels TSV) on the first run's mask; matrix runs from their ``labels``
    table (columns column, roi, hemisphere), or are one target set (roi ``all``, hemisphere
    ``both``). ``min_coverage``: see :func:`atlas_targets`. Several runs of one story (repeats)
    are averaged. Targets constant in some
    story are left out (``drop_constant``); ``n_constant`` counts the voxels of each target
    left out of its mean because they were constant, ``n_nonfinite`` those left out because a
    matrix run held NaN or inf in them. All files appear together at the end.
    """
    if mode not in MODES:
        raise BrainshapeError(f"fmri.targets is '{mode}'; use one of {list(MODES)}")
    rows = [dict(r) for r in rows if not r.get("exclude")]
    if not rows:
        raise BrainshapeError(f"sub-{sub}: no run to preprocess (every row is excluded)")
    formats = {r["format"] in IMAGE_FORMATS for r in rows}
    if len(formats) > 1:
        raise BrainshapeError(
            f"sub-{sub}: the runs sheet mixes image and hdf5 responses for this subject; one "
            "subject's targets must come from one kind of response"
        )
    if formats == {True}:
        if atlas is None:
            raise BrainshapeError(f"sub-{sub}: image responses need datasets.<name>.atlas")
        target_map = _image_target_map(rows[0], atlas, rois, mode, min_coverage)
    else:
        target_map = matrix_target_map(rows[0], rois, mode)
    # Per target: voxels left out because they were constant (row 0) or not finite (row 1).
    counts = np.zeros((2, target_map.n_targets), dtype=np.int64)
    ceilings = _repeat_ceilings(rows, target_map, cleaning)
    stories = list(dict.fromkeys(r["story"] for r in rows))

    def preprocessed():
        # One story at a time, so that only one story's targets are in memory at once.
        for story in stories:
            runs = sorted((r for r in rows if r["story"] == story), key=lambda r: r.get("run", 1))
            yield (story, *_story(sub, story, runs, target_map, cleaning, counts))

    def targets() -> pd.DataFrame:
        table = target_map.targets.copy()
        table["n_constant"] = counts[0]
        table["n_nonfinite"] = counts[1]
        if ceilings is not None:
            table["repeat_ceiling"] = ceilings
        return table

    write_subject(out_dir, targets, preprocessed(), drop_constant=True)


def _story(sub, story, runs, target_map, cleaning, counts) -> tuple[dict, np.ndarray]:
    """(runs.json entry, target array) of one story: its runs, averaged where repeated."""
    arrays, infos = [], []
    for row in runs:
        array, info = _preprocess_row(row, target_map, cleaning, counts)
        arrays.append(array)
        infos.append(info)
        log.info("sub-%s %s (run %s): %d kept TRs x %d targets", sub, story, row.get("run", 1),
                 *array.shape)  # fmt: skip
    first = infos[0]
    for row, info in zip(runs[1:], infos[1:], strict=True):
        if info != first:
            raise BrainshapeError(
                f"sub-{sub}, story {story}: repeated runs differ in length or clock "
                f"({row['response']}: {info}; {runs[0]['response']}: {first}); repeats are "
                "averaged, so they must match: fix the runs sheet or exclude a run"
            )
    return first, np.mean(arrays, axis=0) if len(arrays) > 1 else arrays[0]


def _preprocess_row(row, target_map, cleaning: Cleaning, counts) -> tuple[np.ndarray, dict]:
    """One run's targets and its runs.json entry."""
    clock = {
        "offset": float(row.get("offset") or 0.0),
        "removed_end": int(row.get("removed_end") or 0),
        "split": row.get("split") or "train",
    }
    trim = {"trim_start": int(cleaning.trim_start), "trim_end": int(cleaning.trim_end)}
    if row["format"] in IMAGE_FORMATS:
        img = _load(row["response"], "BOLD image")
        given = row.get("tr") if row.get("tr") is not None else cleaning.tr
        tr = _run_tr(img, Path(row["response"]), given, cleaning.tr_overrides_header)
        paths = RunPaths(
            bold=Path(row["response"]),
            mask=Path(row["mask"]) if row.get("mask") else None,
            confounds=Path(row["confounds"]) if row["format"] == "fmriprep" and row.get(
                "confounds") else None,
        )  # fmt: skip
        confounds = list(cleaning.confounds) if paths.confounds is not None else []
        array = preprocess_run(
            paths, target_map, confounds=confounds, detrend=cleaning.detrend,
            standardize=cleaning.standardize, high_pass=cleaning.high_pass, t_r=tr,
            counts=counts[0], **trim,
        )  # fmt: skip
        n_trs = int(img.shape[3])
    else:
        tr = float(row["tr"])
        array, n_trs = _matrix_run(row, target_map, cleaning, counts)
    return array, {"n_trs": n_trs, **trim, "tr": float(tr), **clock}


# --- image targets ---------------------------------------------------------------------------


def _image_target_map(row: Mapping, atlas, rois, mode, min_coverage) -> TargetMap:
    """Targets of an image subject: the atlas on its first run's mask (the run's own mask, or,
    for cleaned images without one, the voxels finite and not constant in that run)."""
    if row.get("mask"):
        mask, affine = _load_mask(row["mask"])
    else:
        img = _load(row["response"], "BOLD image")
        data = np.asarray(img.dataobj, dtype=np.float32)
        if data.ndim != 4:
            raise BrainshapeError(
                f"BOLD image {row['response']} has shape {data.shape}; expected a 4-D image"
            )
        finite = np.isfinite(data).all(axis=3)
        mask = finite & (np.nanmax(data, axis=3) > np.nanmin(data, axis=3))
        affine = img.affine
        if not mask.any():
            raise BrainshapeError(f"BOLD image {row['response']} has no voxel that varies")
    reference = nib.Nifti1Image(mask.astype(np.uint8), affine)
    return atlas_targets(atlas[0], atlas[1], reference, mask, rois, mode, min_coverage)


# --- matrix targets (hdf5) -------------------------------------------------------------------


def matrix_target_map(row: Mapping, rois: Sequence[str] | None, mode: str) -> TargetMap:
    """Targets of a subject whose responses are matrices (rows x columns): each column's ROI
    from the run's ``labels`` table (columns ``column``, ``roi``, ``hemisphere``; columns it
    does not list are not used), or every column one target set (roi ``all``, hemisphere
    ``both``). ``voxel_target`` maps each column of the matrix to its target (-1: unused)."""
    from brainshape.responses import shape

    n_columns = shape(row["response"], "hdf5", row.get("key") or "data").columns
    labels = _column_labels(row, n_columns)
    if rois is not None:
        labels = labels[labels["roi"].isin(list(rois))]
    if labels.empty:
        raise BrainshapeError(
            f"no column of {row['response']} is in fmri.rois {list(rois or [])}; check the ROI "
            f"names of {row.get('labels')}"
        )
    voxel_target = np.full(n_columns, -1, dtype=np.int64)
    if mode == "roi_mean":
        keys = labels[["roi", "hemisphere"]].drop_duplicates().reset_index(drop=True)
        index = {tuple(k): i for i, k in enumerate(keys.itertuples(index=False))}
        targets = keys.assign(n_voxels=0)
        for column, roi, hemi in labels[["column", "roi", "hemisphere"]].itertuples(index=False):
            voxel_target[column] = index[(roi, hemi)]
        targets["n_voxels"] = np.bincount(voxel_target[voxel_target >= 0], minlength=len(keys))
    else:
        voxel_target[labels["column"].to_numpy()] = np.arange(len(labels))
        targets = labels[["roi", "hemisphere", "column"]].reset_index(drop=True)
        targets.insert(2, "n_voxels", 1)
    targets.insert(0, "target", np.arange(len(targets), dtype=np.int64))
    targets = targets.astype({"roi": str, "hemisphere": str, "n_voxels": "int64"})
    return TargetMap(mask=None, affine=None, voxel_target=voxel_target, targets=targets, mode=mode)


def _column_labels(row: Mapping, n_columns: int) -> pd.DataFrame:
    if not row.get("labels"):
        return pd.DataFrame({"column": np.arange(n_columns), "roi": "all", "hemisphere": "both"})
    path = row["labels"]
    try:
        table = pd.read_csv(path, sep="\t")
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise BrainshapeError(f"cannot read labels table {path} as TSV ({error})") from None
    missing = [c for c in ("column", "roi", "hemisphere") if c not in table.columns]
    if missing:
        raise BrainshapeError(
            f"labels table {path} lacks column(s) {missing}; it needs column (0-based column of "
            "the response matrix), roi and hemisphere"
        )
    column = pd.to_numeric(table["column"], errors="coerce")
    if column.isna().any() or (column < 0).any() or (column >= n_columns).any():
        raise BrainshapeError(
            f"labels table {path}: column must hold 0-based columns of {row['response']} "
            f"(0 to {n_columns - 1})"
        )
    if column.duplicated().any():
        raise BrainshapeError(f"labels table {path} lists a column more than once")
    return pd.DataFrame(
        {"column": column.astype(np.int64), "roi": table["roi"].astype(str),
         "hemisphere": table["hemisphere"].astype(str)}
    )  # fmt: skip


def _matrix_run(row, target_map: TargetMap, cleaning: Cleaning, counts) -> tuple[np.ndarray, int]:
    """Targets of one matrix run (already preprocessed: no confound regression) and its rows."""
    from brainshape.responses import read_hdf5

    data = read_hdf5(row["response"], row.get("key") or "data")
    if data.ndim != 2 or data.shape[1] != target_map.voxel_target.size:
        raise BrainshapeError(
            f"{row['response']}: dataset '{row.get('key') or 'data'}' has shape {data.shape} but "
            f"the subject's first run has {target_map.voxel_target.size} columns; every run of a "
            "subject must have the same columns"
        )
    n_rows = data.shape[0]
    _check_trim(row["response"], n_rows, cleaning.trim_start, cleaning.trim_end)
    _check_filter(row["response"], float(row["tr"]), cleaning.high_pass)
    kept = data[cleaning.trim_start : n_rows - cleaning.trim_end].T  # (columns, kept rows)
    steps = (None, cleaning.detrend, cleaning.high_pass, float(row["tr"]), cleaning.standardize)
    # Columns with NaN or inf are left out and counted (n_nonfinite), not zero-filled into the
    # fit as the reference code's nan_to_num does: a zero there is a made-up response.
    return to_targets(kept, target_map, steps, counts[0], counts[1]), n_rows


def _repeat_ceilings(rows, target_map: TargetMap, cleaning: Cleaning) -> np.ndarray | None:
    """Per target, the noise ceiling from the individual repeats of the runs that have them
    (``repeats_key``; averaged over such runs), or None when no run has repeats."""
    from brainshape.ceilings import repeat_ceiling
    from brainshape.responses import read_hdf5

    found = []
    for row in rows:
        if row["format"] != "hdf5" or not row.get("repeats_key"):
            continue
        repeats = read_hdf5(row["response"], row["repeats_key"])
        if repeats.ndim != 3 or repeats.shape[2] != target_map.voxel_target.size:
            raise BrainshapeError(
                f"{row['response']}: dataset '{row['repeats_key']}' has shape {repeats.shape}; "
                "expected repeats x rows x the columns of the responses"
            )
        n = repeats.shape[1]
        steps = (None, cleaning.detrend, cleaning.high_pass, float(row["tr"]), True)
        series = np.stack([
            to_targets(r[cleaning.trim_start : n - cleaning.trim_end].T, target_map, steps)
            for r in repeats
        ])  # fmt: skip
        found.append(repeat_ceiling(series))
    return np.nanmean(np.stack(found), axis=0) if found else None
