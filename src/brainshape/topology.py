"""The shape of representations: point clouds, persistence diagrams, distances, geometry.

A *point cloud* here is a set of time points (fMRI volumes) seen through one representation:
the rows of a model layer's features resampled at the volume times, or the rows of a brain ROI x
hemisphere's response patterns at the same volumes. Both share one time base (the kept volumes of
every story, in sorted story order), so point ``i`` of a layer cloud and point ``i`` of a brain
cloud are the same moment of the same story. The brain lags the stimulus by the haemodynamic
delay: brain volume ``t`` is paired with the stimulus at volume ``t - delay``.

From each cloud: a Vietoris-Rips persistence diagram (H0, H1, optionally H2) of its distance
matrix (correlation distance by default), computed once per cloud and stored, and summaries of
it. Between a layer cloud and a brain cloud: q-Wasserstein distances between their diagrams per
homology dimension, Procrustes disparity, RSA (Spearman between the two distance matrices) and
linear CKA.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.distance import pdist, squareform
from scipy.stats import rankdata, spearmanr

from brainshape.encoding import lanczos_matrix, tr_times
from brainshape.errors import BrainshapeError
from brainshape.io import atomic_path, save_json
from brainshape.stimuli import word_times
from brainshape.threads import limit_threads

#: Distances between the points of a cloud.
METRICS = ("correlation", "euclidean")

#: Persistent-homology libraries; "giotto" (giotto-ph) is the default, chosen by
#: benchmarks/topology.py (docs/benchmarks.md), "ripser" (ripser.py) the alternative.
BACKENDS = ("giotto", "ripser")

#: Geometric measures beside the diagrams, one column each in the topology table.
GEOMETRY = ("procrustes", "rsa", "cka")


# --- clouds -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeBase:
    """The shared time base: for each story (sorted), its run and the brain delay in volumes.

    ``runs[story]`` holds ``n_trs``, ``trim_start``, ``trim_end`` and ``tr`` (seconds) as in the
    fMRI stage's ``runs.json``. A story contributes the kept volumes ``[trim_start + delay,
    n_trs - trim_end)`` on the brain side and the stimulus ``delay`` volumes earlier on the model
    side.
    """

    runs: Mapping[str, Mapping[str, float]]
    delay: int = 2

    def stories(self) -> list[str]:
        return sorted(self.runs)

    def n_points(self) -> int:
        return sum(self._kept(s) - self.delay for s in self.stories())

    def _kept(self, story: str) -> int:
        r = self.runs[story]
        return int(r["n_trs"]) - int(r["trim_start"]) - int(r["trim_end"])

    def check(self, where: str) -> None:
        if self.delay < 0:
            raise BrainshapeError(f"topology.delay is {self.delay}; use a whole number >= 0")
        for story in self.stories():
            if self._kept(story) - self.delay < 1:
                raise BrainshapeError(
                    f"{where}: story {story} keeps {self._kept(story)} volumes, no more than "
                    f"topology.delay = {self.delay}; lower topology.delay"
                )

    def brain_rows(self, story: str) -> slice:
        """Rows of a story's kept-volume array that enter the cloud."""
        return slice(self.delay, self._kept(story))

    def model_times(self, story: str) -> np.ndarray:
        """Seconds of the stimulus paired with each brain row of ``story``."""
        r = self.runs[story]
        times = tr_times(int(r["n_trs"]), float(r["tr"]))
        start = int(r["trim_start"])
        return times[start : start + self._kept(story) - self.delay]


def read_runs(fmri_dir: str | os.PathLike) -> dict[str, dict]:
    """``runs.json`` of one subject's fMRI folder."""
    path = Path(fmri_dir) / "runs.json"
    if not path.is_file():
        raise BrainshapeError(f"{path} is missing; run the fmri rule for this subject first")
    return json.loads(path.read_text())


