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
from collections.abc import Sequence
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


@dataclass(frozen=True)
class RunPaths:
    """The three fMRIPrep derivatives of one subject and story."""

    bold: Path
    mask: Path
    confounds: Path
    sub: str = ""
    story: str = ""

    def missing(self) -> list[Path]:
        """The files of this run that do not exist."""
        return [p for p in (self.bold, self.mask, self.confounds) if not p.is_file()]


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
) -> TargetMap:
    """Assign in-mask voxels to targets: ROI x hemisphere means, or single voxels.

    ``reference_img`` (image or path) gives the BOLD grid; ``mask`` is a boolean ``(X, Y, Z)``
    array on it. The atlas is resampled to that grid by nearest neighbour where it lies on
    another one. The hemisphere of a voxel is the sign of its world x coordinate (x < 0: "L",
    x > 0: "R"); voxels on x == 0 are left out. ``rois`` selects label names (None: all).
    Targets are ordered by the label table, L before R, then (voxels) by voxel index in C order.
    ROI x hemisphere combinations without an in-mask voxel are dropped with a warning.
    """
    if mode not in MODES:
        raise BrainshapeError(f"fmri.targets is '{mode}'; use one of {list(MODES)}")
    ref = reference_img if hasattr(reference_img, "affine") else _load(reference_img, "image")
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != tuple(ref.shape[:3]):
        raise BrainshapeError(
            f"brain mask has shape {mask.shape} but the reference image has {tuple(ref.shape[:3])}"
        )
    labels = _read_labels(labels_path)
    if rois is not None:
        known = labels["name"].tolist()
        unknown = [r for r in rois if r not in known]
        if unknown:
            raise BrainshapeError(
                f"fmri.rois names {unknown} that the atlas label table {labels_path} lacks; "
                f"available: {', '.join(known)}"
            )
        labels = labels[labels["name"].isin(set(rois))].reset_index(drop=True)
    atlas = _atlas_on_grid(atlas_path, ref.shape, ref.affine)

    ijk = np.stack(np.nonzero(mask))  # (3, n_mask) in C order, as data[mask]
    x = ref.affine[0, :3] @ ijk + ref.affine[0, 3]
    hemi = np.full(ijk.shape[1], "", dtype=object)
    hemi[x < -MIDLINE_TOL] = "L"
    hemi[x > MIDLINE_TOL] = "R"
    label = atlas[mask]

    voxel_target = np.full(ijk.shape[1], -1, dtype=np.int64)
    pieces: list[pd.DataFrame] = []
    n_rows = 0
    empty: list[str] = []
    for index, name in zip(labels["index"], labels["name"], strict=True):
        for side in ("L", "R"):
            members = np.flatnonzero((label == index) & (hemi == side))
            if members.size == 0:
                empty.append(f"{name} {side}")
                continue
            if mode == "roi_mean":
                voxel_target[members] = n_rows
                piece = pd.DataFrame(
                    {"roi": [name], "hemisphere": [side], "n_voxels": [members.size]}
                )
            else:
                voxel_target[members] = n_rows + np.arange(members.size)
                piece = pd.DataFrame(
                    {
                        "roi": name,
                        "hemisphere": side,
                        "n_voxels": 1,
                        "i": ijk[0, members],
                        "j": ijk[1, members],
                        "k": ijk[2, members],
                    }
                )
            pieces.append(piece)
            n_rows += len(piece)
    if empty:
        warnings.warn(
            f"atlas {atlas_path}: no voxel of the brain mask in {', '.join(empty)}; "
            "these ROI x hemisphere targets are left out",
            stacklevel=2,
        )
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


# --- one run ------------------------------------------------------------------------------------


