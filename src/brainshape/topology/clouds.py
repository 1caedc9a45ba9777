"""Point clouds: a model layer's features and an ROI's response at the volumes of the time base.

A *point cloud* here is a set of time points (fMRI volumes) seen through one representation:
the rows of a model layer's features resampled at the volume times, or a brain ROI x
hemisphere's response at the same volumes (:mod:`brainshape.topology.timebase`).

Brain clouds carry the response the subjects share. With ROI-mean targets a cloud is the
group-average time course of the ROI x hemisphere, delay-embedded (its value now and
``dimension - 1`` times ``lag_s`` seconds earlier), so it has a geometry; with voxel targets it
is the group-average response of the voxels every subject has (the intersection of their
masks). Per-subject clouds (optional) are each subject's own series, embedded the same way, or
its own voxels.

Every cloud is standardised per column over its volumes (optionally reduced to its top
``components`` principal components), its distances (Euclidean, or ``sqrt(2 (1 - r))`` for
correlation) are divided by their median, so diagrams and distances compare shapes, not scales
(:func:`prepare`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from brainshape.clock import kept_rows, volume_times
from brainshape.encoding import lanczos_matrix
from brainshape.errors import BrainshapeError
from brainshape.stimuli import word_times
from brainshape.subjects import read_subject
from brainshape.topology.timebase import TimeBase

#: Distances between the points of a (standardised) cloud.
METRICS = ("euclidean", "correlation")


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


def time_base_resamplers(
    words: pd.DataFrame, base: TimeBase, window: float
) -> dict[str, np.ndarray]:
    """Per story, the Lanczos weights of every point of the time base (n_points_story, n_words):
    with :func:`layer_cloud`, a layer's cloud on the whole time base (for its autocorrelation)."""
    return _resamplers(word_times(words), base, window)


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


def hsic_grams(k: np.ndarray, m: np.ndarray) -> float:
    """Unbiased HSIC of two n x n linear kernels, in O(n^2) (the estimator of
    :func:`brainshape.topology.measures.hsic_unbiased`)."""
    n = len(k)
    dk, dl = np.diagonal(k), np.diagonal(m)
    sk, sl = k.sum(axis=1) - dk, m.sum(axis=1) - dl  # K~ 1 and L~ 1
    trace = float(np.einsum("ij,ij->", k, m) - dk @ dl)  # tr(K~ L~)
    return (trace + sk.sum() * sl.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (sk @ sl)) / (
        n * (n - 3)
    )


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
        from scipy.stats import rankdata  # here: scipy.stats takes ~0.7 s to import

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
        return hsic_grams(self.gram, self.gram)


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
