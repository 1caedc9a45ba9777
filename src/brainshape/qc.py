"""Quality control of the data itself: wrong data that passes every check on names and headers.

A run that belongs to another story, the same file given for two subjects (a copy, or a link
made by hand), a subject who moved through most of a run, a coil that dropped out for a few
volumes: each passes the checks made while planning, and each would still give numbers. One job
per dataset (rule ``qc``) looks at the data instead. It reads the subject folders the fmri jobs
wrote and, per run of the runs sheet, the response file, brain mask and confounds table, and
returns one row per run (:func:`qc_table`, written as ``results/<dataset>/qc.parquet``) with its
measures, the checks it fails (``failed``) and why, in words (``reason``). The checks
(:data:`CHECKS`):

- ``at_chance``: the run does not follow the other subjects who heard the story: its
  correlation with their mean (``isc``) is not above a null of circular time shifts
  (``isc_z`` below ``chance_z``);
- ``mislabeled``: the run does not follow its own story's listeners (as ``at_chance``) but
  another story's (``other_z`` above ``mislabel_z``, and ``other_isc`` above ``isc``; the other
  story is compared at its best lag within ``max_lag_s``, against shifted copies maximised the
  same way); reported instead of ``at_chance``;
- ``duplicate``: the run repeats another run: the same file (a link or the same path), a
  byte-identical copy, or responses whose deviation from the story's group mean matches another
  subject's (``duplicate_r`` or more; runs of two stories of one subject: their raw
  correlation); both runs are flagged;
- ``motion``: framewise displacement (from the confounds table's ``framewise_displacement``, or
  computed from its six motion columns) with a mean above ``max_mean_fd`` mm, or more than
  ``max_fd_fraction`` of its volumes above ``fd_threshold`` mm;
- ``global_signal``: volumes whose global signal (the mean over the brain mask, or over the
  columns of a response matrix) leaves its running median by more than ``global_z`` robust
  standard deviations (a dropout, a spike);
- ``tsnr``: median temporal SNR in the brain mask below ``min_tsnr`` (not checked when null).

Responses are compared as ROI x hemisphere means (voxel targets are averaged per ROI and
hemisphere): cheap at any size, and comparable across subjects whose masks differ. What a
format does not carry is "not available", with the reason, never an error: HDF5 responses have
no confounds table (no motion) and no baseline (no tSNR); a story nobody else heard has no
inter-subject comparison.

False alarms on clean runs (a run with the story's response, no copy, little motion): the
z-scores against shifted copies have heavier tails than a normal variable (a few hundred
overlapping shifts hold few independent ones), so the rates are measured, not read off a
normal table. ``at_chance`` depends on how strongly the subjects share a response;
``mislabeled`` can only fire on a run at chance; ``duplicate`` needs near-identity, while
independent subjects' deviations from the others' mean correlate near ``1 / (k + 1)`` with
``k`` others; ``global_signal`` at 5.5 robust SDs fires on at most about 4e-4 of 240-volume
runs of Gaussian AR(1) noise (at 5: about 1e-3); ``motion`` and ``tsnr`` are thresholds on
measured quantities. On simulated clean datasets with a weak shared response (pairwise
correlation 0.2 in two ROI targets of ten, 4 to 6 subjects and 4 stories of 180 to 260
volumes), 1 run in 5,016 was flagged (``at_chance``); ``tests/test_qc.py`` keeps the rate at
most 1 in 1,000. Where subjects share less than that (pairwise 0.1), a single run's response
is too weak to see and ``at_chance`` flags a fifth of the runs: read it as the dataset's
signal, not the run's fault, when most runs of a story carry it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainshape.errors import BrainshapeError
from brainshape.exclusions import Exclusions, excluded_runs
from brainshape.subjects import SubjectData, subject_label, zscore

log = logging.getLogger("brainshape.qc")

#: The checks, in the order ``failed`` and ``reason`` list them.
CHECKS = ("mislabeled", "duplicate", "at_chance", "motion", "global_signal", "tsnr")

#: Columns of the QC table, in order (docs/outputs.md).
COLUMNS = (
    "subject", "story", "run", "format", "failed", "reason", "isc", "isc_z", "n_others",
    "other_story", "other_isc", "other_z", "other_lag_s", "duplicate_of", "duplicate_r",
    "fd_mean", "fd_max", "fd_fraction", "tsnr", "global_outliers", "global_max_z",
    "n_volumes", "not_available", "sheet_exclusion",
)  # fmt: skip

#: Fewest volumes two runs must share to be compared (beside the null's shifts).
MIN_SHARED = 20
#: Fewest shifted copies a null needs for its mean and spread.
MIN_NULL = 20
#: The six motion columns of an fMRIPrep confounds table and the sphere radius (mm) that turns
#: rotations (radians) into displacement (Power et al. 2012).
MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
HEAD_RADIUS_MM = 50.0
#: Median-filter window of the global signal's running median, in seconds (at least 5 volumes).
GLOBAL_WINDOW_S = 30.0
#: Bytes hashed at a time when two response files of equal size are compared.
_CHUNK = 1 << 22


@dataclass(frozen=True)
class Thresholds:
    """The ``fmri.qc`` section of the config, without ``exclude`` (which acts later)."""

    chance_z: float
    mislabel_z: float
    duplicate_r: float
    fd_threshold: float
    max_mean_fd: float
    max_fd_fraction: float
    global_z: float
    min_tsnr: float | None
    min_shift_s: float
    max_lag_s: float

    @classmethod
    def from_config(cls, section: Mapping) -> Thresholds:
        return cls(**{k: section[k] for k in cls.__dataclass_fields__})


# --- responses as ROI x hemisphere means --------------------------------------------------------


def roi_means(data: SubjectData) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(keys ``roi|hemisphere`` in order of first appearance, story -> float64 (kept volumes,
    keys) z-scored): the subject's targets averaged per ROI and hemisphere."""
    labels = data.targets["roi"].astype(str) + "|" + data.targets["hemisphere"].astype(str)
    codes, keys = pd.factorize(labels)
    member = np.zeros((len(codes), len(keys)))
    member[np.arange(len(codes)), codes] = 1.0
    member /= member.sum(axis=0)
    means = {s: zscore(np.asarray(a, dtype=np.float64) @ member) for s, a in data.data.items()}
    return np.asarray(keys, dtype=str), means