def shared_time_base(fmri_dirs: Sequence[str | os.PathLike], delay: int) -> TimeBase:
    """The time base of a dataset: every subject must have the same runs (stories, lengths)."""
    if not fmri_dirs:
        raise BrainshapeError("no fMRI subjects for the brain clouds; list subjects in the config")
    first = read_runs(fmri_dirs[0])
    for d in fmri_dirs[1:]:
        runs = read_runs(d)
        if runs != first:
            raise BrainshapeError(
                f"{Path(d) / 'runs.json'} differs from {Path(fmri_dirs[0]) / 'runs.json'}: group "
                "brain clouds need every subject to have the same stories, run lengths, trimming "
                "and TR; fix the fmri settings or split the subjects into datasets"
            )
    base = TimeBase(runs=first, delay=int(delay))
    base.check(str(Path(fmri_dirs[0]) / "runs.json"))
    return base


def _resamplers(
    words: Mapping[str, np.ndarray], base: TimeBase, window: float
) -> dict[str, np.ndarray]:
    """Per story, the Lanczos weights (n_paired_volumes, n_words) of the time base."""
    out = {}
    for story in base.stories():
        if story not in words:
            raise BrainshapeError(
                f"story {story} has fMRI but no words; the words table must hold every story of "
                "the dataset"
            )
        run = base.runs[story]
        # The cut-off comes from the whole run's volume spacing; only the paired rows are kept.
        weights = lanczos_matrix(
            words[story], tr_times(int(run["n_trs"]), float(run["tr"])), window=window
        )
        start = int(run["trim_start"])
        out[story] = weights[start : start + base.model_times(story).size]
    return out


def layer_cloud(
    features: Mapping[str, np.ndarray],
    resamplers: Mapping[str, np.ndarray],
    layer: int,
) -> np.ndarray:
    """One layer's cloud (n_points, hidden) float64, stories in time-base order.

    ``features[story]`` is (n_layers + 1, n_words, hidden) (memory-mapped is fine: only
    ``layer`` is read); ``resamplers`` come from :func:`_resamplers`.
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


def layer_clouds(
    features: Mapping[str, np.ndarray],
    words: Mapping[str, np.ndarray],
    base: TimeBase,
    window: float = 3,
) -> np.ndarray:
    """Every layer's cloud: (n_layers + 1, n_points, hidden) float32.

    ``features[story]`` is (n_layers + 1, n_words, hidden) and ``words[story]`` the word times
    (seconds); each layer is Lanczos-resampled at the paired stimulus times of the time base.
    """
    resamplers = _resamplers(words, base, window)
    n_layers = np.asarray(features[base.stories()[0]]).shape[0]
    return np.stack(
        [layer_cloud(features, resamplers, k).astype(np.float32) for k in range(n_layers)]
    )


def brain_clouds(
    subjects: Mapping[str, str | os.PathLike], base: TimeBase, per_subject: bool = False
) -> dict[tuple[str, str, str], np.ndarray]:
    """Brain clouds keyed by (subject or "group", roi, hemisphere): (n_points, n_columns).

    A subject's cloud of an ROI x hemisphere holds its targets of that ROI (the ROI mean, or its
    voxels with ``fmri.targets: voxels``). The group cloud places the subjects' columns side by
    side, so each point is the response of every subject at that moment. Per-subject clouds of a
    single ROI-mean column are one-dimensional and cannot give correlation distances: they need
    ``fmri.targets: voxels``.
    """
    per: dict[str, dict[tuple[str, str], np.ndarray]] = {}
    for sub, directory in subjects.items():
        directory = Path(directory)
        targets = pd.read_parquet(directory / "targets.parquet")
        data = []
        for story in base.stories():
            path = directory / f"{story}.npy"
            if not path.is_file():
                raise BrainshapeError(f"{path} is missing; rerun the fmri rule for sub-{sub}")
            data.append(np.load(path)[base.brain_rows(story)])
        bold = np.concatenate(data, axis=0)
        per[sub] = {}
        for (roi, hemi), rows in targets.groupby(["roi", "hemisphere"], sort=True):
            per[sub][(str(roi), str(hemi))] = bold[:, rows["target"].to_numpy()]
    keys = sorted(set.intersection(*(set(p) for p in per.values())))
    clouds: dict[tuple[str, str, str], np.ndarray] = {}
    for roi, hemi in keys:
        clouds[("group", roi, hemi)] = np.concatenate(
            [per[s][(roi, hemi)] for s in sorted(per)], axis=1
        )
        if per_subject:
            for s in sorted(per):
                cloud = per[s][(roi, hemi)]
                if cloud.shape[1] < 2:
                    raise BrainshapeError(
                        f"topology.per_subject is true but sub-{s}'s {roi} {hemi} cloud has one "
                        "column (an ROI mean): set fmri.targets: voxels, or per_subject: false"
                    )
                clouds[(s, roi, hemi)] = cloud
    return clouds


def landmarks(n_points: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n_points``, drawn with a fixed seed.

    The same indices serve every cloud of a dataset, so paired clouds keep paired points.
    """
    if n_points <= max_points:
        return np.arange(n_points)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_points, size=max_points, replace=False))


