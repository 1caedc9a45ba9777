"""Persistence diagrams of clouds, the Wasserstein distances between them, and their summaries.

Vietoris-Rips diagrams (H0, H1, optionally H2) of a prepared cloud's distances, computed once per
cloud and stored (:func:`save_diagrams`); q-Wasserstein distances between a layer's and a brain
cloud's diagrams; and summaries of one diagram (:data:`SUMMARIES`, a registry).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from brainshape.errors import BrainshapeError
from brainshape.io import atomic_path

#: Persistent-homology libraries; "giotto" (giotto-ph) is the default, chosen by
#: benchmarks/topology.py (docs/benchmarks.md), "ripser" (ripser.py) the alternative.
BACKENDS = ("giotto", "ripser")


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
