"""Metrics and statistics beside the Pearson r of an encoding model.

- ``gaussian_mutual_information``: the information (bits) a prediction carries about the data
  if both are jointly Gaussian, ``-1/2 log2(1 - r^2)``; a monotone transform of r, comparable
  across studies that report information rather than correlation.
- ``fdr``: Benjamini-Hochberg q-values (scipy's ``false_discovery_control``).
- ``permutation_p_value``: the p-value of a statistic against its permutation null.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import false_discovery_control

from brainshape.errors import BrainshapeError

METRICS = ("r", "mi")


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


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """``(1 + #{null >= observed}) / (1 + n_permutations)``: never 0, exact under the null."""
    null = np.asarray(null, dtype=np.float64)
    return float((1.0 + np.sum(null >= observed - 1e-12)) / (1.0 + null.size))