@dataclass
class _Story:
    """One story's holders (same TR) on their shared volumes and ROIs: ``X`` (k, T, R)
    z-scored, ``C`` (k, k, R) pairwise correlations, ``subjects`` in the order of ``X``."""

    story: str
    tr: float
    subjects: list[str]
    keys: np.ndarray
    X: np.ndarray
    C: np.ndarray

    def others(self, sub: str | None) -> tuple[np.ndarray, np.ndarray, int]:
        """(mean (T, R) of the holders other than ``sub``, weights (R,), how many others): the
        weights are the others' mean pairwise correlation per ROI (at least 0; equal weights
        where fewer than two others, or where they agree nowhere)."""
        keep = [i for i, s in enumerate(self.subjects) if s != sub]
        k = len(keep)
        mean = self.X[keep].mean(axis=0)
        weights = np.ones(len(self.keys))
        if k >= 2:
            pairs = self.C[np.ix_(keep, keep)].sum(axis=(0, 1)) - k  # diagonal: 1 each
            weights = np.clip(pairs / (k * (k - 1)), 0.0, None)
            if not weights.any():
                weights = np.ones(len(self.keys))
        return mean, weights, k


def _kept_start(run: Mapping) -> float:
    """Word-clock time (s) of the centre of a run's first kept volume."""
    return float(run.get("offset", 0.0)) + (run["trim_start"] + 0.5) * float(run["tr"])