def distances(cloud: np.ndarray, metric: str = "correlation") -> np.ndarray:
    """Square distance matrix (n_points, n_points) float64 between the rows of ``cloud``.

    ``correlation``: 1 - Pearson r between two points' vectors (a constant point has distance 1
    to every other); ``euclidean``: Euclidean distance.
    """
    if metric not in METRICS:
        raise BrainshapeError(f"topology.metric is '{metric}'; use one of {list(METRICS)}")
    x = np.asarray(cloud, dtype=np.float64)
    if metric == "correlation":
        if x.shape[1] < 2:
            raise BrainshapeError(
                f"a cloud of {x.shape[1]}-dimensional points has no correlation distance; use "
                "topology.metric: euclidean or more columns"
            )
        x = x - x.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
        d = 1.0 - x @ x.T
        np.fill_diagonal(d, 0.0)
        return np.clip((d + d.T) / 2, 0.0, 2.0)
    return squareform(pdist(x, "euclidean"))


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


def summaries(dgm: np.ndarray) -> dict[str, float]:
    """Scalar summaries of one diagram of finite bars.

    ``total_persistence``: sum of lifetimes; ``entropy``: persistent entropy (Shannon entropy
    of lifetimes / their sum, nats); ``count``; ``max``: longest lifetime; ``betti_peak``:
    the largest number of bars alive at once (peak of the Betti curve) and ``betti_argpeak``
    the first filtration value where it is reached.
    """
    dgm = np.asarray(dgm, dtype=np.float64).reshape(-1, 2)
    life = dgm[:, 1] - dgm[:, 0]
    life = life[life > 0]
    out = {"total_persistence": 0.0, "entropy": 0.0, "count": 0.0, "max": 0.0}
    out.update({"betti_peak": 0.0, "betti_argpeak": float("nan")})
    if life.size == 0:
        return out
    total = float(life.sum())
    share = life / total
    kept = dgm[dgm[:, 1] > dgm[:, 0]]
    # Betti curve: +1 at each birth, -1 at each death (deaths first at ties: bars are [b, d)).
    times = np.concatenate([kept[:, 0], kept[:, 1]])
    steps = np.concatenate([np.ones(len(kept)), -np.ones(len(kept))])
    order = np.lexsort((steps, times))
    curve = np.cumsum(steps[order])
    peak = int(curve.argmax())
    out.update(
        total_persistence=total,
        entropy=float(-(share * np.log(share)).sum()),
        count=float(life.size),
        max=float(life.max()),
        betti_peak=float(curve[peak]),
        betti_argpeak=float(times[order][peak]),
    )
    return out


# --- geometry ---------------------------------------------------------------------------------


