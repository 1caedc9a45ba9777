"""Held-out r of every alpha on the inner splits that choose each target's alpha.

On one split (training rows T, validation rows V) the training targets are projected on the
decomposition of the training design, ``r = U^T y_T`` (k components, eigenvalues ``e``), and
the prediction of alpha ``a`` on the validation rows is ``Pc D_a r`` with ``D_a = diag(1 / (e +
a))`` and ``Pc`` the validation rows' projection, centred. Its Pearson r with ``y_V`` needs the
covariance ``sum_j s_aj r_j q_j`` (``q = Pc^T y_V``) and the variance ``r^T D_a G D_a r`` with
``G = Pc^T Pc``.

``ComponentScorer`` (the engine) gets the variance of every alpha from one product per target,
by partial fractions: for ``e_j != e_l``, ``s_aj s_al = (s_aj - s_al) / (e_l - e_j)``, so

    var_a = sum_j s_aj^2 G_jj r_j^2 + 2 sum_j s_aj r_j (H r)_j,    H_jl = G_jl / (e_l - e_j),

and ``H r`` does not depend on alpha. Per target that is three (k x rows) products (r, q, H r)
however many alphas the grid has, instead of one (validation rows x k) product per alpha.
The sums run in float64 whatever the backend's precision (a float32 ``H r`` loses about 1e-4
of r where eigenvalues crowd: docs/benchmarks.md); pairs of eigenvalues within :data:`NEAR` of
each other are summed directly, and components whose eigenvalue is rounding noise (at most
``10 eps`` of the largest: ``r_j`` or the projection is zero there) are dropped.

``PredictionScorer`` forms the prediction of every alpha, as the previous engine did: cheaper
where a split's components outnumber ``alphas x validation rows`` (leaving one of many short
stories out), so the engine takes it there (``cost.use_components``). Both give the same r to
rounding (tests/test_ridge.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from brainshape.ridge.cost import use_components
from brainshape.ridge.folds import Split
from brainshape.ridge.linalg import (
    centred_grams,
    chunks,
    column_mean,
    constant,
    decompose,
    decompose_gram,
    gram_path,
    r_from_moments,
)

#: Relative gap under which two eigenvalues are summed as a pair directly (partial fractions
#: would divide by their difference): ``|e_l - e_j| <= NEAR ((e_j + e_l) / 2 + smallest alpha)``.
NEAR = 1e-6

#: Components whose eigenvalue is at most this many machine epsilons of the largest are dropped.
NULL_EPS = 10.0

#: The per-component sums in float64 whatever the backend's precision (False: in the backend's;
#: benchmarks/encode_ideas.py measures what float32 sums lose).
SUMS_FLOAT64 = True

#: ``fast``: at every step the cheaper exact order of products; ``reference``: the previous engine
#: (every alpha's predictions, the refit from coefficients).
ENGINES = ("fast", "reference")


def split_decomposition(B, Xz, split: Split, gram_matrix=None):
    """``(rows, eig, P)`` of one inner split: the decomposition of the training rows' design
    (centred on them) and the validation rows projected on it (``P``, not yet centred)."""
    tr, va = B.index(split[0]), B.index(split[1])
    if gram_matrix is not None:
        return decompose_gram(B, *centred_grams(gram_matrix, tr, va))
    X_tr = Xz[tr]
    mean = column_mean(B, X_tr)
    basis, rows, eig = decompose(B, X_tr - mean)
    return rows, eig, B.mm(Xz[va] - mean, basis)


class ComponentScorer:
    """Held-out r of every alpha on one split, from per-component sums (module docstring)."""

    def __init__(self, B, rows, eig, P, alphas: np.ndarray):
        self.B = B
        top = float(B.to_numpy(eig.max())) if eig.shape[0] else 0.0
        keep = B.index(B.nonzero(eig > NULL_EPS * B.eps * top))
        self.rows = rows[:, keep]
        Pc = P[:, keep]
        self.Pc = Pc - Pc.mean(0)
        self.wide = B.as64 if SUMS_FLOAT64 else B.asarray
        e = self.wide(eig[keep])
        G = B.gram(self.wide(self.Pc).T)
        diff = e[None, :] - e[:, None]  # e_l - e_j
        scale = (e[:, None] + e[None, :]) / 2 + float(np.min(alphas))
        near = B.abs(diff) <= NEAR * scale
        self.H = B.where(near, 0.0, G / B.where(near, 1.0, diff))
        self.g = B.diag(G)
        upper = B.nonzero(B.triu(near, 1).flatten())
        k = e.shape[0]
        self.pairs = (B.index(upper // k), B.index(upper % k), G.flatten()[B.index(upper)])
        self.shrink = 1.0 / (e[None, :] + self.wide(alphas)[:, None])

    def add(self, Y_tr, Y_va, out) -> None:
        """Add the r of every alpha for a chunk of targets to ``out`` (n_alphas, chunk), float64.

        ``Y_tr`` and ``Y_va``: the chunk's training and validation rows (backend arrays).
        """
        B, s = self.B, self.shrink
        r = self.wide(B.mm(self.rows.T, Y_tr - column_mean(B, Y_tr)))
        yv = Y_va - Y_va.mean(0)
        q = self.wide(B.mm(self.Pc.T, yv))
        cov = B.mm(s, r * q)
        var = B.mm(s * s, self.g[:, None] * r * r) + 2.0 * B.mm(s, r * B.mm(self.H, r))
        J, L, G_jl = self.pairs
        if J.shape[0]:
            var = var + 2.0 * B.mm(s[:, J] * s[:, L], G_jl[:, None] * r[J] * r[L])
        var_y = self.wide((yv * yv).sum(0))
        # A target constant in training has r exactly 0 (exact centring): variance 0, r = 0.
        out += r_from_moments(B, cov, B.clip_min(var, 0.0), var_y, constant(B, Y_va))


class PredictionScorer:
    """The reference: the prediction of every alpha on the validation rows, one product each."""

    def __init__(self, B, rows, eig, P, alphas: np.ndarray):
        self.B, self.rows = B, rows
        self.Pc = P - P.mean(0)
        self.shrink = 1.0 / (eig[None, :] + B.asarray(alphas)[:, None])

    def add(self, Y_tr, Y_va, out) -> None:
        B = self.B
        RtY = B.mm(self.rows.T, Y_tr - column_mean(B, Y_tr))
        yc = Y_va - Y_va.mean(0)
        var_y = (yc * yc).sum(0)
        cov = B.mm(self.shrink, RtY * B.mm(self.Pc.T, yc))  # (n_alphas, m)
        const_y = constant(B, Y_va)
        for a in range(self.shrink.shape[0]):
            pred = B.mm(self.Pc, RtY * self.shrink[a][:, None])
            r = r_from_moments(B, cov[a], (pred * pred).sum(0), var_y, const_y)
            out[a] += r


def inner_cv_scores(
    B,
    Xz,
    Y,
    splits: Sequence[Split],
    alphas,
    target_chunk: int,
    gram_matrix=None,
    engine: str = "fast",
    rows: np.ndarray | None = None,
):
    """Mean over ``splits`` of held-out Pearson r per alpha and target: (n_alphas, m) float64.

    ``Xz`` (n, p) is a backend array and ``Y`` the targets (numpy, moved by chunks): its rows
    ``rows`` (default all) are those of ``Xz``, so a caller need not copy them out; ``splits``
    are positions in those rows. Each split re-centres features and targets on its own
    training rows, as himalaya's ``solve_ridge_cv_svd(fit_intercept=True)`` does.
    ``gram_matrix`` (n, n): ``Xz Xz^T`` when the caller has it; with fewer rows than features it
    is computed here and every split is solved from its blocks. ``engine``: ``fast`` scores each
    split by per-component sums or by predictions, whichever costs less (``cost.use_components``:
    a few long held-out blocks, or many short ones); ``reference`` always by predictions.
    """
    m = Y.shape[1]
    alphas = np.asarray(alphas, dtype=np.float64)
    total = B.zeros((len(alphas), m), float64=True)
    if gram_matrix is None and gram_path(*Xz.shape):
        gram_matrix = B.gram(Xz)
    n_rows, p = Xz.shape
    for split in splits:
        n_tr, n_va = len(split[0]), len(split[1])
        fast = engine == "fast" and use_components(n_tr, n_va, p, m, len(alphas))
        scorer_class = ComponentScorer if fast else PredictionScorer
        scorer = scorer_class(B, *split_decomposition(B, Xz, split, gram_matrix), alphas)
        tr, va = B.index(split[0]), B.index(split[1])
        for chunk in chunks(m, target_chunk):
            Yc = B.asarray(Y[:, chunk] if rows is None else Y[rows, chunk])
            scorer.add(Yc[tr], Yc[va], total[:, chunk])
    return total / len(splits)


def best_alpha_index(B, cv_scores):
    """Index of the best alpha per target; exact ties go to the larger alpha."""
    n_alphas = cv_scores.shape[0]
    flipped = cv_scores.flip(0) if B.name == "torch" else cv_scores[::-1]
    idx = flipped.argmax(0) if B.name == "torch" else np.argmax(flipped, axis=0)
    return n_alphas - 1 - idx
