"""Family-grouped cross-validation of ordinary least squares: folds that keep a model family
together, and the cross-validated R^2 of many score vectors at once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from brainshape.errors import BrainshapeError


def group_folds(groups: np.ndarray, n_folds: int) -> list[np.ndarray]:
    """Test indices per fold: whole groups, leave-one-group-out when groups <= ``n_folds``."""
    labels = np.unique(groups)
    if labels.size < 2:
        raise BrainshapeError(
            f"family-grouped cross-validation needs at least 2 model families, got "
            f"{labels.size} ({list(labels)}); add models of other families"
        )
    if labels.size <= n_folds:
        return [np.flatnonzero(groups == g) for g in labels]
    # Larger families first, each into the currently smallest fold (as GroupKFold balances).
    sizes = {g: int((groups == g).sum()) for g in labels}
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    load = np.zeros(n_folds)
    for g in sorted(labels, key=lambda g: (-sizes[g], str(g))):
        k = int(load.argmin())
        folds[k].append(g)
        load[k] += sizes[g]
    return [np.flatnonzero(np.isin(groups, f)) for f in folds]


def design(x: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(len(x)), x])


def _unidentified(x: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Columns of a training fold that only tell its families apart: constant within each
    family and taking fewer than three values (a slope through two family means would be
    extrapolated to the held-out families; it is a family contrast, not an effect)."""
    if groups is None:
        return np.zeros(x.shape[1], dtype=bool)
    labels, inverse = np.unique(groups, return_inverse=True)
    out = np.zeros(x.shape[1], dtype=bool)
    for j in range(x.shape[1]):
        means = np.bincount(inverse, x[:, j]) / np.bincount(inverse)
        within = np.allclose(
            x[:, j], means[inverse], rtol=0, atol=1e-12 * (1 + np.abs(means).max())
        )
        out[j] = within and np.unique(np.round(means, 12)).size < 3
    return out


def cv_r2(
    x: np.ndarray,
    ys: np.ndarray,
    folds: Sequence[np.ndarray],
    groups: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Cross-validated R^2 of (weighted) least squares for each column of ``ys`` (n_obs,
    n_columns).

    Held-out predictions of all folds are pooled; R^2 = 1 - SS_res / SS_tot around the mean of
    all observations, both sums weighted by ``weights`` (n_obs,; default all 1), which also
    weigh each fold's fit. One pseudo-inverse per fold serves every column. With ``groups``
    (the observations' families), a column that in a training fold only tells its families
    apart (:func:`_unidentified`) is left out of that fold's fit.
    """
    ys = np.asarray(ys, dtype=np.float64)
    pred = np.empty_like(ys)
    n = len(x)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    root = np.sqrt(w)[:, None]
    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        xtr, xte = design(x[train]), design(x[test])
        # Standardise by the training fold only (OLS with an intercept is unchanged by it,
        # but the pseudo-inverse is better conditioned). A column constant in the training
        # fold, or one that only tells its families apart, carries no effect there: it is
        # zeroed, not extrapolated to the held-out families.
        mu, sd = xtr[:, 1:].mean(0), xtr[:, 1:].std(0)
        sd[_unidentified(x[train], None if groups is None else groups[train])] = 0.0
        scale = np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 1e-12)
        xtr[:, 1:] = (xtr[:, 1:] - mu) * scale
        xte[:, 1:] = (xte[:, 1:] - mu) * scale
        beta = np.linalg.pinv(xtr * root[train]) @ (ys[train] * root[train])
        pred[test] = xte @ beta
    ss_res = (w[:, None] * (ys - pred) ** 2).sum(0)
    ss_tot = (w[:, None] * (ys - (w @ ys) / w.sum()) ** 2).sum(0)
    return 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, np.nan)


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns with variance, standardised, and the mask of those columns."""
    sd = x.std(axis=0)
    varying = sd > 0
    return (x[:, varying] - x[:, varying].mean(axis=0)) / sd[varying], varying