def _reduce(x: np.ndarray) -> np.ndarray:
    """Column-centred cloud in at most n_points coordinates with the same Gram matrix."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    if x.shape[1] <= x.shape[0]:
        return x
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return u * s


def procrustes(x: np.ndarray, y: np.ndarray) -> float:
    """Procrustes disparity of two paired clouds (n_points, d_x) and (n_points, d_y).

    Both are centred and scaled to unit Frobenius norm, the narrower one padded with zero
    columns; the disparity is the sum of squared differences left after the best rotation and
    scaling of ``y`` onto ``x`` (as ``scipy.spatial.procrustes``): ``1 - ||x^T y||_*^2``.
    """
    x, y = _reduce(x), _reduce(y)
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if nx == 0 or ny == 0:
        return float("nan")
    nuclear = np.linalg.svd((x / nx).T @ (y / ny), compute_uv=False).sum()
    return float(max(0.0, 1.0 - nuclear**2))


def rsa(dx: np.ndarray, dy: np.ndarray) -> float:
    """Spearman correlation between the upper triangles of two distance matrices."""
    iu = np.triu_indices(dx.shape[0], k=1)
    return float(spearmanr(dx[iu], dy[iu]).statistic)


def _ranks(d: np.ndarray) -> np.ndarray:
    """Standardised ranks of a distance matrix's upper triangle: RSA is then a dot product."""
    r = rankdata(d[np.triu_indices(d.shape[0], k=1)])
    r = r - r.mean()
    return r / np.linalg.norm(r)


def cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of paired clouds: ||x^T y||_F^2 / (||x^T x||_F ||y^T y||_F), columns centred."""
    x, y = _reduce(x), _reduce(y)
    num = np.linalg.norm(x.T @ y) ** 2
    den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(num / den) if den > 0 else float("nan")


# --- the stage: brain clouds, layer clouds, pairings ------------------------------------------


def _cloud_name(key: tuple[str, str, str]) -> str:
    who, roi, hemi = key
    who = who if who == "group" else f"sub-{who}"
    return f"{who}_{roi}_{hemi}"


def write_time_base(
    fmri_dirs: Sequence[str | os.PathLike],
    path: str | os.PathLike,
    *,
    delay: int,
    max_points: int,
    seed: int,
) -> tuple[TimeBase, np.ndarray]:
    """The dataset's time base and its landmark volumes, written to ``path`` (JSON).

    Every cloud of the dataset, brain or layer, is taken at these landmarks, so diagrams of
    both sides are computed once and paired freely. The file depends on the subjects' runs
    (stories, lengths, trimming, TR) only, not on their data: a replaced derivative leaves it,
    and with it every layer's diagrams, as it is.
    """
    base = shared_time_base(fmri_dirs, delay)
    index = landmarks(base.n_points(), max_points, seed)
    save_json(path, {"runs": dict(base.runs), "delay": int(delay), "index": index.tolist()})
    return base, index


def read_time_base(path: str | os.PathLike) -> tuple[TimeBase, np.ndarray]:
    """The time base and landmark volumes of :func:`write_time_base`."""
    data = json.loads(Path(path).read_text())
    return TimeBase(runs=data["runs"], delay=int(data["delay"])), np.asarray(
        data["index"], dtype=np.int64
    )


def compute_brain(
    fmri_dirs: Sequence[str | os.PathLike],
    time_base: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    metric: str,
    maxdim: int,
    backend: str,
    per_subject: bool,
    n_threads: int = 1,
) -> pd.DataFrame:
    """Diagrams of every brain cloud, one ``<who>_<roi>_<hemi>.npz`` each in ``out_dir``.

    The clouds are taken at the landmarks of ``time_base`` (:func:`write_time_base`), which must
    still describe the subjects' runs. Each file holds ``dgm_<k>``, the landmarked ``cloud`` and
    its ``index`` (points kept). Returns (and writes as ``clouds.parquet``) the list: ``cloud``,
    ``subject``, ``roi``, ``hemisphere``, ``n_points``, ``n_columns``.
    """
    base, index = read_time_base(time_base)
    current = shared_time_base(fmri_dirs, base.delay)
    if dict(current.runs) != dict(base.runs):
        raise BrainshapeError(
            f"{time_base} no longer matches the subjects' runs (a replaced derivative with "
            f"another length, or changed trimming?); delete it so that rule topology_timebase "
            "computes it again, with every layer's diagrams"
        )
    subjects = {Path(d).name.removeprefix("sub-"): d for d in fmri_dirs}
    clouds = brain_clouds(subjects, base, per_subject=per_subject)
    rows = []
    for key, cloud in clouds.items():
        pts = cloud[index]
        dgms = diagrams(distances(pts, metric), maxdim, backend, n_threads)
        name = _cloud_name(key)
        save_diagrams(Path(out_dir) / f"{name}.npz", dgms, cloud=pts, index=index)
        rows.append((name, key[0], key[1], key[2], len(pts), pts.shape[1]))
    table = pd.DataFrame(
        rows, columns=["cloud", "subject", "roi", "hemisphere", "n_points", "n_columns"]
    )
    with atomic_path(Path(out_dir) / "clouds.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    return table


def _landmark_resamplers(
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


def compute_layers(
    features: Mapping[str, np.ndarray],
    words: pd.DataFrame,
    time_base: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    metric: str,
    maxdim: int,
    backend: str,
    window: float = 3,
    n_threads: int = 1,
) -> int:
    """Diagrams of every layer cloud, ``layer-<l>.npz`` in ``out_dir``; returns the layer count.

    The clouds are the layers' features Lanczos-resampled at the landmark volumes of
    ``time_base``; nothing of the brain data enters, so only a change of the time base, the
    features or the settings recomputes them.
    """
    base, index = read_time_base(time_base)
    resamplers = _landmark_resamplers(words, base, index, window)
    n_layers = features[base.stories()[0]].shape[0]
    for layer in range(n_layers):
        # One BLAS thread around the persistent homology: BLAS threads alternating with
        # giotto-ph's threads on the same cores made a demo job 3 to 20 times slower
        # (docs/benchmarks.md).
        with limit_threads(1, blas_only=True):
            d = distances(layer_cloud(features, resamplers, layer), metric)
        save_diagrams(
            Path(out_dir) / f"layer-{layer}.npz",
            diagrams(d, maxdim, backend, n_threads),
            index=index,
        )
    return n_layers


def _load_brains(brain_dir: Path, index: np.ndarray) -> dict[str, tuple]:
    """Every brain cloud of ``brain_dir``: its ``clouds.parquet`` row, diagrams and landmarked
    points, each checked to be taken at the time base's landmarks ``index``."""
    brains = {}
    for row in pd.read_parquet(brain_dir / "clouds.parquet").itertuples():
        path = brain_dir / f"{row.cloud}.npz"
        dgms, extra = load_diagrams(path)
        _same_landmarks(extra["index"], index, path, "topology_brain")
        brains[row.cloud] = (row, dgms, extra["cloud"])
    return brains


