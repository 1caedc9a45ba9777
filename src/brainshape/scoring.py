"""Metrics and statistics beside the Pearson r of an encoding model.

- ``pearson``: Pearson r column by column, 0 where a column has no variance.
- ``gaussian_mutual_information``: the information (bits) a prediction carries about the data
  if both are jointly Gaussian, ``-1/2 log2(1 - r^2)``; a monotone transform of r, comparable
  across studies that report information rather than correlation.
- ``fdr``: Benjamini-Hochberg q-values (scipy's ``false_discovery_control``).
- ``permutation_p_values`` / ``permutation_p_value``: p-values of statistics against their
  permutation null (per column, or one statistic).
- ``segment_identification``: can the predicted response of a held-out segment of TRs pick out
  the measured one among all segments? Sensitivity (hit rate of the top match), specificity
  (share of wrong candidates ranked below the right one) and invariance (how stable the
  identifications are when the targets are bootstrap-resampled).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import false_discovery_control

from brainshape.errors import BrainshapeError

METRICS = ("r", "mi", "segment_identification")


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between matching columns of two (n, k) arrays: (k,).

    A column that is exactly constant in either array has no defined correlation and gets 0,
    also when rounding in its mean would leave a tiny spurious variance.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ac = a - a.mean(axis=0)
    bc = b - b.mean(axis=0)
    denom = np.sqrt((ac**2).sum(axis=0) * (bc**2).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (ac * bc).sum(axis=0) / denom
    flat = (a.max(axis=0) == a.min(axis=0)) | (b.max(axis=0) == b.min(axis=0))
    r[flat | ~(denom > 0)] = 0.0
    return r


def gaussian_mutual_information(r: np.ndarray) -> np.ndarray:
    """Mutual information in bits for correlation ``r`` under a bivariate Gaussian.

    Negative correlations carry information too, but a prediction anti-correlated with the
    data is a failed model, so r <= 0 maps to 0 bits.
    """
    r = np.clip(np.asarray(r, dtype=np.float64), 0.0, 1.0 - 1e-15)
    return -0.5 * np.log2(1.0 - r**2)


def fdr(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values of a family of p-values (NaN entries stay NaN)."""
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise BrainshapeError("p-values must lie in [0, 1] for the FDR correction.")
    if ok.any():
        q[ok] = false_discovery_control(p[ok], method="bh")
    return q


def permutation_p_values(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """One-sided p-values ``(1 + #{null >= observed}) / (1 + n_permutations)`` per column of a
    ``(n_permutations, m)`` null: never 0, exact under the null."""
    null = np.asarray(null)
    return (1.0 + (null >= np.asarray(observed)[None] - 1e-12).sum(0)) / (1.0 + null.shape[0])


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """:func:`permutation_p_values` of one statistic against its null (any shape)."""
    null = np.asarray(null, dtype=np.float64).reshape(-1, 1)
    return float(permutation_p_values(np.array([observed]), null)[0])


def segment_identification(
    pred: np.ndarray,
    obs: np.ndarray,
    segment_trs: int,
    n_bootstrap: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """Identify held-out segments from predicted responses.

    ``pred`` and ``obs`` (n_trs, n_targets) hold held-out predictions and data in time order.
    They are cut into consecutive segments of ``segment_trs`` TRs (a shorter tail is dropped);
    each segment's (segment_trs x n_targets) pattern is z-scored and the correlation matrix
    ``C[i, j]`` between predicted segment i and measured segment j is formed. Returns:

    - ``sensitivity``: share of segments whose best-matching measured segment is their own
      (chance 1 / n_segments);
    - ``specificity``: share of (segment, wrong candidate) pairs with ``C[i, j] < C[i, i]``
      (chance 0.5);
    - ``invariance``: mean over ``n_bootstrap`` resamples of the targets (with replacement) of
      the share of segments identified as with all targets (1 = identification does not hinge
      on particular targets);
    - ``n_segments``.
    """
    pred = np.asarray(pred, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    if pred.shape != obs.shape or pred.ndim != 2:
        raise BrainshapeError(
            f"segment identification needs predictions and data of one shape (n_trs, "
            f"n_targets), got {pred.shape} and {obs.shape}."
        )
    n_segments = pred.shape[0] // int(segment_trs)
    if segment_trs < 1 or n_segments < 2:
        raise BrainshapeError(
            f"segment identification needs at least 2 segments of {segment_trs} TRs; the "
            f"held-out data have {pred.shape[0]} TRs. Use shorter segments."
        )

    def patterns(a, cols):
        seg = a[: n_segments * segment_trs, cols].reshape(n_segments, -1)
        seg = seg - seg.mean(1, keepdims=True)
        norm = np.linalg.norm(seg, axis=1, keepdims=True)
        return seg / np.where(norm > 0, norm, 1.0)

    def identify(cols):
        C = patterns(pred, cols) @ patterns(obs, cols).T
        return C, C.argmax(1)

    everything = np.arange(pred.shape[1])
    C, best = identify(everything)
    own = np.arange(n_segments)
    diagonal = np.diag(C)
    wrong = ~np.eye(n_segments, dtype=bool)
    rng = np.random.default_rng(seed)
    agree = [
        np.mean(identify(rng.integers(0, pred.shape[1], pred.shape[1]))[1] == best)
        for _ in range(n_bootstrap)
    ]
    return {
        "sensitivity": float(np.mean(best == own)),
        "specificity": float(np.mean((C < diagonal[:, None])[wrong])),
        "invariance": float(np.mean(agree)) if agree else np.nan,
        "n_segments": int(n_segments),
    }
