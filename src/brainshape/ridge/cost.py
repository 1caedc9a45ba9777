"""The work of the engine, in floating-point operations of its products and decompositions.

One place for what the engine computes, so that the engine's own choices (``use_hat``) and the
planner's runtime (``resources.encode_flops``) read the same formulas. Counted: matrix products
(``2 m k n`` for an (m, k) x (k, n) product), Gram matrices through ``syrk`` (``n^2 p``) and
symmetric eigendecompositions with vectors (``9 k^3``), as the backend's ``mm``, ``gram`` and
``eigh`` perform them (tests/test_encode_resources.py counts them on a real run). Elementwise
work (centring, z-scoring, the permutation null) is left to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

from brainshape.ridge.linalg import gram_path


def eigh_flops(k: int) -> float:
    """A symmetric eigendecomposition with vectors (``syevd``): about ``9 k^3``."""
    return 9.0 * k**3


def rank(n: int, p: int) -> int:
    """Components of a design of ``n`` rows centred on themselves and ``p`` columns."""
    return max(0, min(n - 1, p))


def decomposition_flops(n_tr: int, n_va: int, p: int, from_gram: bool) -> float:
    """Decompose ``n_tr`` training rows and project ``n_va`` held-out rows on the basis.

    ``from_gram``: blocks of a Gram matrix the caller has (eigendecomposition of the
    ``n_tr``-square block, projection ``2 n_va n_tr^2``). Otherwise from the features: the smaller
    Gram matrix (``syrk``), its eigendecomposition, the other side of the basis and the
    projection (``ridge.linalg.decompose``).
    """
    if from_gram:
        return eigh_flops(n_tr) + 2.0 * n_va * n_tr * n_tr
    k = min(n_tr, p)
    return float(min(n_tr, p) ** 2 * max(n_tr, p)) + eigh_flops(k) + 2.0 * (n_tr + n_va) * p * k


def component_flops(n_tr: int, n_va: int, p: int, m: int, n_alphas: int) -> float:
    """Scores of every alpha for ``m`` targets from per-component sums (``scores.ComponentScorer``):
    per target the training targets in the basis, the validation rows' covariances and ``H r``
    (``2 k (n_tr + n_va + k)``) and three (alphas x k) products (``6 A k``); once, ``G = Pc^T Pc``
    (``n_va k^2``)."""
    k = rank(n_tr, p)
    return n_va * k * k + m * (2.0 * k * (n_tr + n_va + k) + 6.0 * n_alphas * k)


def prediction_flops(n_tr: int, n_va: int, p: int, m: int, n_alphas: int) -> float:
    """Scores of every alpha for ``m`` targets from every alpha's predictions
    (``scores.PredictionScorer``): per target the projection and covariances (``2 k (n_tr + n_va +
    A)``) and one prediction per alpha (``2 A n_va k``), every component kept."""
    k = min(n_tr, p)
    return m * 2.0 * k * (n_tr + n_va + n_alphas + n_alphas * n_va)


def use_components(n_tr: int, n_va: int, p: int, m: int, n_alphas: int) -> bool:
    """Whether the per-component sums cost less than every alpha's predictions on a split: when
    the split's components ``k`` are fewer than about ``alphas x validation rows`` (a few long
    held-out blocks), not when many short ones are (leave one of many stories out)."""
    return component_flops(n_tr, n_va, p, m, n_alphas) < prediction_flops(
        n_tr, n_va, p, m, n_alphas
    )


def split_flops(
    n_tr: int, n_va: int, p: int, m: int, n_alphas: int, from_gram: bool, engine: str
) -> float:
    """One inner split (or bootstrap draw) for ``m`` targets: its decomposition and the scores
    of every alpha, by per-component sums or by predictions, whichever costs less (``fast``), or
    by predictions (``reference``)."""
    work = decomposition_flops(n_tr, n_va, p, from_gram)
    if engine == "fast" and use_components(n_tr, n_va, p, m, n_alphas):
        return work + component_flops(n_tr, n_va, p, m, n_alphas)
    return work + prediction_flops(n_tr, n_va, p, m, n_alphas)


def hat_cost(n_tr: int, n_te: int, k: int, targets: int) -> float:
    """Predict ``targets`` targets of one alpha through the (held-out x training) hat matrix."""
    return 2.0 * n_te * k * n_tr + targets * 2.0 * n_te * n_tr


def direct_cost(n_tr: int, n_te: int, k: int, targets: int) -> float:
    """Predict ``targets`` targets from their coefficients in the basis."""
    return targets * 2.0 * k * (n_tr + n_te)


def use_hat(n_tr: int, n_te: int, k: int, targets: int) -> bool:
    """Whether the targets of one alpha are cheaper to predict through its hat matrix."""
    return hat_cost(n_tr, n_te, k, targets) < direct_cost(n_tr, n_te, k, targets)


def refit_flops(
    n_tr: int, n_te: int, p: int, counts: Sequence[int], from_gram: bool, engine: str
) -> float:
    """The refit of one outer fold on its ``n_tr`` training rows, predicting ``n_te`` rows.

    ``counts``: targets per alpha. Each alpha's targets are predicted through its hat matrix
    or from coefficients, whichever is cheaper (``use_hat``; the reference always uses
    coefficients).
    """
    work = decomposition_flops(n_tr, n_te, p, from_gram)
    k = n_tr if from_gram else min(n_tr, p)
    for count in counts:
        if not count:
            continue
        if engine == "fast" and use_hat(n_tr, n_te, k, count):
            work += hat_cost(n_tr, n_te, k, count)
        else:
            work += direct_cost(n_tr, n_te, k, count)
    return work


def fold_flops(
    n_rows: int,
    n_te: int,
    p: int,
    inner: Sequence[tuple[int, int]],
    m: int,
    counts: Sequence[int],
    engine: str = "fast",
) -> float:
    """One outer fold of ``cross_validate``: ``n_rows`` training and ``n_te`` held-out rows,
    inner splits ``inner`` ((training, validation) row counts), ``m`` targets of which
    ``counts[a]`` take alpha ``a``. Mirrors the engine's branches: one Gram matrix of the
    fold's rows when they are fewer than the columns, else of the training rows when those
    are, else every split from its features."""
    n_alphas = len(counts)
    work = 0.0
    fold_gram = gram_path(n_rows + n_te, p)
    inner_gram = fold_gram or gram_path(n_rows, p)
    if fold_gram:
        work += (n_rows + n_te) ** 2 * p
    elif inner_gram:
        work += n_rows**2 * p
    for n_tr, n_va in inner:
        work += split_flops(n_tr, n_va, p, m, n_alphas, inner_gram, engine)
    return work + refit_flops(n_rows, n_te, p, counts, fold_gram, engine)


class Counted:
    """A backend that counts the FLOPs of its products, Gram matrices and eigendecompositions
    (``flops``) as the formulas above do; everything else is the wrapped backend's."""

    def __init__(self, backend):
        self.backend = backend
        self.flops = 0.0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def mm(self, a, b):
        self.flops += 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
        return self.backend.mm(a, b)

    def gram(self, A):
        self.flops += float(A.shape[0]) ** 2 * A.shape[1]
        return self.backend.gram(A)

    def eigh(self, A):
        self.flops += eigh_flops(A.shape[0])
        return self.backend.eigh(A)
