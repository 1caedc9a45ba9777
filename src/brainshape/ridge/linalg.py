"""The linear algebra the engine shares: standardising, Gram matrices, decompositions.

A training design is decomposed once (the eigendecomposition of its smaller Gram matrix, which
is its thin SVD) and that decomposition serves every alpha and every block of targets. With
fewer rows than columns (the usual case for a story set), the Gram matrix of all rows of an
outer fold serves every inner split and the refit: their Gram matrices and held-out
projections are re-centred blocks of it (``centred_grams``).
"""

from __future__ import annotations


def chunks(m: int, size: int) -> list[slice]:
    """Consecutive slices of ``size`` (the last may be shorter) covering ``range(m)``."""
    return [slice(start, min(start + size, m)) for start in range(0, m, size)]


def constant(B, A):
    """Columns of ``A`` whose values are all equal."""
    return B.colmax(A) == B.colmin(A)


def column_mean(B, A):
    """Column means, exact for constant columns so that centring leaves exact zeros."""
    mean = A.mean(0)
    const = constant(B, A)
    mean[const] = A[0][const]
    return mean


def standardise(B, X):
    """Column means and standard deviations (ddof 0); constant columns get mean exact, scale 1."""
    mean = column_mean(B, X)
    scale = X.std(0) if B.name == "numpy" else X.std(0, correction=0)
    scale[constant(B, X) | (scale == 0)] = 1.0
    return mean, scale


def gram_path(n_rows: int, n_features: int) -> bool:
    """Whether to work from the rows' Gram matrix (kernel form) rather than the features.

    With fewer rows than features every training set of a cross-validation is decomposed
    through its (rows x rows) Gram matrix anyway; those Gram matrices, and the projections of
    the held-out rows, are then sub-blocks of one Gram matrix of all rows (re-centred in
    O(rows^2)), so the features are multiplied once instead of three times per split.
    """
    return n_rows < n_features


def decompose(B, Xc):
    """``(basis, rows, eig)`` of a centred design with ``basis diag(1/(eig+a)) rows^T`` the
    ridge operator: the thin SVD ``X = U S V^T`` taken through the smaller Gram matrix."""
    n, p = Xc.shape
    if n >= p:
        eig, V = B.eigh(B.gram(Xc.T))
        basis, rows = V, B.mm(Xc, V)
    else:
        eig, U = B.eigh(B.gram(Xc))
        basis, rows = B.mm(Xc.T, U), U
    # Rounding leaves zero eigenvalues slightly negative.
    return basis, rows, B.clip_min(eig, 0.0)


def centred_grams(K, train, test):
    """Kernel form of ``(Xc Xc^T, (X[test] - mean) Xc^T)``, ``Xc = X[train] - mean``.

    ``K`` is the uncentred Gram matrix ``X X^T`` of all rows and ``mean`` the mean of the
    ``train`` rows: ``(x_a - mean).(x_b - mean) = K_ab - x_a.mean - x_b.mean + mean.mean``,
    where ``x_a.mean`` is the mean of row ``a`` of ``K`` over the training columns.
    """
    K_tt = K[train][:, train]
    K_vt = K[test][:, train]
    r = K_tt.mean(1)
    s = r.mean()
    centred = K_tt - r[:, None] - r[None, :] + s
    cross = K_vt - K_vt.mean(1)[:, None] - r[None, :] + s
    return centred, cross


def decompose_gram(B, K_tt, K_vt):
    """``(rows, eig, P)`` from kernel blocks: ``K_tt = U diag(eig) U^T`` (``rows = U``) and
    ``P = K_vt U``, the held-out rows projected on the basis ``decompose`` would return."""
    eig, U = B.eigh(K_tt)
    return U, B.clip_min(eig, 0.0), B.mm(K_vt, U)


def r_from_moments(B, cov, var_p, var_y, flat):
    """Pearson r from a covariance and two variances; 0 where ``flat`` or a variance is 0."""
    denom = B.sqrt(var_p * var_y)
    r = cov / (denom + (denom == 0))
    r[flat | (denom == 0)] = 0.0
    return r


def rel_tol(B) -> float:
    """Prediction variance below this share of the predictions' power is rounding (r = 0)."""
    return 1e-20 if B.float64 else 1e-10