def _stories(
    means: Mapping[str, tuple[np.ndarray, dict]], subjects: Mapping[str, SubjectData]
) -> dict[tuple[str, float], _Story]:
    """Every story's holders with the same TR, aligned on the word clock over the volumes and
    ROIs all of them have; groups of fewer than two, or sharing fewer than MIN_SHARED volumes,
    are left out."""
    found: dict[tuple[str, float], list[str]] = {}
    for sub, data in subjects.items():
        for story, run in data.runs.items():
            found.setdefault((story, round(float(run["tr"]), 3)), []).append(sub)
    out = {}
    for (story, tr), subs in found.items():
        if len(subs) < 2:
            continue
        starts = {s: _kept_start(subjects[s].runs[story]) for s in subs}
        origin = min(starts.values())
        first = {s: int(round((starts[s] - origin) / tr)) for s in subs}
        lo = max(first.values())
        hi = min(first[s] + len(means[s][1][story]) for s in subs)
        keys = [k for k in means[subs[0]][0] if all(k in means[s][0] for s in subs)]
        if hi - lo < MIN_SHARED or not keys:
            continue
        X = np.stack([_columns(means[s], story, keys)[lo - first[s] : hi - first[s]] for s in subs])
        X = np.stack([zscore(x) for x in X])
        C = np.einsum("atr,btr->abr", X, X) / X.shape[1]
        out[(story, tr)] = _Story(story, tr, list(subs), np.asarray(keys), X, C)
    return out


def _columns(mean: tuple[np.ndarray, dict], story: str, keys: Sequence[str]) -> np.ndarray:
    index = {k: i for i, k in enumerate(mean[0])}
    return mean[1][story][:, [index[k] for k in keys]]


# --- correlation with the group, against circular time shifts -----------------------------------