def _geometry(
    features: Mapping[str, np.ndarray],
    words: pd.DataFrame,
    base: TimeBase,
    index: np.ndarray,
    brains: Mapping[str, tuple],
    *,
    metric: str,
    window: float,
) -> pd.DataFrame:
    """Procrustes, RSA and CKA of every layer cloud against every brain cloud (``_load_brains``).

    Columns ``layer``, ``subject``, ``roi``, ``hemisphere``, ``procrustes``, ``rsa``, ``cka``.
    Each layer cloud is rebuilt from the features (a resampling, cheap next to its diagram).
    """
    # Reduced once here (and each layer once below), not once per pair.
    brain = [
        (info, _reduce(pts), _ranks(distances(pts, metric))) for info, _, pts in brains.values()
    ]
    resamplers = _landmark_resamplers(words, base, index, window)
    rows = []
    for layer in range(features[base.stories()[0]].shape[0]):
        pts = layer_cloud(features, resamplers, layer)
        ranks = _ranks(distances(pts, metric))
        pts = _reduce(pts)
        for info, bcloud, bd in brain:
            rows.append(
                {
                    "layer": layer,
                    "subject": info.subject,
                    "roi": info.roi,
                    "hemisphere": info.hemisphere,
                    "procrustes": procrustes(pts, bcloud),
                    "rsa": float(ranks @ bd),
                    "cka": cka(pts, bcloud),
                }
            )
    table = pd.DataFrame(rows)
    table["layer"] = table["layer"].astype("int64")
    return table


def _same_landmarks(found: np.ndarray, expected: np.ndarray, path: Path, rule: str) -> None:
    if found.shape != expected.shape or not np.array_equal(found, expected):
        raise BrainshapeError(
            f"{path} was computed at other landmark volumes than the dataset's time base; rerun "
            f"rule {rule} (snakemake -R {rule})"
        )


def _tag(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:g}"


def wasserstein_column(q: float, p: float, dim: int) -> str:
    """Column name of a Wasserstein distance: ``wasserstein_q<q>_p<p>_h<dim>``."""
    return f"wasserstein_q{_tag(q)}_p{_tag(p)}_h{dim}"


def pair_variant(
    layers_dir: str | os.PathLike,
    brain_dir: str | os.PathLike,
    features: Mapping[str, np.ndarray],
    words: pd.DataFrame,
    time_base: str | os.PathLike,
    *,
    orders: Sequence[Mapping[str, float]],
    metric: str,
    window: float = 3,
) -> pd.DataFrame:
    """One row per (layer, brain cloud): Wasserstein distances, diagram summaries, geometry.

    ``orders`` lists ``{"q": q, "p": p}`` pairs. Columns: ``layer``, ``subject``, ``roi``,
    ``hemisphere``, ``wasserstein_q<q>_p<p>_h<k>`` per order and dimension, ``layer_<summary>_h<k>``
    and ``brain_<summary>_h<k>`` (see :func:`summaries`), then ``procrustes``, ``rsa``, ``cka``
    (:func:`_geometry`).
    """
    layers_dir = Path(layers_dir)
    base, index = read_time_base(time_base)
    brains = _load_brains(Path(brain_dir), index)
    shapes = _geometry(features, words, base, index, brains, metric=metric, window=window)
    rows = []
    for layer in sorted(shapes["layer"].unique()):
        path = layers_dir / f"layer-{layer}.npz"
        if not path.is_file():
            raise BrainshapeError(f"{path} is missing; rerun rule layer_diagrams for this variant")
        ldgms, extra = load_diagrams(path)
        _same_landmarks(extra["index"], index, path, "layer_diagrams")
        lsum = {
            f"layer_{k}_h{dim}": v for dim, g in enumerate(ldgms) for k, v in summaries(g).items()
        }
        for info, bdgms, _ in brains.values():
            row = {
                "layer": int(layer),
                "subject": info.subject,
                "roi": info.roi,
                "hemisphere": info.hemisphere,
            }
            for o in orders:
                for dim, (g, h) in enumerate(zip(ldgms, bdgms, strict=True)):
                    row[wasserstein_column(o["q"], o["p"], dim)] = wasserstein(g, h, o["q"], o["p"])
            row.update(lsum)
            for dim, g in enumerate(bdgms):
                row.update({f"brain_{k}_h{dim}": v for k, v in summaries(g).items()})
            rows.append(row)
    table = pd.DataFrame(rows)
    table = table.merge(shapes, on=["layer", "subject", "roi", "hemisphere"], how="left")
    table["layer"] = table["layer"].astype("int64")
    return table
