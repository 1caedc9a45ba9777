"""Family-bootstrap intervals of the combined model's coefficients."""

from __future__ import annotations

import numpy as np


def family_bootstrap(d: np.ndarray, y: np.ndarray, groups: np.ndarray, n: int, rng) -> np.ndarray:
    """OLS coefficients (n, columns of ``d``) of ``n`` family-bootstrap resamples.

    Whole families are resampled; each resample is a weighted least-squares fit with the number
    of times each observation was drawn as its weight (all at once).
    """
    labels, inverse = np.unique(groups, return_inverse=True)
    draws = rng.integers(0, labels.size, size=(n, labels.size))
    counts = np.stack([np.bincount(row, minlength=labels.size) for row in draws])
    w = counts[:, inverse].astype(np.float64)  # (n, n_obs)
    xtwx = np.einsum("bn,ni,nj->bij", w, d, d)
    xtwy = np.einsum("bn,ni,n->bi", w, d, y)
    return np.einsum("bij,bj->bi", np.linalg.pinv(xtwx), xtwy)