def shifted_correlations(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean over columns of the correlation of ``x`` with ``y`` moved ``s`` rows
    earlier, circularly, for every ``s``: ``(T,)`` from ``x, y`` (T, R) z-scored per column."""
    fx = np.fft.rfft(x, axis=0)
    fy = np.fft.rfft(y, axis=0)
    n = x.shape[0]
    per_column = np.fft.irfft(np.conj(fx) * fy, n=n, axis=0) / n
    return per_column @ weights / weights.sum()


def shift_z(curve: np.ndarray, min_shift: int, max_lag: int = 0) -> tuple[float, float, int]:
    """(value, z, lag) of ``curve`` (from :func:`shifted_correlations`) at lag 0, or at its
    best lag within ``max_lag`` rows, against the shifts at least ``min_shift`` rows from 0
    (maximised over the same window); z is NaN when fewer than MIN_NULL shifts remain."""
    n = curve.size
    if max_lag:
        from scipy.ndimage import maximum_filter1d

        window = maximum_filter1d(curve, size=2 * max_lag + 1, mode="wrap")
    else:
        window = curve
    lags = np.r_[0 : max_lag + 1, -max_lag:0] if max_lag else np.array([0])
    best = int(lags[np.argmax(curve[lags % n])])
    null = window[min_shift + max_lag : n - min_shift - max_lag + 1]
    value = float(window[0])
    if null.size < MIN_NULL or not null.std() > 0:
        return value, math.nan, best
    return value, float((value - null.mean()) / null.std()), best


def _rows(seconds: float, tr: float) -> int:
    return int(math.ceil(seconds / tr - 1e-9))


def isc_rows(
    means: Mapping[str, tuple[np.ndarray, dict]],
    subjects: Mapping[str, SubjectData],
    thresholds: Thresholds,
) -> pd.DataFrame:
    """Per (subject, story): ``isc``, ``isc_z``, ``n_others``, and the best other story
    (``other_story``, ``other_isc``, ``other_z``, ``other_lag_s``), with ``not_available``
    saying why a measure is missing."""
    stories = _stories(means, subjects)
    rows = []
    for sub, data in subjects.items():
        for story, run in data.runs.items():
            tr = round(float(run["tr"]), 3)
            row = {"subject": sub, "story": story, "not_available": []}
            row.update(_own_isc(sub, stories.get((story, tr)), story, thresholds, row))
            candidates = [g for (s, t), g in stories.items() if t == tr and s != story]
            row.update(_best_other(sub, means[sub], story, candidates, thresholds))
            rows.append(row)
    return pd.DataFrame(rows)


def _own_isc(sub, group: _Story | None, story, thresholds, row) -> dict:
    if group is None or sub not in group.subjects:
        row["not_available"].append(
            f"isc: nobody else heard {story} at this TR over {MIN_SHARED} shared volumes"
        )
        return {"isc": math.nan, "isc_z": math.nan, "n_others": 0}
    x = group.X[group.subjects.index(sub)]
    mean, weights, k = group.others(sub)
    curve = shifted_correlations(x, zscore(mean), weights)
    value, z, _ = shift_z(curve, _rows(thresholds.min_shift_s, group.tr))
    if math.isnan(z):
        row["not_available"].append("isc_z: the run is too short for the shift null")
    return {"isc": value, "isc_z": z, "n_others": k}


def _best_other(sub, mean, story, candidates: list[_Story], thresholds) -> dict:
    """The other story whose listeners the run follows best (by z), at its best lag."""
    best = {"other_story": "", "other_isc": math.nan, "other_z": math.nan, "other_lag_s": math.nan}
    own = mean[1][story]
    for group in candidates:
        others = [s for s in group.subjects if s != sub]
        if not others:
            continue
        keys = [k for k in group.keys if k in set(mean[0])]
        n = min(len(own), group.X.shape[1])
        if not keys or n < MIN_SHARED:
            continue
        g_mean, weights, _ = group.others(sub)
        cols = [list(group.keys).index(k) for k in keys]
        x = zscore(_columns(mean, story, keys)[:n])
        curve = shifted_correlations(x, zscore(g_mean[:n, cols]), weights[cols])
        lag = _rows(thresholds.max_lag_s, group.tr)
        value, z, at = shift_z(curve, _rows(thresholds.min_shift_s, group.tr), lag)
        if not math.isnan(z) and (math.isnan(best["other_z"]) or z > best["other_z"]):
            best = {"other_story": group.story, "other_isc": value, "other_z": z,
                    "other_lag_s": at * group.tr}  # fmt: skip
    return best


# --- duplicates ----------------------------------------------------------------------------------


def response_duplicates(
    means: Mapping[str, tuple[np.ndarray, dict]],
    subjects: Mapping[str, SubjectData],
    threshold: float,
) -> list[tuple[tuple[str, str], tuple[str, str], float, str]]:
    """Pairs of (subject, story) whose responses are near-identical: ``(a, b, r, how)``.

    Two subjects' runs of one story: the correlation of their deviations from the mean of the
    story's other holders (their raw correlation when nobody else heard it), over every volume
    and ROI at once. Two stories of one subject: the raw correlation over the volumes both
    have, from the start. At least ``threshold``.
    """
    found = []
    for group in _stories(means, subjects).values():
        k = len(group.subjects)
        total = group.X.sum(axis=0)
        for i in range(k):
            for j in range(i + 1, k):
                rest = (total - group.X[i] - group.X[j]) / (k - 2) if k > 2 else 0.0
                r = _flat_r(group.X[i] - rest, group.X[j] - rest)
                if r >= threshold:
                    pair = ((group.subjects[i], group.story), (group.subjects[j], group.story))
                    found.append((*pair, r, "its responses match those of"))
    for sub, (_, per_story) in means.items():
        names = list(per_story)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                n = min(len(per_story[a]), len(per_story[b]))
                if n >= MIN_SHARED:
                    r = _flat_r(per_story[a][:n], per_story[b][:n])
                    if r >= threshold:
                        found.append(((sub, a), (sub, b), r, "its responses match those of"))
    return found


def _flat_r(a: np.ndarray, b: np.ndarray) -> float:
    a = np.ravel(a) - np.mean(a)
    b = np.ravel(b) - np.mean(b)
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / denom) if denom > 0 else math.nan


def _run_name(key: tuple) -> str:
    sub, story, *run = key
    return f"{subject_label(sub)} {story}" + (f" run {run[0]}" if run else "")


def same_files(rows: Sequence[Mapping]) -> list[tuple[tuple, tuple, str]]:
    """Pairs of runs (``(subject, story, run)``) that read one file: the same path after links
    are followed (a symbolic or hard link), or byte-identical files (a copy). HDF5 runs that
    read different datasets (``key``) of one file are not pairs."""

    def ident(row):
        path = Path(row["response"])
        stat = path.stat()
        return (os.path.realpath(path), row.get("key") or ""), (stat.st_dev, stat.st_ino), stat

    seen, pairs, by_size = {}, [], {}
    for row in rows:
        key = (row["subject"], row["story"], int(row.get("run") or 1))
        real, inode, stat = ident(row)
        for other, (o_real, o_inode) in seen.items():
            if o_real == real or (o_inode == inode and o_real[1] == real[1]):
                pairs.append((other, key, "reads the same file as"))
        seen[key] = (real, inode)
        by_size.setdefault((stat.st_size, real[1]), []).append((key, real[0]))
    linked = {frozenset((a, b)) for a, b, _ in pairs}
    for group in by_size.values():
        digests: dict[str, tuple] = {}
        for key, path in group if len(group) > 1 else []:
            digest = _digest(path)
            if digest in digests and frozenset((digests[digest], key)) not in linked:
                pairs.append((digests[digest], key, "is a byte-identical copy of"))
            digests.setdefault(digest, key)
    return pairs


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


# --- per-run measures from the response file and confounds -----------------------------------


def framewise_displacement(confounds: pd.DataFrame) -> tuple[np.ndarray | None, str]:
    """(FD per volume in mm, NaN where undefined; or None) and where it came from: the table's
    ``framewise_displacement`` column, else Power's FD from its six motion columns."""
    if "framewise_displacement" in confounds:
        fd = pd.to_numeric(confounds["framewise_displacement"], errors="coerce").to_numpy(float)
        return fd, "framewise_displacement column"
    if all(c in confounds for c in MOTION):
        moves = confounds[list(MOTION)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        steps = np.abs(np.diff(moves, axis=0)) * np.r_[1.0, 1.0, 1.0, [HEAD_RADIUS_MM] * 3]
        return np.r_[np.nan, steps.sum(axis=1)], "computed from the six motion columns"
    return None, "the confounds table has neither framewise_displacement nor the motion columns"


def motion_measures(confounds_path, thresholds: Thresholds) -> tuple[dict, str]:
    """(fd_mean, fd_max, fd_fraction of one run; or NaN) and why they are not available."""
    nan = {"fd_mean": math.nan, "fd_max": math.nan, "fd_fraction": math.nan}
    if not confounds_path:
        return nan, "motion: the run has no confounds table"
    try:
        table = pd.read_csv(confounds_path, sep="\t", na_values=["n/a"], keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise BrainshapeError(f"cannot read confounds table {confounds_path} ({error})") from None
    fd, source = framewise_displacement(table)
    fd = fd[np.isfinite(fd)] if fd is not None else None
    if fd is None or fd.size == 0:
        return nan, f"motion: {source}"
    return {
        "fd_mean": float(fd.mean()),
        "fd_max": float(fd.max()),
        "fd_fraction": float((fd > thresholds.fd_threshold).mean()),
    }, ""


def global_outliers(signal: np.ndarray, tr: float, z: float) -> tuple[int, float]:
    """(volumes whose global signal leaves its local level by more than ``z`` robust SDs, the
    largest robust z). The local level is the mean of the other volumes within
    ``GLOBAL_WINDOW_S`` seconds (at least 4, mirrored at the ends), the SD 1.4826 times the
    median absolute residual; volumes found extreme leave their neighbours' means and the SD,
    and the search repeats until it finds no new one (a dropout of several volumes would
    otherwise drag its neighbours along). A linear level keeps Gaussian noise Gaussian, so
    ``z`` = 5.5 fires on about 4e-8 of its volumes (a running median would not: its residuals
    have heavier tails)."""
    from scipy.ndimage import correlate1d

    x = np.asarray(signal, dtype=np.float64)
    half = max(2, _rows(GLOBAL_WINDOW_S, tr) // 2)
    if x.size <= 2 * half:
        return 0, math.nan
    weights = np.ones(2 * half + 1)
    weights[half] = 0.0
    valid = np.ones(x.size, dtype=bool)
    for _ in range(10):
        counted = correlate1d(valid.astype(np.float64), weights, mode="mirror")
        level = correlate1d(np.where(valid, x, 0.0), weights, mode="mirror") / np.maximum(
            counted, 1.0
        )
        residual = x - level
        centre = np.median(residual[valid])
        scale = 1.4826 * np.median(np.abs(residual[valid] - centre))
        if not scale > 0:
            return 0, math.nan
        robust = np.abs(residual - centre) / scale
        if np.array_equal(robust <= z, valid):
            break
        valid = robust <= z
    return int((robust > z).sum()), float(robust.max())


def image_measures(row: Mapping, thresholds: Thresholds) -> tuple[dict, list[str]]:
    """tSNR, global-signal outliers and volumes of one NIfTI run (``fmriprep`` or ``nifti``)."""
    import nibabel as nib

    try:
        img = nib.load(row["response"])
        data = np.asarray(img.dataobj, dtype=np.float32)
        mask = (
            np.asarray(nib.load(row["mask"]).dataobj).reshape(data.shape[:3]) > 0
            if row.get("mask")
            else np.isfinite(data).all(axis=3) & (data.max(axis=3) > data.min(axis=3))
        )
    except (OSError, ValueError, EOFError) as error:
        raise BrainshapeError(
            f"cannot read {row['response']} for quality control ({error})"
        ) from None
    series = data[mask].astype(np.float64)  # (voxels, volumes)
    tr = float(row.get("tr") or img.header.get_zooms()[3] or 1.0)
    count, peak = global_outliers(series.mean(axis=0), tr, thresholds.global_z)
    out = {"n_volumes": data.shape[3], "global_outliers": count, "global_max_z": peak}
    missing = []
    mean = series.mean(axis=1)
    t = np.linspace(-1.0, 1.0, series.shape[1])
    slope = (series - mean[:, None]) @ t / (t @ t)
    sd = (series - mean[:, None] - np.outer(slope, t)).std(axis=1)
    ok = sd > 0
    tsnr = np.median(mean[ok] / sd[ok]) if ok.any() else math.nan
    if not tsnr >= 1.0:
        missing.append("tsnr: the image holds no baseline signal (already cleaned)")
        tsnr = math.nan
    out["tsnr"] = float(tsnr)
    return out, missing


def matrix_measures(row: Mapping, thresholds: Thresholds) -> tuple[dict, list[str]]:
    """Global-signal outliers and volumes of one HDF5 run (mean over its columns)."""
    from brainshape.responses import read_hdf5

    data = read_hdf5(row["response"], row.get("key") or "data")
    signal = np.nanmean(data, axis=1)
    count, peak = global_outliers(signal, float(row["tr"]), thresholds.global_z)
    out = {"n_volumes": data.shape[0], "global_outliers": count, "global_max_z": peak,
           "tsnr": math.nan}  # fmt: skip
    return out, ["tsnr: HDF5 responses are preprocessed and z-scored (no baseline signal)"]


def run_measures(row: Mapping, thresholds: Thresholds) -> dict:
    """Motion, tSNR and global-signal measures of one run of the runs sheet (paths resolved),
    with ``not_available`` listing what its format does not allow."""
    if row["format"] == "hdf5":
        out, missing = matrix_measures(row, thresholds)
    else:
        out, missing = image_measures(row, thresholds)
    confounds = row.get("confounds") if row["format"] != "hdf5" else None
    motion, why = motion_measures(confounds, thresholds)
    if row["format"] == "hdf5":
        why = "motion: HDF5 responses come without a confounds table"
    return {**out, **motion, "not_available": [*missing, *([why] if why else [])]}


# --- the table -----------------------------------------------------------------------------------


def response_measures(subjects: Mapping[str, SubjectData], thresholds: Thresholds) -> pd.DataFrame:
    """Per (subject, story) of the subject folders: the inter-subject measures of
    :func:`isc_rows` and the near-identical responses of :func:`response_duplicates`
    (``duplicate_of`` in words, ``duplicate_r``); ``not_available`` is a list of reasons."""
    means = {sub: roi_means(data) for sub, data in subjects.items()}
    table = isc_rows(means, subjects, thresholds)
    found: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for a, b, r, how in response_duplicates(means, subjects, thresholds.duplicate_r):
        found.setdefault(a, []).append((f"{how} {_run_name(b)} (r = {r:.2f})", r))
        found.setdefault(b, []).append((f"{how} {_run_name(a)} (r = {r:.2f})", r))
    keys = list(zip(table["subject"], table["story"], strict=True))
    table["duplicate_of"] = ["; ".join(t for t, _ in found.get(k, [])) for k in keys]
    table["duplicate_r"] = [max((r for _, r in found.get(k, [])), default=math.nan) for k in keys]
    return table


def qc_table(
    subjects: Mapping[str, SubjectData], rows: Sequence[Mapping], thresholds: Thresholds
) -> pd.DataFrame:
    """The QC table of a dataset: one row per run of its runs sheet (:data:`COLUMNS`).

    ``subjects``: the subject folders the fmri jobs wrote (``subjects.read_subjects``), keyed
    by label without ``sub-``; ``rows``: every row of the runs sheet, excluded ones included
    (paths resolved). Runs the sheet excludes keep their row, with its reason in
    ``sheet_exclusion`` and no measure. Runs of one story that a subject heard several times
    share the measures of their average (what the fmri stage wrote) and have their own motion,
    tSNR, global signal and file.
    """
    kept = [r for r in rows if not r.get("exclude")]
    for row in kept:
        if row["subject"] not in subjects or row["story"] not in subjects[row["subject"]].runs:
            raise BrainshapeError(
                f"{subject_label(row['subject'])} story {row['story']}: the runs sheet lists the "
                "run but the subject folder of the fmri stage lacks it; rerun the fmri stage"
            )
    responses = response_measures(subjects, thresholds).set_index(["subject", "story"])
    files: dict[tuple, list[str]] = {}
    for a, b, how in same_files(kept):
        files.setdefault(a, []).append(f"{how} {_run_name(b)}")
        files.setdefault(b, []).append(f"{how} {_run_name(a)}")
    out = []
    for row in rows:
        key = (row["subject"], row["story"], int(row.get("run") or 1))
        record = {"subject": key[0], "story": key[1], "run": key[2], "format": row["format"]}
        if row.get("exclude"):
            record["sheet_exclusion"] = row.get("reason") or "excluded in the runs sheet"
            out.append(record)
            continue
        measured = run_measures(row, thresholds)
        shared = responses.loc[(key[0], key[1])].to_dict()
        same = files.get(key, [])
        record.update(
            {**measured, **shared, "sheet_exclusion": "",
             "duplicate_of": "; ".join(filter(None, [*same, shared["duplicate_of"]])),
             "duplicate_r": 1.0 if same else shared["duplicate_r"],
             "not_available": "; ".join([*shared["not_available"], *measured["not_available"]])}
        )  # fmt: skip
        out.append(record)
    return _typed(flag_runs(pd.DataFrame(out), thresholds))


def flag_runs(table: pd.DataFrame, thresholds: Thresholds) -> pd.DataFrame:
    """``table`` with ``failed`` (the failed checks of :data:`CHECKS`, joined by ``;``) and
    ``reason`` (each in words, joined by ``; ``) filled in."""
    table = table.copy()
    failed, reasons = [], []
    for row in table.to_dict("records"):
        found = _failed(row, thresholds) if not row.get("sheet_exclusion") else {}
        failed.append(";".join(c for c in CHECKS if c in found))
        reasons.append("; ".join(found[c] for c in CHECKS if c in found))
    table["failed"] = failed
    table["reason"] = reasons
    return table


def _failed(row: Mapping, t: Thresholds) -> dict[str, str]:
    """The checks one run fails, each with its reason in words."""
    found = {}
    isc = row.get("isc", math.nan)
    other_z = row.get("other_z", math.nan)
    # A mislabeled run does not follow its own story; asking for that too keeps stories that
    # share most of their words (Narratives' milkyway versions) from flagging each other.
    at_chance = not row.get("isc_z", math.nan) >= t.chance_z
    if at_chance and other_z > t.mislabel_z and not isc >= row["other_isc"]:
        found["mislabeled"] = (
            f"follows the listeners of {row['other_story']} (r = {row['other_isc']:.2f}, "
            f"z = {other_z:.1f}, lag {row['other_lag_s']:g} s) better than those of "
            f"{row['story']} (r = {isc:.2f})"
        )
    if row.get("duplicate_of"):
        found["duplicate"] = row["duplicate_of"]
    if row.get("isc_z", math.nan) < t.chance_z and "mislabeled" not in found:
        found["at_chance"] = (
            f"does not follow the {row['n_others']} other listener(s) of {row['story']} "
            f"(r = {isc:.2f}, z = {row['isc_z']:.1f} against time-shifted copies; below "
            f"{t.chance_z:g})"
        )
    if row.get("fd_mean", math.nan) > t.max_mean_fd or row.get("fd_fraction", math.nan) > (
        t.max_fd_fraction
    ):
        found["motion"] = (
            f"mean framewise displacement {row['fd_mean']:.2f} mm (max {row['fd_max']:.2f} mm; "
            f"{row['fd_fraction']:.0%} of volumes above {t.fd_threshold:g} mm)"
        )
    if row.get("global_outliers", 0) > 0:
        found["global_signal"] = (
            f"{row['global_outliers']} volume(s) with extreme global signal (up to "
            f"{row['global_max_z']:.1f} robust SDs from its running median)"
        )
    if t.min_tsnr is not None and row.get("tsnr", math.nan) < t.min_tsnr:
        found["tsnr"] = f"median tSNR {row['tsnr']:.1f} below {t.min_tsnr:g}"
    return found


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    """The table's columns in order, with fixed types (NaN for measures a run lacks)."""
    table = table.reindex(columns=list(COLUMNS))
    text = ["subject", "story", "format", "failed", "reason", "other_story", "duplicate_of",
            "not_available", "sheet_exclusion"]  # fmt: skip
    for column in text:
        table[column] = table[column].fillna("").astype(str)
    for column in ("run", "n_others", "global_outliers", "n_volumes"):
        table[column] = table[column].fillna(0).astype(np.int64)
    floats = [c for c in COLUMNS if c not in text and table[c].dtype != np.int64]
    table[floats] = table[floats].astype(np.float64)
    return table.sort_values(["subject", "story", "run"], ignore_index=True)


def planned_exclusions(
    path: str | os.PathLike, thresholds: Thresholds, checks: Sequence[str]
) -> Exclusions:
    """The runs the QC table at ``path`` excludes under the current ``thresholds`` and
    ``checks``: its measures flagged again (:func:`flag_runs`), so that a changed threshold is
    planned at once, before the QC job writes the table again with it."""
    try:
        table = pd.read_parquet(path)
        return excluded_runs(flag_runs(table[table["sheet_exclusion"] == ""], thresholds), checks)
    except (OSError, ValueError, KeyError) as error:
        raise BrainshapeError(
            f"cannot read the QC table {path} ({error}); delete it so that rule qc writes it again"
        ) from None
