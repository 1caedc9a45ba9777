"""Permutation nulls of the regressions: scores exchanged for the set alone, the nuisance model's
residuals exchanged for the gain (Freedman and Lane)."""

from __future__ import annotations

import math

import numpy as np

from brainshape.errors import BrainshapeError
from brainshape.regressions.crossval import cv_r2, design

#: Permutation schemes of the regression null. ``free``: scores exchanged across all
#: observations; the family-grouped cross-validation already keeps a family's shared level out
#: of the held-out score (on simulated data whose scores and features vary by family
#: independently it rejected in 3-8% of data sets at the 5% level). ``within_family``: scores
#: exchanged only among observations of one model family, exact whatever the families share,
#: but blind to effects carried by differences between families (a feature that tracks score
#: across families and not inside them gets p near 1); use it to test within-family contrasts
#: such as quantisation or training.
PERMUTATIONS = ("free", "within_family")

#: Fewest distinct permutations for which a p-value below 0.05 is possible.
_MIN_DISTINCT = 20


def permutation_orders(
    groups: np.ndarray, n_permutations: int, rng: np.random.Generator, scheme: str
) -> np.ndarray:
    """Row orders (n_permutations, n_obs) of the scores for the permutation null.

    ``within_family`` shuffles each family's observations among themselves; ``free`` shuffles
    all. Refuses a scheme under which fewer than 20 distinct orders exist (no p-value could fall
    below 0.05), naming the setting to change.
    """
    if scheme not in PERMUTATIONS:
        raise BrainshapeError(
            f"regressions.permutation is '{scheme}'; use one of {list(PERMUTATIONS)}"
        )
    n = len(groups)
    if scheme == "free":
        blocks = [np.arange(n)]
    else:
        blocks = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    log_distinct = sum(math.lgamma(b.size + 1) for b in blocks)
    if log_distinct < math.log(_MIN_DISTINCT):
        distinct = math.exp(log_distinct)
        sizes = ", ".join(str(b.size) for b in blocks)
        raise BrainshapeError(
            f"permutations {scheme.replace('_', ' ')} can give only {distinct:.0f} distinct "
            f"orders of the {n} observations (family sizes {sizes}), too few for a p-value "
            "below 0.05; use regressions.unit: layer (more observations per family) or "
            "regressions.permutation: free"
        )
    order = np.tile(np.arange(n), (n_permutations, 1))
    for block in blocks:
        order[:, block] = rng.permuted(np.tile(block, (n_permutations, 1)), axis=1)
    return order


def permutation_p(null: np.ndarray, observed: float) -> float:
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + null.size))


#: Equal bins of relative depth within which a family's residual deviations are exchanged
#: (``regressions.depth_bins``).
DEPTH_BINS = 5


def depth_blocks(groups: np.ndarray, depth: np.ndarray | None, n_bins: int) -> np.ndarray:
    """Labels of the blocks within which a family's deviations are exchanged: the family and
    its relative-depth bin (``n_bins`` equal bins of [0, 1]); the family alone without depth
    (or with ``n_bins`` 1)."""
    groups = np.asarray(groups).astype(str)
    if depth is None or n_bins <= 1:
        return groups
    bins = np.minimum(
        (np.clip(np.asarray(depth, np.float64), 0, 1) * n_bins).astype(int), n_bins - 1
    )
    return np.char.add(np.char.add(groups, "|"), bins.astype(str))


def permuted_residuals(
    r: np.ndarray,
    groups: np.ndarray,
    n: int,
    rng: np.random.Generator,
    scheme: str,
    blocks: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """``n`` permutations (n_obs, n) of residuals ``r`` that keep their family structure.

    Each residual is its family's mean plus a deviation. Deviations are exchanged within each
    of ``blocks`` (default: each family; :func:`depth_blocks` keeps them at their depth, for
    residuals that change smoothly with depth); with ``free`` the family means are also
    exchanged between families (so that what a family shares moves as a block, as it must for
    the gain's null to have the observed spread when families differ), with ``within_family``
    they stay. Family means are weighted by ``weights`` (default all 1).
    """
    labels, inverse = np.unique(groups, return_inverse=True)
    w = np.ones(len(r)) if weights is None else np.asarray(weights, dtype=np.float64)
    means = np.bincount(inverse, w * r) / np.bincount(inverse, w)
    deviations = r - means[inverse]
    order = np.tile(np.arange(len(r)), (n, 1))
    within = inverse if blocks is None else np.unique(blocks, return_inverse=True)[1]
    for g in range(within.max() + 1):
        block = np.flatnonzero(within == g)
        order[:, block] = rng.permuted(np.tile(block, (n, 1)), axis=1)
    if scheme == "free":
        family = np.argsort(rng.random((n, labels.size)), axis=1)
        shared = means[family[:, inverse]]
    else:
        shared = np.tile(means[inverse], (n, 1))
    return (shared + deviations[order]).T


def gain_test(
    xn: np.ndarray,
    xc: np.ndarray,
    y: np.ndarray,
    groups,
    folds,
    n: int,
    rng,
    scheme: str,
    blocks: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> tuple[float, float, float, float]:
    """Nuisance-only and combined cross-validated R^2, the gain and its p-value.

    Freedman and Lane: the nuisance model is fitted to all observations (weighted by
    ``weights``, as every fit and R^2 here), its residuals are
    permuted (:func:`permuted_residuals`, deviations within ``blocks``) and added back to its
    fitted values; each permuted
    score vector goes through the cross-validation of both models, as the observed one does.
    """
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    both = [cv_r2(x, y[:, None], folds, groups, w)[0] for x in (xn, xc)]
    d, root = design(xn), np.sqrt(w)
    fitted = d @ (np.linalg.pinv(d * root[:, None]) @ (y * root))
    ys = fitted[:, None] + permuted_residuals(y - fitted, groups, n, rng, scheme, blocks, w)
    null = cv_r2(xc, ys, folds, groups, w) - cv_r2(xn, ys, folds, groups, w)
    gain = float(both[1] - both[0])
    return float(both[0]), float(both[1]), gain, permutation_p(null, gain)
