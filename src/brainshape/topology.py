"""The shape of representations: point clouds, persistence diagrams, distances, geometry.

A *point cloud* here is a set of time points (fMRI volumes) seen through one representation:
the rows of a model layer's features resampled at the volume times, or a brain ROI x
hemisphere's response at the same volumes. Both share one time base (the kept volumes of every
story, in sorted story order), so point ``i`` of a layer cloud and point ``i`` of a brain cloud
are the same moment of the same story. The brain lags the stimulus: brain volume at ``t``
seconds is paired with the stimulus at ``t - delay_s``.

Brain clouds carry the response the subjects share. With ROI-mean targets a cloud is the
group-average time course of the ROI x hemisphere, delay-embedded (its value now and
``dimension - 1`` times ``lag_s`` seconds earlier), so it has a geometry; with voxel targets it
is the group-average response of the voxels every subject has (the intersection of their
masks). Per-subject clouds (optional) are each subject's own series, embedded the same way, or
its own voxels.

Every cloud is standardised per column over its volumes (optionally reduced to its top
``components`` principal components), its distances (Euclidean, or ``sqrt(2 (1 - r))`` for
correlation) are divided by their median, so diagrams and distances compare shapes, not scales.
From each cloud: a Vietoris-Rips persistence diagram (H0, H1, optionally H2), computed once per
cloud and stored, and summaries of it (:data:`SUMMARIES`). Between a layer cloud and a brain
cloud: q-Wasserstein distances between their diagrams per homology dimension and the geometry
measures of :data:`MEASURES` (RSA, debiased CKA, Procrustes, linear CKA). Each geometry value
sits beside a null: the same measure against the brain cloud shifted in time by whole blocks of
the time base (``null_shifts`` shifts), as its mean, standard deviation, z and one-sided p. The
Wasserstein distances have none: diagrams do not know which volume is which, so re-pairing the
volumes cannot move them.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from scipy.stats import t as student_t

from brainshape.clock import kept_rows, kept_times, run_start, volume_times
from brainshape.encoding import lanczos_matrix
from brainshape.errors import BrainshapeError
from brainshape.io import atomic_path, save_json, save_parquet
from brainshape.stimuli import word_times
from brainshape.subjects import read_runs, read_subject
from brainshape.threads import limit_threads

log = logging.getLogger("brainshape")

#: Distances between the points of a (standardised) cloud.
METRICS = ("euclidean", "correlation")

#: Persistent-homology libraries; "giotto" (giotto-ph) is the default, chosen by
#: benchmarks/topology.py (docs/benchmarks.md), "ripser" (ripser.py) the alternative.
BACKENDS = ("giotto", "ripser")

#: Fewest seconds between two shifted brain clouds of the null: longer than the haemodynamic
#: response and the Lanczos window, so a shifted cloud shares no stimulus with the original.
MIN_SHIFT_S = 30.0


# --- time base --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeBase:
    """The shared time base: per story (sorted) its run, the brain delay and embedding history.

    ``runs[story]`` holds ``n_trs``, ``trim_start``, ``trim_end``, ``tr`` (seconds) and
    ``offset`` (word time of the file's first volume) as in the fMRI stage's ``runs.json``;
    times are on the word clock. A story contributes its kept volumes ``[trim_start, n_trs -
    trim_end)`` from the first one whose time is at least ``history_s`` after the first kept
    volume (so that a delay embedding of the brain reaches back inside the kept volumes) and at
    least ``delay_s`` after the start of the run (so that its stimulus lies inside the run).
    """

    runs: Mapping[str, Mapping[str, float]]
    delay_s: float = 4.0
    history_s: float = 0.0

    def stories(self) -> list[str]:
        return sorted(self.runs)

    def kept_times(self, story: str) -> np.ndarray:
        """Seconds of the kept volumes of ``story`` (one per row of its fMRI array)."""
        return kept_times(self.runs[story])

    def brain_rows(self, story: str) -> np.ndarray:
        """Rows of the story's kept-volume array that enter the clouds."""
        t = self.kept_times(story)
        if t.size == 0:
            return np.zeros(0, dtype=np.int64)
        start = run_start(self.runs[story])
        ok = (t - t[0] >= self.history_s - 1e-9) & (t - self.delay_s >= start)
        return np.flatnonzero(ok)

    def brain_times(self, story: str) -> np.ndarray:
        return self.kept_times(story)[self.brain_rows(story)]

    def model_times(self, story: str) -> np.ndarray:
        """Seconds of the stimulus paired with each brain row of ``story``."""
        return self.brain_times(story) - self.delay_s

    def n_points(self) -> int:
        return sum(self.brain_rows(s).size for s in self.stories())

    def seconds_per_point(self) -> float:
        return sum(self.brain_rows(s).size * float(self.runs[s]["tr"]) for s in self.stories()) / (
            max(1, self.n_points())
        )

    def check(self, where: str) -> None:
        if self.delay_s < 0:
            raise BrainshapeError(f"topology.delay_s is {self.delay_s}; use seconds >= 0")
        for story in self.stories():
            if self.brain_rows(story).size < 1:
                raise BrainshapeError(
                    f"{where}: story {story} keeps {self.kept_times(story).size} volumes, none "
                    f"of them {self.history_s:g} s after its first kept volume (the brain "
                    f"embedding's reach) and {self.delay_s:g} s into the run (topology.delay_s); "
                    "lower topology.embedding.dimension, lag_s or delay_s"
                )


def shared_time_base(
    fmri_dirs: Sequence[str | os.PathLike], delay_s: float, history_s: float = 0.0
) -> TimeBase:
    """The time base of a dataset: the runs (stories, lengths, trimming, TR and clock) that the
    most subjects share (:func:`base_members`); the group brain clouds are made of those
    subjects."""
    if not fmri_dirs:
        raise BrainshapeError("no fMRI subjects for the brain clouds; list subjects in the config")
    runs, members = _common_runs(fmri_dirs)
    base = TimeBase(runs=runs, delay_s=float(delay_s), history_s=float(history_s))
    base.check(str(Path(members[0]) / "runs.json"))
    return base


def _common_runs(fmri_dirs: Sequence[str | os.PathLike]) -> tuple[dict, list]:
    """The runs most subjects share (ties: the first subject's) and those subjects' folders."""
    found: list[tuple[dict, list]] = []
    for d in fmri_dirs:
        runs = read_runs(d)
        for known, members in found:
            if known == runs:
                members.append(d)
                break
        else:
            found.append((runs, [d]))
    return max(found, key=lambda pair: len(pair[1]))


def base_members(fmri_dirs: Sequence[str | os.PathLike], base: TimeBase) -> list:
    """The subjects whose runs are the time base's; the others (who heard other stories) are
    logged and left out of the group brain clouds."""
    members = [d for d in fmri_dirs if read_runs(d) == dict(base.runs)]
    others = [Path(d).name for d in fmri_dirs if d not in members]
    if others:
        log.warning(
            "brain clouds: %d of %d subjects heard the stories of the time base (%s); left out, "
            "with other stories or runs: %s",
            len(members),
            len(fmri_dirs),
            ", ".join(base.stories()),
            ", ".join(others),
        )
    return members


def landmarks(n_points: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n_points``, drawn with a fixed seed.

    The same indices serve every cloud of a dataset, so paired clouds keep paired points.
    """
    if n_points <= max_points:
        return np.arange(n_points)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_points, size=max_points, replace=False))


def time_shifts(base: TimeBase, n_shifts: int) -> list[int]:
    """Shifts (in points of the time base) of the null's brain clouds: ``k N / (n + 1)``.

    A shifted cloud pairs layer point ``i`` with brain point ``(i + shift) mod N``: whole blocks
    of the concatenated stories move together, so each keeps its own autocorrelation and loses
    its alignment with the stimulus. Refused when two shifts lie less than ``MIN_SHIFT_S`` apart.
    """
    n = base.n_points()
    if n_shifts < 2:
        raise BrainshapeError(f"topology.null_shifts is {n_shifts}; use 2 or more")
    gap = n / (n_shifts + 1) * base.seconds_per_point()
    if gap < MIN_SHIFT_S:
        raise BrainshapeError(
            f"topology.null_shifts: {n_shifts} shifts of the {n} volumes of the time base leave "
            f"{gap:.0f} s between shifted brain clouds, less than {MIN_SHIFT_S:g} s (the "
            "response would overlap); lower topology.null_shifts"
        )
    return [int(round(k * n / (n_shifts + 1))) for k in range(1, n_shifts + 1)]


def write_time_base(
    fmri_dirs: Sequence[str | os.PathLike],
    path: str | os.PathLike,
    *,
    delay_s: float,
    history_s: float,
    max_points: int,
    seed: int,
    null_shifts: int,
) -> tuple[TimeBase, np.ndarray, list[int]]:
    """The dataset's time base, landmark volumes and null shifts, written to ``path`` (JSON).

    Every cloud of the dataset, brain or layer, is taken at these landmarks, so diagrams of
    both sides are computed once and paired freely. The file depends on the subjects' runs
    (stories, lengths, trimming, TR) only, not on their data: a replaced derivative leaves it,
    and with it every layer's diagrams, as it is.
    """
    base = shared_time_base(fmri_dirs, delay_s, history_s)
    index = landmarks(base.n_points(), max_points, seed)
    shifts = time_shifts(base, int(null_shifts))
    save_json(
        path,
        {
            "runs": dict(base.runs),
            "delay_s": base.delay_s,
            "history_s": base.history_s,
            "index": index.tolist(),
            "shifts": shifts,
        },
    )
    return base, index, shifts


def read_time_base(path: str | os.PathLike) -> tuple[TimeBase, np.ndarray, list[int]]:
    """The time base, landmark volumes and null shifts of :func:`write_time_base`."""
    data = json.loads(Path(path).read_text())
    if "delay_s" not in data:
        raise BrainshapeError(
            f"{path} was written by an older version (no delay_s); delete it so that rule "
            "topology_timebase computes it again"
        )
    base = TimeBase(runs=data["runs"], delay_s=data["delay_s"], history_s=data["history_s"])
    return base, np.asarray(data["index"], dtype=np.int64), [int(s) for s in data["shifts"]]


# --- layer clouds -----------------------------------------------------------------------------


def _resamplers(
    words: Mapping[str, np.ndarray], base: TimeBase, window: float
) -> dict[str, np.ndarray]:
    """Per story, the Lanczos weights (n_brain_rows, n_words) at the paired stimulus times."""
    out = {}
    for story in base.stories():
        if story not in words:
            raise BrainshapeError(
                f"story {story} has fMRI but no words; the words table must hold every story of "
                "the dataset"
            )
        run = base.runs[story]
        # The cut-off comes from the whole run's volume spacing; only the paired rows are kept.
        times = volume_times(run) - base.delay_s
        weights = lanczos_matrix(words[story], times, window=window)
        out[story] = weights[kept_rows(run)][base.brain_rows(story)]
    return out


def landmark_resamplers(
    words: pd.DataFrame, base: TimeBase, index: np.ndarray, window: float
) -> dict[str, np.ndarray]:
    """Per story, the Lanczos weights of the landmark volumes only (n_landmarks_story, n_words)."""
    resamplers = _resamplers(word_times(words), base, window)
    offset = 0
    for story, weights in resamplers.items():
        local = index[(index >= offset) & (index < offset + len(weights))] - offset
        offset += len(weights)
        resamplers[story] = weights[local]
    return resamplers


def layer_cloud(
    features: Mapping[str, np.ndarray],
    resamplers: Mapping[str, np.ndarray],
    layer: int,
) -> np.ndarray:
    """One layer's cloud (n_points, hidden) float64, stories in time-base order.

    ``features[story]`` is (n_layers + 1, n_words, hidden) (memory-mapped is fine: only
    ``layer`` is read); ``resamplers`` come from :func:`landmark_resamplers`.
    """
    parts = []
    for story, weights in resamplers.items():
        if story not in features:
            raise BrainshapeError(
                f"story {story} has fMRI but no features; compute the features of every story"
            )
        f = features[story]
        if f.ndim != 3 or f.shape[1] != weights.shape[1]:
            raise BrainshapeError(
                f"features of story {story} have shape {tuple(f.shape)}; expected (layers, "
                f"{weights.shape[1]} words, hidden); recompute the features"
            )
        parts.append(weights @ np.asarray(f[layer], dtype=np.float64))
    return np.concatenate(parts, axis=0)


# --- brain clouds -----------------------------------------------------------------------------


def _base_stories(sub: str, folder, base: TimeBase) -> dict[str, np.ndarray]:
    """Per story of the time base, a subject's kept-volume array (n_kept, n_targets)."""
    missing = [story for story in base.stories() if story not in folder.data]
    if missing:
        raise BrainshapeError(
            f"sub-{sub} has no run of {', '.join(missing)}, a story of the time base; rerun "
            "rule topology_timebase (it picks the subjects who share their runs)"
        )
    return {story: folder.data[story] for story in base.stories()}


def embed(
    series: Mapping[str, np.ndarray], base: TimeBase, dimension: int, lag_s: float
) -> np.ndarray:
    """Delay embedding (n_points, dimension): the series at each brain time and ``lag_s``,
    ``2 lag_s``, ... seconds earlier (linear interpolation between volumes of the story).

    ``series[story]`` holds one value per kept volume; the time base keeps only volumes whose
    embedding reaches back inside the story (``history_s``).
    """
    parts = []
    for story in base.stories():
        kept, t = base.kept_times(story), base.brain_times(story)
        values = np.asarray(series[story], dtype=np.float64)
        parts.append(
            np.stack([np.interp(t - j * lag_s, kept, values) for j in range(dimension)], axis=1)
        )
    return np.concatenate(parts, axis=0)


def _common_columns(tables: Mapping[str, pd.DataFrame], roi: str, hemi: str) -> dict:
    """Per subject, the target columns of the voxels of ``roi hemi`` every subject has, in one
    order (the intersection of their masks on the common grid)."""
    coords = {
        s: dict(
            zip(map(tuple, t[["i", "j", "k"]].to_numpy()), t["target"].astype(int), strict=True)
        )
        for s, t in tables.items()
    }
    common = sorted(set.intersection(*(set(c) for c in coords.values())))
    if not common:
        raise BrainshapeError(
            f"no voxel of {roi} {hemi} lies in every subject's mask, so the group cloud is empty; "
            "check that the subjects' derivatives share one grid (same space and resolution)"
        )
    return {s: [c[v] for v in common] for s, c in coords.items()}


def _cloud(per_story: Mapping[str, np.ndarray], base: TimeBase, voxels: bool, embedding):
    """A cloud from per-story kept-volume arrays (n_kept, columns): their brain rows (voxels),
    or the delay embedding of their mean over columns (an ROI mean)."""
    if voxels:
        return np.concatenate([per_story[s][base.brain_rows(s)] for s in base.stories()], axis=0)
    series = {story: np.asarray(v).mean(axis=1) for story, v in per_story.items()}
    return embed(series, base, int(embedding["dimension"]), float(embedding["lag_s"]))


def _site_columns(targets: Mapping[str, pd.DataFrame], voxels: bool) -> dict:
    """(roi, hemisphere) every subject has -> subject -> its target columns, aligned across
    subjects (voxel targets: the voxels every subject has)."""
    groups = {
        s: dict(list(t.groupby(["roi", "hemisphere"], sort=True))) for s, t in targets.items()
    }
    sites = {}
    for roi, hemi in sorted(set.intersection(*(set(g) for g in groups.values()))):
        tables = {s: g[(roi, hemi)] for s, g in groups.items()}
        if voxels:
            sites[(str(roi), str(hemi))] = _common_columns(tables, str(roi), str(hemi))
        else:
            sites[(str(roi), str(hemi))] = {
                s: [int(t["target"].iloc[0])] for s, t in tables.items()
            }
    return sites, groups


def brain_clouds(
    subjects: Mapping[str, str | os.PathLike],
    base: TimeBase,
    *,
    embedding: Mapping[str, float],
    per_subject: bool = False,
) -> dict[tuple[str, str, str], np.ndarray]:
    """Brain clouds keyed by (subject or "group", roi, hemisphere): (n_points, n_columns).

    ROI-mean targets (``targets.parquet`` without voxel indices): the mean over subjects of the
    ROI's time course, delay-embedded with ``embedding`` (``dimension``, ``lag_s``); voxel
    targets: the mean over subjects of each voxel every subject has. ``per_subject`` adds each
    subject's own cloud (its embedded ROI mean, or all its voxels of the ROI). One subject's
    data is read at a time (the group clouds are running sums).
    """
    folders = {str(s): read_subject(d, mmap=True) for s, d in subjects.items()}
    targets = {s: folder.targets for s, folder in folders.items()}
    modes = {"i" in t.columns for t in targets.values()}
    if len(modes) != 1:
        raise BrainshapeError("some subjects have voxel targets and others ROI means; rerun fmri")
    voxels = modes.pop()
    sites, groups = _site_columns(targets, voxels)
    sums = {key: dict.fromkeys(base.stories(), 0.0) for key in sites}
    own: dict[tuple[str, str, str], np.ndarray] = {}
    for s, folder in folders.items():
        data = _base_stories(s, folder, base)
        for key, columns in sites.items():
            for story, values in data.items():
                sums[key][story] = sums[key][story] + np.asarray(values[:, columns[s]], np.float64)
            if per_subject:
                cols = groups[s][key]["target"].tolist() if voxels else columns[s]
                part = {story: np.asarray(v[:, cols], np.float64) for story, v in data.items()}
                own[(s, *key)] = _cloud(part, base, voxels, embedding)
    clouds: dict[tuple[str, str, str], np.ndarray] = {}
    for key in sites:
        mean = {story: total / len(folders) for story, total in sums[key].items()}
        clouds[("group", *key)] = _cloud(mean, base, voxels, embedding)
        clouds.update({k: v for k, v in own.items() if k[1:] == key})
    return clouds


# --- standardised clouds and their distances --------------------------------------------------


def standardize(x: np.ndarray) -> np.ndarray:
    """Columns centred and scaled to unit variance over the rows (constant columns become 0)."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    sd = x.std(axis=0)
    return np.divide(
        x, sd, out=np.zeros_like(x), where=sd > 1e-12 * max(1.0, float(sd.max(initial=0)))
    )


def _from_gram(gram: np.ndarray) -> np.ndarray:
    """Euclidean distances between the points whose Gram matrix is ``gram``."""
    sq = np.diagonal(gram)
    d2 = sq[:, None] + sq[None, :] - 2.0 * gram
    d = np.sqrt(np.clip((d2 + d2.T) / 2, 0.0, None))
    np.fill_diagonal(d, 0.0)
    return d


def distances(x: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """Square distance matrix (n_points, n_points) float64 between the rows of ``x``.

    ``euclidean``; ``correlation``: ``sqrt(2 (1 - r))`` with r the Pearson correlation of two
    points' vectors (the Euclidean distance between the rows centred and scaled to unit norm, so
    a metric; a constant row is at distance ``sqrt(2)`` from every other). Computed from the
    Gram matrix (one matrix product, however wide the cloud).
    """
    if metric not in METRICS:
        raise BrainshapeError(f"topology.metric is '{metric}'; use one of {list(METRICS)}")
    x = np.asarray(x, dtype=np.float64)
    if metric == "correlation":
        if x.shape[1] < 3:
            raise BrainshapeError(
                f"a cloud of {x.shape[1]}-dimensional points has no useful correlation "
                "distance; use topology.metric: euclidean"
            )
        x = x - x.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    return _from_gram(x @ x.T)


def _reduce(x: np.ndarray, components: int | None = None) -> np.ndarray:
    """The column-centred cloud in at most n_points coordinates with the same Gram matrix, or its
    top ``components`` principal-component scores (each with its own variance)."""
    if components is None and x.shape[1] <= x.shape[0]:
        return x
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    k = s.size if components is None else min(int(components), s.size)
    return u[:, :k] * s[:k]


@dataclass
class Cloud:
    """A cloud ready for the measures.

    ``points`` (n, r): the standardised cloud (optionally its top principal components) in at
    most n coordinates, columns centred; ``distances`` (n, n): its distances divided by
    ``scale``, their median over distinct pairs.
    """

    points: np.ndarray
    distances: np.ndarray
    scale: float

    @cached_property
    def ranks(self) -> np.ndarray:
        """Ranks of the distances of distinct pairs, centred and of unit norm."""
        r = rankdata(self.distances[np.triu_indices(len(self.distances), k=1)])
        r = r - r.mean()
        norm = np.linalg.norm(r)
        return r / norm if norm > 0 else r

    @cached_property
    def gram(self) -> np.ndarray:
        """The linear kernel ``points points^T`` (n, n)."""
        return self.points @ self.points.T

    @cached_property
    def hsic(self) -> float:
        """Unbiased HSIC of the cloud with itself (the debiased CKA's normaliser)."""
        return _hsic_grams(self.gram, self.gram)


def prepare(x: np.ndarray, metric: str = "euclidean", components: int | None = None) -> Cloud:
    """Standardise ``x`` (n_points, n_columns) per column, optionally keep its top
    ``components`` principal components, and scale-normalise its distances (median 1)."""
    z = standardize(x)
    if components is not None:
        z = _reduce(z, components)
    gram = z @ z.T
    d = _from_gram(gram) if metric == "euclidean" else distances(z, metric)
    off = d[np.triu_indices(len(d), k=1)]
    positive = off[off > 0]
    if positive.size == 0:
        raise BrainshapeError(
            "a cloud's points are all equal (a constant signal?); nothing to compare"
        )
    scale = float(np.median(positive))
    if z.shape[1] > len(z):
        # A wide cloud in n coordinates with the same Gram matrix (from its eigenvectors).
        w, v = np.linalg.eigh(gram)
        z = v[:, ::-1] * np.sqrt(np.clip(w[::-1], 0.0, None))
    cloud = Cloud(points=z, distances=d / scale, scale=scale)
    cloud.__dict__["gram"] = gram  # the cached property, already at hand
    return cloud


# --- geometry measures ------------------------------------------------------------------------


def rsa(x: Cloud, y: Cloud) -> float:
    """Spearman correlation between the two clouds' distances over distinct pairs."""
    return float(x.ranks @ y.ranks)


def procrustes(x: Cloud, y: Cloud) -> float:
    """Procrustes disparity of the paired standardised clouds: 0 same shape, 1 unrelated.

    Both are centred and scaled to unit Frobenius norm; the disparity is what is left after the
    best rotation and scaling of ``y`` onto ``x`` (as ``scipy.spatial.procrustes``):
    ``1 - ||x^T y||_*^2``.
    """
    nx, ny = np.linalg.norm(x.points), np.linalg.norm(y.points)
    if nx == 0 or ny == 0:
        return float("nan")
    nuclear = np.linalg.svd((x.points / nx).T @ (y.points / ny), compute_uv=False).sum()
    return float(max(0.0, 1.0 - nuclear**2))


def cka(x: Cloud, y: Cloud) -> float:
    """Linear CKA: ``||x^T y||_F^2 / (||x^T x||_F ||y^T y||_F)`` (as ``<K, L> / (||K|| ||L||)``
    with the Gram matrices). Biased upward by the clouds' effective rank (Kornblith et al.
    2019); kept beside :func:`cka_debiased` for comparison."""
    den = np.linalg.norm(x.gram) * np.linalg.norm(y.gram)
    return float(np.einsum("ij,ij->", x.gram, y.gram) / den) if den > 0 else float("nan")


def _hsic_grams(k: np.ndarray, m: np.ndarray) -> float:
    """Unbiased HSIC of two n x n linear kernels (see :func:`hsic_unbiased`), in O(n^2)."""
    n = len(k)
    dk, dl = np.diagonal(k), np.diagonal(m)
    sk, sl = k.sum(axis=1) - dk, m.sum(axis=1) - dl  # K~ 1 and L~ 1
    trace = float(np.einsum("ij,ij->", k, m) - dk @ dl)  # tr(K~ L~)
    return (trace + sk.sum() * sl.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (sk @ sl)) / (
        n * (n - 3)
    )


def hsic_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased HSIC estimator (Song et al. 2012) of the linear kernels of ``x`` and ``y``.

    With ``K = x x^T``, ``L = y y^T`` (n x n) and their diagonals set to 0 (``K~``, ``L~``):
    ``[tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2 / (n-2) 1^T K~ L~ 1] / (n (n-3))``.
    Its expectation is the population HSIC: 0 for independent rows of ``x`` and ``y``, whatever
    their widths.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 4:
        raise BrainshapeError(f"debiased CKA needs at least 4 points, got {len(x)}")
    return _hsic_grams(x @ x.T, y @ y.T)


def cka_debiased(x: Cloud, y: Cloud) -> float:
    """Debiased linear CKA: :func:`hsic_unbiased` normalised (Kornblith et al. 2019, with the
    unbiased estimator); about 0 for unrelated clouds whatever their width or effective rank."""
    if x.hsic <= 0 or y.hsic <= 0:
        return float("nan")
    return float(_hsic_grams(x.gram, y.gram) / math.sqrt(x.hsic * y.hsic))


@dataclass(frozen=True)
class Measure:
    """A geometry measure between a layer cloud and a brain cloud (:class:`Cloud` each).

    ``closer``: ``"higher"`` when a larger value means more alike (the one-sided p of the null
    looks there), ``"lower"`` for a distance. Each measure ``name`` fills the columns of
    :func:`null_columns`.
    """

    function: Callable[[Cloud, Cloud], float]
    closer: str
    description: str


#: Geometry measures by name: adding one is an entry here and its function.
MEASURES: dict[str, Measure] = {
    "rsa": Measure(rsa, "higher", "Spearman correlation of the two clouds' distances"),
    "cka_debiased": Measure(cka_debiased, "higher", "debiased linear CKA (unbiased HSIC)"),
    "procrustes": Measure(procrustes, "lower", "Procrustes disparity, 0 same shape, 1 unrelated"),
    "cka": Measure(cka, "higher", "linear CKA, biased upward by effective rank"),
}

#: Columns each measure (and each Wasserstein distance) fills, in this order.
NULL_SUFFIXES = ("", "_null_mean", "_null_sd", "_z", "_p")


def null_columns(name: str) -> list[str]:
    """``name``, ``name_null_mean``, ``name_null_sd``, ``name_z``, ``name_p``."""
    return [f"{name}{s}" for s in NULL_SUFFIXES]


def against_null(name: str, values: Sequence[float], closer: str) -> dict[str, float]:
    """The observed value (``values[0]``) beside the null (``values[1:]``, one per shift).

    ``z`` = (value - null mean) / null sd; ``p``: one-sided toward ``closer``, from Student's t
    with S - 1 degrees of freedom on ``z / sqrt(1 + 1/S)`` (a new draw against the mean and sd
    of S null draws, exact for a Gaussian null).
    """
    v = np.asarray(values, dtype=np.float64)
    obs, null = float(v[0]), v[1:]
    mean, sd = float(null.mean()), float(null.std(ddof=1))
    z = (obs - mean) / sd if sd > 0 else float("nan")
    t = z / math.sqrt(1 + 1 / null.size)
    p = float(
        student_t.sf(t, null.size - 1) if closer == "higher" else student_t.cdf(t, null.size - 1)
    )
    return dict(zip(null_columns(name), (obs, mean, sd, z, p), strict=True))


# --- persistence diagrams ---------------------------------------------------------------------


def diagrams(
    d: np.ndarray, maxdim: int = 1, backend: str = "giotto", n_threads: int = 1
) -> list[np.ndarray]:
    """Vietoris-Rips diagrams of a distance matrix: one (n_bars, 2) array per dimension.

    ``n_threads`` is used by giotto-ph only; give it the job's cores, never more (threads beyond
    the cores a job holds slow it down many times on a shared node).

    Bars are (birth, death) in distance units. The one infinite H0 bar (the component that
    never dies) is dropped, so every diagram holds finite bars only.
    """
    d = np.asarray(d, dtype=np.float64)
    if backend == "giotto":
        from gph import ripser_parallel

        raw = ripser_parallel(d, metric="precomputed", maxdim=maxdim, n_threads=n_threads)["dgms"]
    elif backend == "ripser":
        from ripser import ripser

        raw = ripser(d, distance_matrix=True, maxdim=maxdim)["dgms"]
    else:
        raise BrainshapeError(f"topology.backend is '{backend}'; use one of {list(BACKENDS)}")
    out = []
    for dgm in raw:
        dgm = np.asarray(dgm, dtype=np.float64).reshape(-1, 2)
        out.append(dgm[np.isfinite(dgm[:, 1])])
    return out


def save_diagrams(path: str | os.PathLike, dgms: Sequence[np.ndarray], **arrays) -> None:
    """Write diagrams (``dgm_0``, ``dgm_1``, ...) and extra arrays as one .npz, atomically."""
    payload = {f"dgm_{k}": np.asarray(g, dtype=np.float64) for k, g in enumerate(dgms)}
    payload.update(arrays)
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **payload)


def load_diagrams(path: str | os.PathLike) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Diagrams and extra arrays of a file written by :func:`save_diagrams`."""
    with np.load(path) as z:
        dims = sorted(int(k.split("_")[1]) for k in z.files if k.startswith("dgm_"))
        dgms = [z[f"dgm_{k}"] for k in dims]
        extra = {k: z[k] for k in z.files if not k.startswith("dgm_")}
    return dgms, extra


def _to_diagonal(dgm: np.ndarray, p: float) -> np.ndarray:
    """L_p distance of each point (b, d) to the diagonal: both coordinates move by (d - b) / 2."""
    scale = 1.0 if math.isinf(p) else 2.0 ** (1.0 / p)
    return (dgm[:, 1] - dgm[:, 0]) / 2 * scale


def _wasserstein_same_birth(a: np.ndarray, b: np.ndarray, q: float, p: float) -> float:
    """Exact q-th power cost when every point of both diagrams has the same birth (Rips H0).

    The points then lie on one line, where |x - y|^q is convex: an optimal matching never
    crosses, so it is an edit-distance alignment of the sorted deaths (match, or send a point
    to the diagonal). Each row of the dynamic programme is a prefix minimum, done with numpy.
    """
    x, y = np.sort(a[:, 1]), np.sort(b[:, 1])
    da = _to_diagonal(a[np.argsort(a[:, 1])], p) ** q
    db = _to_diagonal(b[np.argsort(b[:, 1])], p) ** q
    s = np.concatenate([[0.0], np.cumsum(db)])  # s[j]: b's first j points to the diagonal
    prev = s.copy()
    for i in range(x.size):
        match = prev[:-1] + np.abs(x[i] - y) ** q
        drop = prev + da[i]
        best = np.minimum(drop[1:], match)
        # dp[j] = min(best[j], dp[j - 1] + db[j - 1]) = s[j] + running min of (best - s).
        head = drop[0]
        row = np.concatenate([[head], best]) - s
        prev = s + np.minimum.accumulate(row)
    return float(prev[-1])


def wasserstein(a: np.ndarray, b: np.ndarray, q: float = 1.0, p: float = math.inf) -> float:
    """q-Wasserstein distance between two diagrams with the L_p ground metric.

    Points may be matched to each other or to their projection on the diagonal; the cost of a
    match is the L_p distance raised to ``q``; the result is the q-th root of the cheapest total.
    Exact: diagrams whose points share one birth (every Rips H0 diagram) by dynamic programming
    on the sorted deaths, others as an optimal-transport problem with the diagonal as one extra
    node on each side (network simplex, POT).
    """
    if not q >= 1 or math.isinf(q):
        raise BrainshapeError(f"topology.wasserstein q is {q}; use a finite number >= 1")
    if not p >= 1:
        raise BrainshapeError(f"topology.wasserstein p is {p}; use a number >= 1 or inf")
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    n, m = len(a), len(b)
    if n + m == 0:
        return 0.0
    births = np.concatenate([a[:, 0], b[:, 0]])
    if np.all(births == births[0]):
        return _wasserstein_same_birth(a, b, q, p) ** (1.0 / q)
    import ot

    diff = np.abs(a[:, None, :] - b[None, :, :])
    cross = diff.max(axis=2) if math.isinf(p) else (diff**p).sum(axis=2) ** (1.0 / p)
    cost = np.zeros((n + 1, m + 1))
    cost[:n, :m] = cross**q
    cost[:n, m] = _to_diagonal(a, p) ** q
    cost[n, :m] = _to_diagonal(b, p) ** q
    # The diagonal node holds as much mass as the other side has points.
    mass_a = np.concatenate([np.ones(n), [m]])
    mass_b = np.concatenate([np.ones(m), [n]])
    total = ot.emd2(mass_a, mass_b, cost, numItermax=max(100_000, 50 * (n + m) ** 2))
    return float(max(total, 0.0) ** (1.0 / q))


def _lifetimes(dgm: np.ndarray) -> np.ndarray:
    dgm = np.asarray(dgm, dtype=np.float64).reshape(-1, 2)
    life = dgm[:, 1] - dgm[:, 0]
    return life[life > 0]


def total_persistence(dgm: np.ndarray) -> float:
    """Sum of the bars' lifetimes."""
    return float(_lifetimes(dgm).sum())


def persistent_entropy(dgm: np.ndarray) -> float:
    """Shannon entropy (nats) of the lifetimes divided by their sum; 0 for an empty diagram."""
    life = _lifetimes(dgm)
    if life.size == 0:
        return 0.0
    share = life / life.sum()
    return float(-(share * np.log(share)).sum())


def bar_count(dgm: np.ndarray) -> float:
    """Bars with a positive lifetime."""
    return float(_lifetimes(dgm).size)


def longest_bar(dgm: np.ndarray) -> float:
    """The longest lifetime (0 for an empty diagram)."""
    return float(_lifetimes(dgm).max(initial=0.0))


def _betti_curve(dgm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Filtration values and the number of bars alive just after each, in filtration order."""
    dgm = np.asarray(dgm, dtype=np.float64).reshape(-1, 2)
    kept = dgm[dgm[:, 1] > dgm[:, 0]]
    # +1 at each birth, -1 at each death (deaths first at ties: bars are [b, d)).
    times = np.concatenate([kept[:, 0], kept[:, 1]])
    steps = np.concatenate([np.ones(len(kept)), -np.ones(len(kept))])
    order = np.lexsort((steps, times))
    return times[order], np.cumsum(steps[order])


def betti_peak(dgm: np.ndarray) -> float:
    """The largest number of bars alive at once (peak of the Betti curve)."""
    _, curve = _betti_curve(dgm)
    return float(curve.max(initial=0.0))


def betti_argpeak(dgm: np.ndarray) -> float:
    """The first filtration value where the Betti curve peaks (NaN for an empty diagram)."""
    times, curve = _betti_curve(dgm)
    return float(times[int(curve.argmax())]) if curve.size else float("nan")


#: Diagram summaries by name: each fills ``layer_<name>_h<k>`` and ``brain_<name>_h<k>``.
SUMMARIES: dict[str, Callable[[np.ndarray], float]] = {
    "total_persistence": total_persistence,
    "entropy": persistent_entropy,
    "count": bar_count,
    "max": longest_bar,
    "betti_peak": betti_peak,
    "betti_argpeak": betti_argpeak,
}


def diagram_summaries(dgm: np.ndarray, names: Sequence[str] | None = None) -> dict[str, float]:
    """The summaries ``names`` (default: all of :data:`SUMMARIES`) of one diagram."""
    return {n: SUMMARIES[n](dgm) for n in (SUMMARIES if names is None else names)}


def check_settings(topology: Mapping, targets: str) -> None:
    """Refuse, in one line, settings under which a brain cloud cannot carry the stimulus, and
    measure or summary names that are not registered."""
    emb = topology["embedding"]
    if targets == "roi_mean" and int(emb["dimension"]) < 2:
        raise BrainshapeError(
            f"topology.embedding.dimension is {emb['dimension']}: with fmri.targets roi_mean each "
            "brain cloud would be one column (one number per volume), which has no geometry; "
            "set topology.embedding.dimension to 2 or more (default 4), or fmri.targets: voxels"
        )
    if targets == "roi_mean" and topology["metric"] == "correlation":
        raise BrainshapeError(
            "topology.metric correlation centres each point of an ROI-mean cloud across its "
            "embedding lags, which removes the response level the subjects share; set "
            "topology.metric: euclidean, or fmri.targets: voxels"
        )
    for key, table in (("measures", MEASURES), ("summaries", SUMMARIES)):
        unknown = [n for n in topology[key] if n not in table]
        if unknown:
            raise BrainshapeError(
                f"topology.{key} lists {unknown}, not known; use some of {sorted(table)}"
            )


# --- the stage: brain clouds, layer diagrams, pairings ----------------------------------------


def _cloud_name(key: tuple[str, str, str]) -> str:
    who, roi, hemi = key
    who = who if who == "group" else f"sub-{who}"
    return f"{who}_{roi}_{hemi}"


def _shifted(series: np.ndarray, index: np.ndarray, shift: int) -> np.ndarray:
    """The brain cloud at the landmarks moved ``shift`` points later (circularly)."""
    return series[(index + shift) % len(series)]


def compute_brain(
    fmri_dirs: Sequence[str | os.PathLike],
    time_base: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    metric: str,
    components: int | None,
    embedding: Mapping[str, float],
    maxdim: int,
    backend: str,
    per_subject: bool,
    n_threads: int = 1,
) -> pd.DataFrame:
    """Diagrams of every brain cloud, one ``<who>_<roi>_<hemi>.npz`` each in ``out_dir``.

    The clouds are taken at the landmarks of ``time_base`` (:func:`write_time_base`), which must
    still describe the subjects' runs. Each file holds ``dgm_<k>`` (the cloud's diagrams, in
    units of its median distance), ``scale`` (that median), ``series`` (the whole cloud before
    standardisation, one row per point of the time base: the null's shifted clouds are cut
    from it), ``index`` and ``shifts``. Returns (and writes as ``clouds.parquet``) the list:
    ``cloud``, ``subject``, ``roi``, ``hemisphere``, ``n_points``, ``n_columns``.
    """
    base, index, shifts = read_time_base(time_base)
    fmri_dirs = base_members(fmri_dirs, base)
    if not fmri_dirs:
        raise BrainshapeError(
            f"{time_base} no longer matches the subjects' runs (a replaced derivative with "
            f"another length, or changed trimming?); delete it so that rule topology_timebase "
            "computes it again, with every layer's diagrams"
        )
    subjects = {Path(d).name.removeprefix("sub-"): d for d in fmri_dirs}
    clouds = brain_clouds(subjects, base, embedding=embedding, per_subject=per_subject)
    rows = []
    for key, series in clouds.items():
        cloud = prepare(series[index], metric, components)
        name = _cloud_name(key)
        save_diagrams(
            Path(out_dir) / f"{name}.npz",
            diagrams(cloud.distances, maxdim, backend, n_threads),
            scale=np.float64(cloud.scale),
            series=series.astype(np.float32),
            index=index,
            shifts=np.asarray(shifts, dtype=np.int64),
        )
        rows.append((name, key[0], key[1], key[2], len(index), series.shape[1]))
    table = pd.DataFrame(
        rows, columns=["cloud", "subject", "roi", "hemisphere", "n_points", "n_columns"]
    )
    save_parquet(Path(out_dir) / "clouds.parquet", table)
    return table


def compute_layers(
    features: Mapping[str, np.ndarray],
    words: pd.DataFrame,
    time_base: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    metric: str,
    components: int | None,
    maxdim: int,
    backend: str,
    window: float = 3,
    n_threads: int = 1,
) -> int:
    """Diagrams of every layer cloud, ``layer-<l>.npz`` in ``out_dir``; returns the layer count.

    The clouds are the layers' features Lanczos-resampled at the landmark volumes of
    ``time_base`` and prepared as every cloud is (:func:`prepare`); nothing of the brain data
    enters, so only a change of the time base, the features or the settings recomputes them.
    Each file holds ``dgm_<k>``, ``index`` and ``scale`` (the median distance the diagrams are
    in units of).
    """
    base, index, _ = read_time_base(time_base)
    resamplers = landmark_resamplers(words, base, index, window)
    n_layers = features[base.stories()[0]].shape[0]
    for layer in range(n_layers):
        # One BLAS thread around the persistent homology: BLAS threads alternating with
        # giotto-ph's threads on the same cores made a demo job 3 to 20 times slower
        # (docs/benchmarks.md).
        with limit_threads(1, blas_only=True):
            cloud = prepare(layer_cloud(features, resamplers, layer), metric, components)
        save_diagrams(
            Path(out_dir) / f"layer-{layer}.npz",
            diagrams(cloud.distances, maxdim, backend, n_threads),
            index=index,
            scale=np.float64(cloud.scale),
        )
    return n_layers


def _same_landmarks(found: np.ndarray, expected: np.ndarray, path: Path, rule: str) -> None:
    if found.shape != expected.shape or not np.array_equal(found, expected):
        raise BrainshapeError(
            f"{path} was computed at other landmark volumes than the dataset's time base; rerun "
            f"rule {rule} (snakemake -R {rule})"
        )


@dataclass
class _Brain:
    """One brain cloud of ``topology_brain``: its row of ``clouds.parquet``, its diagrams and its
    whole series (the shifted clouds of the null are cut from it)."""

    info: object
    dgms: list[np.ndarray]
    series: np.ndarray


def _brains(brain_dir: Path, index: np.ndarray, shifts: Sequence[int]) -> Iterator[_Brain]:
    """Every brain cloud of ``brain_dir``, one at a time, checked against the time base."""
    for row in pd.read_parquet(brain_dir / "clouds.parquet").itertuples():
        path = brain_dir / f"{row.cloud}.npz"
        dgms, extra = load_diagrams(path)
        _same_landmarks(extra["index"], index, path, "topology_brain")
        _same_landmarks(extra["shifts"], np.asarray(shifts), path, "topology_brain")
        yield _Brain(info=row, dgms=dgms, series=extra["series"].astype(np.float64))


def _layers(layers_dir, features, resamplers, index, metric, components, summary_names) -> list:
    """Every layer: (layer, prepared cloud, diagrams, ``layer_<summary>_h<k>`` values)."""
    out = []
    for layer in range(next(iter(features.values())).shape[0]):
        path = Path(layers_dir) / f"layer-{layer}.npz"
        if not path.is_file():
            raise BrainshapeError(f"{path} is missing; rerun rule layer_diagrams for this variant")
        dgms, extra = load_diagrams(path)
        _same_landmarks(extra["index"], index, path, "layer_diagrams")
        cloud = prepare(layer_cloud(features, resamplers, layer), metric, components)
        values = {
            f"layer_{k}_h{dim}": v
            for dim, g in enumerate(dgms)
            for k, v in diagram_summaries(g, summary_names).items()
        }
        out.append((layer, cloud, dgms, values))
    return out


def _tag(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:g}"


def wasserstein_column(q: float, p: float, dim: int) -> str:
    """Column name of a Wasserstein distance: ``wasserstein_q<q>_p<p>_h<dim>``."""
    return f"wasserstein_q{_tag(q)}_p{_tag(p)}_h{dim}"


def _pair_row(layer, brain: _Brain, versions: Sequence[Cloud], orders, measures) -> dict:
    """Wasserstein distances and geometry (with its null) of one layer against one brain cloud.

    ``versions[0]`` is the brain cloud at the landmarks, the others its shifted copies.
    """
    number, cloud, ldgms, lsum = layer
    row: dict = {"layer": int(number)}
    row.update({k: getattr(brain.info, k) for k in ("subject", "roi", "hemisphere")})
    for o in orders:
        for dim, (g, h) in enumerate(zip(ldgms, brain.dgms, strict=True)):
            row[wasserstein_column(o["q"], o["p"], dim)] = wasserstein(g, h, o["q"], o["p"])
    row.update(lsum)
    for name in measures:
        m = MEASURES[name]
        row.update(against_null(name, [m.function(cloud, v) for v in versions], m.closer))
    return row


def pair_variant(
    layers_dir: str | os.PathLike,
    brain_dir: str | os.PathLike,
    features: Mapping[str, np.ndarray],
    words: pd.DataFrame,
    time_base: str | os.PathLike,
    *,
    orders: Sequence[Mapping[str, float]],
    metric: str,
    components: int | None,
    measures: Sequence[str],
    summaries: Sequence[str],
    window: float = 3,
) -> pd.DataFrame:
    """One row per (layer, brain cloud): Wasserstein distances, diagram summaries, geometry.

    ``orders`` lists ``{"q": q, "p": p}`` pairs; ``measures`` and ``summaries`` name entries of
    :data:`MEASURES` and :data:`SUMMARIES`. Columns: ``layer``, ``subject``, ``roi``,
    ``hemisphere``; ``wasserstein_q<q>_p<p>_h<k>`` per order and dimension (between the two
    clouds' diagrams, which do not know which volume is which: no time-shift null can move
    them); ``layer_<summary>_h<k>``; ``brain_<summary>_h<k>``; and the five columns of
    :func:`null_columns` per measure (the layer cloud against the brain cloud and against each
    shifted copy). Each layer cloud is rebuilt from the features (a resampling, cheap next to
    its diagram).
    """
    base, index, shifts = read_time_base(time_base)
    unknown = [n for n in measures if n not in MEASURES]
    if unknown:
        raise BrainshapeError(
            f"topology.measures lists {unknown}, not known; use some of {sorted(MEASURES)}"
        )
    resamplers = landmark_resamplers(words, base, index, window)
    layers = _layers(layers_dir, features, resamplers, index, metric, components, summaries)
    rows = []
    for brain in _brains(Path(brain_dir), index, shifts):
        versions = [
            prepare(_shifted(brain.series, index, s), metric, components) for s in [0, *shifts]
        ]
        bsum = {
            f"brain_{k}_h{dim}": v
            for dim, g in enumerate(brain.dgms)
            for k, v in diagram_summaries(g, summaries).items()
        }
        for layer in layers:
            row = _pair_row(layer, brain, versions, orders, measures)
            row.update(bsum)
            rows.append(row)
    table = pd.DataFrame(rows)
    front = ["layer", "subject", "roi", "hemisphere"]
    wcols = [c for c in table.columns if c.startswith("wasserstein_")]
    summ = [c for c in table.columns if c.startswith(("layer_", "brain_"))]
    rest = [c for c in table.columns if c not in front + wcols + summ]
    table = table[front + wcols + summ + rest]
    table["layer"] = table["layer"].astype("int64")
    return table


# --- figure -----------------------------------------------------------------------------------


def plot_agreement(
    table: pd.DataFrame,
    model: str,
    path: str | os.PathLike,
    dataset: str = "",
    measures: Sequence[str] = ("rsa", "cka_debiased"),
) -> None:
    """Agreement of each layer's cloud with each group brain cloud, beside its null.

    One row per ROI x hemisphere, one column per measure; per variant a line of the measure by
    layer and a band over the null (the time-shifted brain clouds: mean +- 1.96 sd). A marker
    shows layers whose one-sided p is below 0.05 / the number of layers (Bonferroni).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = table[(table["model"] == model) & (table["subject"] == "group")]
    if data.empty:
        raise BrainshapeError(f"no rows of model '{model}' in the topology table; is it selected?")
    sites = data[["roi", "hemisphere"]].drop_duplicates().sort_values(["roi", "hemisphere"])
    fig, axes = plt.subplots(
        len(sites), len(measures), figsize=(3.6 * len(measures) + 1, 1.7 * len(sites) + 0.9),
        sharex=True, squeeze=False,
    )  # fmt: skip
    for r, (roi, hemi) in enumerate(sites.itertuples(index=False)):
        part = data[(data["roi"] == roi) & (data["hemisphere"] == hemi)]
        for c, name in enumerate(measures):
            ax = axes[r, c]
            for k, (variant, rows) in enumerate(part.groupby("variant", sort=True)):
                rows = rows.sort_values("layer")
                band = 1.96 * rows[f"{name}_null_sd"]
                mean = rows[f"{name}_null_mean"]
                ax.fill_between(rows["layer"], mean - band, mean + band, color=f"C{k}", alpha=0.15)
                ax.plot(rows["layer"], rows[name], color=f"C{k}", marker="o", ms=2.5, label=variant)
                hit = rows[rows[f"{name}_p"] < 0.05 / len(rows)]
                ax.plot(hit["layer"], hit[name], "k*", ms=6, label="p < 0.05 / layers")
            ax.set_title(f"{roi} {hemi}: {name}", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("layer")
    handles: dict = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="upper right", fontsize=8)
    title = f"{model}: layer and brain clouds, with the time-shifted null"
    fig.suptitle(title + (f" ({dataset})" if dataset else ""), x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.96 - 0.25 / len(sites)))
    with atomic_path(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