def _read_confounds(path: Path, columns: Sequence[str], n_vols: int) -> np.ndarray | None:
    """Requested confound columns ``(n_vols, n_confounds)``; n/a (first-row derivatives) -> 0."""
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"])
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
        values = table[list(columns)].astype(np.float64).fillna(0.0).to_numpy()
    except (ValueError, TypeError):
        raise BrainshapeError(
            f"confounds table {path}: columns {list(columns)} must be numeric (or n/a)"
        ) from None
    if not np.isfinite(values).all():
        raise BrainshapeError(f"confounds table {path}: columns {list(columns)} contain inf")
    return values


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
) -> np.ndarray:
    """Target time courses of one run, float32 ``(n_kept_trs, n_targets)``.

    Kept volumes are ``[trim_start, n_vols - trim_end)``; the confound rows are trimmed alike.
    The voxels of ``target_map.mask`` are cleaned with ``nilearn.signal.clean`` (regression of
    the ``confounds`` columns, linear detrending, optional Butterworth high-pass at
    ``high_pass`` Hz; ``t_r`` in seconds) and, with ``standardize``, z-scored over the kept
    volumes. ``roi_mean`` targets average their voxels and are z-scored again; ``voxels``
    targets keep them. Constant voxels give zeros.
    """
    bold = _load(paths.bold, "BOLD image")
    if len(bold.shape) != 4:
        raise BrainshapeError(
            f"BOLD image {paths.bold} has shape {bold.shape}; expected a 4-D image (x, y, z, time)"
        )
    mask_img = _load(paths.mask, "brain mask")
    if not _same_grid(mask_img.shape, mask_img.affine, bold.shape, bold.affine):
        raise BrainshapeError(
            f"brain mask {paths.mask} ({_grid_text(mask_img.shape, mask_img.affine)}) is not on "
            f"the grid of BOLD image {paths.bold} ({_grid_text(bold.shape, bold.affine)}); use "
            "the mask fMRIPrep wrote for the same space"
        )
    if not _same_grid(bold.shape, bold.affine, target_map.mask.shape, target_map.affine):
        raise BrainshapeError(
            f"BOLD image {paths.bold} ({_grid_text(bold.shape, bold.affine)}) is not on the grid "
            f"of the subject's first run ({_grid_text(target_map.mask.shape, target_map.affine)});"
            " every story of a subject must be in the same space and resolution"
        )
    n_vols = int(bold.shape[3])
    trim_start, trim_end = int(trim_start), int(trim_end)
    if trim_start < 0 or trim_end < 0:
        raise BrainshapeError("fmri.trim_start and fmri.trim_end must be >= 0")
    n_kept = n_vols - trim_start - trim_end
    if n_kept < MIN_KEPT_TRS:
        raise BrainshapeError(
            f"BOLD image {paths.bold} has {n_vols} volumes; trimming {trim_start} at the start and "
            f"{trim_end} at the end leaves {n_kept}, fewer than {MIN_KEPT_TRS}; lower "
            "fmri.trim_start / fmri.trim_end"
        )
    if t_r is None or not t_r > 0:
        raise BrainshapeError(f"repetition time for {paths.bold} is {t_r}; give a TR > 0 s")
    if high_pass is not None and not 0 < high_pass < 0.5 / t_r:
        raise BrainshapeError(
            f"fmri.high_pass is {high_pass} Hz; it must lie between 0 and the Nyquist frequency "
            f"{0.5 / t_r:g} Hz of TR {t_r} s ({paths.bold})"
        )
    conf = _read_confounds(paths.confounds, confounds, n_vols)
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

    used = np.flatnonzero(target_map.voxel_target >= 0)
    columns = target_map.voxel_target[used]
    n_targets = target_map.n_targets
    if target_map.mode == "roi_mean":
        counts = np.bincount(columns, minlength=n_targets)
        weights = scipy.sparse.csr_matrix(
            (1.0 / counts[columns], (np.arange(used.size), columns)), shape=(used.size, n_targets)
        )
    out = np.zeros((n_kept, n_targets), dtype=np.float64)
    for start in range(0, used.size, VOXEL_BATCH):
        batch = slice(start, start + VOXEL_BATCH)
        cleaned = _clean(voxels[used[batch]].T.astype(np.float64), conf, detrend, high_pass, t_r)
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


def _header_tr(img) -> float:
    """Repetition time in seconds from the NIfTI header (pixdim[4]; 0 when unknown)."""
    tr = float(img.header.get_zooms()[3])
    unit = img.header.get_xyzt_units()[1]
    return tr / 1000.0 if unit == "msec" else tr / 1e6 if unit == "usec" else tr


def _run_tr(img, path: Path, t_r: float | None) -> float:
    """The TR (s) of one BOLD image: ``t_r`` when given (warning if the header disagrees)."""
    header_tr = _header_tr(img) if len(img.shape) == 4 else 0.0
    tr = t_r if t_r is not None else header_tr
    if len(img.shape) == 4 and not tr > 0:  # (not 4-D: preprocess_run says so)
        raise BrainshapeError(
            f"BOLD image {path} has no repetition time in its header (pixdim[4] is {header_tr}); "
            "set the dataset's tr in the config"
        )
    if t_r is not None and header_tr > 0 and not np.isclose(header_tr, t_r, rtol=0.01):
        warnings.warn(
            f"{path}: header TR {header_tr:g} s differs from the configured tr {t_r:g} s; "
            f"using {t_r:g} s",
            stacklevel=3,
        )
    return tr


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
) -> None:
    """Write the subject folder of one subject (``write_subject``) to ``out_dir``.

    ``t_r`` (seconds) None reads each run's TR from its BOLD header. The targets come from the
    first story's brain mask; every story must be on that grid. All files appear together at the
    end: on any error nothing is written (and files of earlier calls stay as they were).
    """
    stories = list(stories)
    if not stories:
        raise BrainshapeError(f"sub-{sub}: no stories to preprocess; list them in the config")
    dup = sorted({s for s in stories if stories.count(s) > 1})
    if dup:
        raise BrainshapeError(f"sub-{sub}: stories {dup} are listed more than once")
    if mode not in MODES:
        raise BrainshapeError(f"fmri.targets is '{mode}'; use one of {list(MODES)}")
    runs = [bids_paths(fmriprep_dir, sub, story, space) for story in stories]
    check_runs(runs, fmriprep_dir, space)

    first_mask, first_affine = _load_mask(runs[0].mask)
    reference = nib.Nifti1Image(first_mask.astype(np.uint8), first_affine)
    target_map = atlas_targets(atlas_path, labels_path, reference, first_mask, rois, mode)
    options = {
        "confounds": list(confounds),
        "detrend": detrend,
        "standardize": standardize,
        "high_pass": high_pass,
        "trim_start": trim_start,
        "trim_end": trim_end,
    }

    def preprocessed():
        # One run at a time, so that only one story's targets are in memory at once.
        for run in runs:
            img = _load(run.bold, "BOLD image")
            tr = _run_tr(img, run.bold, t_r)
            array = preprocess_run(run, target_map, t_r=tr, **options)
            log.info("sub-%s %s: %d kept TRs x %d targets", sub, run.story, *array.shape)
            info = {
                "n_trs": int(img.shape[3]),
                "trim_start": int(trim_start),
                "trim_end": int(trim_end),
                "tr": float(tr),
            }
            yield run.story, info, array

    write_subject(out_dir, target_map.targets, preprocessed())
