"""``RidgeCV``: one level of the engine as a scikit-learn-style estimator.

The counterpart of himalaya's ``RidgeCV``: ``fit`` scores every alpha on contiguous splits
(``scores.inner_cv_scores``), picks per target the best and refits on all rows.
"""

from __future__ import annotations

import numpy as np

from brainshape.errors import BrainshapeError
from brainshape.ridge.backends import get_backend
from brainshape.ridge.crossval import DEFAULT_TARGET_CHUNK
from brainshape.ridge.folds import Split, check_time_ordered, folds_from_segments
from brainshape.ridge.linalg import chunks, column_mean, decompose
from brainshape.ridge.scores import best_alpha_index, inner_cv_scores


class RidgeCV:
    """Ridge regression with one alpha per target chosen by contiguous cross-validation.

    The scikit-learn-style face of the engine, one level deep (``cross_validate`` is the
    nested, outer-and-inner loop the encoding stage runs): ``fit(X, Y)`` scores every alpha of
    ``alphas`` on the held-out rows of each split of ``cv`` (mean Pearson r over the splits,
    features and targets re-centred on each split's training rows), picks per target the best
    (exact ties to the larger alpha) and refits on all rows. It is the counterpart of
    himalaya's ``RidgeCV`` / ``solve_ridge_cv_svd(X, Y, alphas, cv=splits,
    fit_intercept=True, score_func=correlation_score, local_alpha=True)``; features are not
    scaled (z-score them first if wanted).

    ``cv``: the number of contiguous blocks of the rows (at least 2), or (train, test) index
    splits, which must hold out contiguous rows (``check_time_ordered``). ``backend``:
    ``"numpy"``, ``"torch"`` or ``"auto"`` (``get_backend``), with ``dtype``.

    Attributes after ``fit`` (numpy float64): ``best_alphas_`` (m,), ``coef_`` (p, m),
    ``intercept_`` (m,), ``cv_scores_`` (n_alphas, m) the mean held-out r of every alpha in
    the increasing order of ``alphas_`` (the sorted unique grid), ``n_features_in_``.
    """

    def __init__(
        self,
        alphas=(1.0, 10.0, 100.0, 1000.0, 10000.0),
        *,
        cv=5,
        backend: str = "numpy",
        dtype: str | None = None,
        target_chunk: int = DEFAULT_TARGET_CHUNK,
    ):
        self.alphas = alphas
        self.cv = cv
        self.backend = backend
        self.dtype = dtype
        self.target_chunk = target_chunk

    _PARAMS = ("alphas", "cv", "backend", "dtype", "target_chunk")

    # get_params / set_params as scikit-learn defines them (so ``sklearn.base.clone`` works),
    # written out to keep scikit-learn's import (seconds) out of every job that plans folds.
    def get_params(self, deep: bool = True) -> dict:
        return {name: getattr(self, name) for name in self._PARAMS}

    def set_params(self, **params):
        unknown = sorted(set(params) - set(self._PARAMS))
        if unknown:
            raise BrainshapeError(f"RidgeCV has no parameter(s) {unknown}; it has {self._PARAMS}.")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        return f"RidgeCV({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def _splits(self, n_rows: int) -> list[Split]:
        if isinstance(self.cv, (int, np.integer)) and not isinstance(self.cv, bool):
            if not 2 <= self.cv <= n_rows:
                raise BrainshapeError(
                    f"RidgeCV: cv must be between 2 and the {n_rows} rows (contiguous blocks), "
                    f"got {self.cv}."
                )
            edges = np.linspace(0, n_rows, int(self.cv) + 1).round().astype(int)
            segments = [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
            return folds_from_segments(segments)
        splits = [(np.asarray(a), np.asarray(b)) for a, b in self.cv]
        check_time_ordered(splits, n_rows)
        return splits

    def fit(self, X, Y):
        """Choose the alpha of every target of ``Y`` (n, m) by CV, then refit on all rows."""
        X, Y, squeeze = _check_xy(X, Y)
        B = get_backend(self.backend, self.dtype)
        alphas = check_alphas(self.alphas)
        splits = self._splits(X.shape[0])
        Xb = B.asarray(X)
        cv = inner_cv_scores(B, Xb, Y, splits, alphas, int(self.target_chunk))
        chosen = B.asarray(alphas)[best_alpha_index(B, cv)]
        x_mean = column_mean(B, Xb)
        basis, rows, eig = decompose(B, Xb - x_mean)
        m = Y.shape[1]
        self.coef_ = np.zeros((X.shape[1], m))
        self.intercept_ = np.zeros(m)
        for chunk in chunks(m, int(self.target_chunk)):
            Yc = B.asarray(Y[:, chunk])
            y_mean = column_mean(B, Yc)
            c = B.mm(basis, B.mm(rows.T, Yc - y_mean) / (eig[:, None] + chosen[chunk][None, :]))
            self.coef_[:, chunk] = B.to_numpy(c)
            self.intercept_[chunk] = B.to_numpy(y_mean - B.mm(x_mean[None, :], c)[0])
        self.alphas_ = alphas
        self.best_alphas_ = B.to_numpy(chosen)
        self.cv_scores_ = B.to_numpy(cv)
        self.n_features_in_ = X.shape[1]
        self._squeeze = squeeze
        return self

    def predict(self, X) -> np.ndarray:
        """Predictions (n, m) for features ``X`` (n, p); (n,) if fitted on one target vector."""
        if not hasattr(self, "coef_"):
            raise BrainshapeError("RidgeCV: call fit before predict or score.")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise BrainshapeError(
                f"RidgeCV: X must have shape (n, {self.n_features_in_}), got {X.shape}."
            )
        pred = X @ self.coef_ + self.intercept_
        return pred[:, 0] if self._squeeze else pred

    def score(self, X, Y) -> np.ndarray:
        """Pearson r per target between ``predict(X)`` and ``Y`` (0 for a constant column)."""
        from brainshape.scoring import pearson

        pred = self.predict(X)
        Y = np.asarray(Y, dtype=np.float64)
        if self._squeeze:
            return pearson(pred[:, None], Y.reshape(-1, 1))[0]
        return pearson(pred, Y)


def _check_xy(X, Y) -> tuple[np.ndarray, np.ndarray, bool]:
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    squeeze = Y.ndim == 1
    Y = Y[:, None] if squeeze else Y
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise BrainshapeError(
            f"RidgeCV: X (n, p) and Y (n, m) must share their rows, got {X.shape} and {Y.shape}."
        )
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y))):
        raise BrainshapeError("RidgeCV: X or Y contains NaN or infinite values.")
    return X, Y, squeeze


def check_alphas(alphas) -> np.ndarray:
    """The sorted unique alphas of a grid; a BrainshapeError unless all are positive."""
    grid = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise BrainshapeError(
            "alphas must be a non-empty list of positive numbers (encoding.alphas), "
            f"got {alphas!r}."
        )
    return np.unique(grid)
