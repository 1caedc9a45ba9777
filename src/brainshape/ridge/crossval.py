"""Nested cross-validation of ridge encoding models: ``cross_validate``.

Per outer fold the features are z-scored on the training rows, the alpha of every target is
chosen on those rows (by inner contiguous folds, ``scores.inner_cv_scores``, or by bootstrap
draws of held-out chunks, ``folds.Bootstrap``), the model is refitted on all training rows and
the held-out rows are predicted (``Refit``: through each chosen alpha's hat matrix where that
is cheaper than coefficients, ``cost.use_hat``). Scores of the concatenated predictions come
from running sums (``HeldOutSums``), so predictions of all folds are never held at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from brainshape.errors import BrainshapeError
from brainshape.ridge import cost
from brainshape.ridge.backends import get_backend
from brainshape.ridge.folds import (
    Bootstrap,
    block_permutations,
    bootstrap_splits,
    check_time_ordered,
    folds_from_segments,
    nested_splits,
)
from brainshape.ridge.linalg import (
    chunks,
    column_mean,
    constant,
    decompose,
    decompose_gram,
    gram_path,
    r_from_moments,
    rel_tol,
    standardise,
)
from brainshape.ridge.scores import ENGINES, best_alpha_index, inner_cv_scores

#: Targets per block in the solves: memory grows with (rank of the design) x chunk.
DEFAULT_TARGET_CHUNK = 20000

#: Elements of the (permutations, held-out rows, targets) block gathered at once for the null.
NULL_BLOCK_ELEMENTS = 1 << 22


@dataclass
class CVResult:
    """Outer cross-validation of ridge encoding models (numpy float64 arrays).

    ``scores`` (m,): Pearson r of the held-out predictions of all folds, concatenated, with
    the data. ``fold_scores`` (n_folds, m): r within each held-out fold. ``alphas``
    (n_folds, m): the alpha chosen in each fold. ``null`` (n_permutations, m) or None: r of
    the concatenated predictions with block-permuted data (blocks shuffled within each held-out
    fold, the same permutations for every target; ``brainshape.scoring`` turns it into
    p-values). ``predictions`` (n, m) or None: the held-out predictions of every row (with
    ``keep_predictions``). ``held_out``: with a fixed test set, the rows scored (and the rows of
    ``predictions``); None when every row was held out once.
    """

    scores: np.ndarray
    fold_scores: np.ndarray
    alphas: np.ndarray
    null: np.ndarray | None = None
    predictions: np.ndarray | None = None
    held_out: np.ndarray | None = None


def cross_validate(
    X: np.ndarray,
    Y: np.ndarray,
    alphas: np.ndarray,
    segments: Sequence[np.ndarray],
    *,
    gap: int = 0,
    backend=None,
    target_chunk: int = DEFAULT_TARGET_CHUNK,
    n_permutations: int = 0,
    permutation_block: int = 10,
    seed: int = 0,
    keep_predictions: bool = False,
    test: Sequence[int] | None = None,
    bootstrap: Bootstrap | None = None,
    engine: str = "fast",
) -> CVResult:
    """Outer leave-one-segment-out ridge with per-target alphas chosen on the training rows.

    ``X`` (n, p) is the delayed design and ``Y`` (n, m) the targets, rows in time order (TRs
    of the runs, concatenated); ``segments`` the held-out row sets (``contiguous_folds``), at
    least 3. In outer fold i, training rows are the other segments less ``gap`` rows on each
    side of segment i; features are z-scored on them; the alpha of each target maximises the
    mean held-out r over the inner leave-one-segment-out folds of the remaining segments (with
    the same gap), or with ``bootstrap`` over its draws of held-out chunks (then 2 segments
    will do); the refit on all training rows predicts segment i. With ``n_permutations``,
    ``CVResult.null`` holds the r of the predictions with block-permuted held-out data
    (``block_permutations``).

    ``test`` fixes a test set instead: the indices of the segments (a test story) that are
    held out and scored, each in turn, with training and the inner folds on the other segments
    only (at least 2, or 1 with ``bootstrap``); ``CVResult.held_out`` then lists the scored
    rows. ``engine``: ``fast`` (the cheaper exact order of products at every step) or
    ``reference`` (the previous engine, which forms every alpha's inner predictions and refits
    from coefficients; ``ridge.scores``).
    """
    if engine not in ENGINES:
        raise BrainshapeError(f"engine must be one of {list(ENGINES)}, got {engine!r}.")
    B = backend or get_backend("numpy")
    scored, training = _outer_segments(len(segments), test, bootstrap is not None)
    outer = folds_from_segments(segments, gap)
    if test is not None:
        kept = np.concatenate([segments[j] for j in training])
        outer = [(train[np.isin(train, kept)], held) for train, held in outer]
    check_time_ordered([outer[i] for i in scored], X.shape[0])
    alphas = np.asarray(alphas, dtype=np.float64)
    perms = None
    if n_permutations:
        lengths = [len(s) for s in segments]
        perms = block_permutations(lengths, n_permutations, permutation_block, seed)
    sums = HeldOutSums(B, Y, target_chunk, len(scored), n_permutations, keep_predictions)
    Xb = B.asarray(X)
    for k, i in enumerate(scored):
        train, held = outer[i]
        if train.size < 2:
            raise BrainshapeError(f"fold {i}: fewer than 2 training TRs remain after the gap.")
        if bootstrap is None:
            inner = nested_splits(segments, training, i, train, gap)
        else:
            inner = bootstrap_splits(train, bootstrap, seed, i)
        fold = OuterFold(B, Xb, train, held, alphas, engine)
        fold.run(Y, k, inner, target_chunk, sums, None if perms is None else perms[i])
    result = sums.result()
    if test is not None:
        rows = np.concatenate([segments[i] for i in scored])
        result.held_out = rows
        if result.predictions is not None:
            result.predictions = result.predictions[rows]
    return result


def _outer_segments(
    n: int, test: Sequence[int] | None, bootstrap: bool
) -> tuple[list[int], list[int]]:
    """(segments scored as outer folds, segments that train): every segment both, or, with a
    fixed ``test`` set, the test segments scored and the others training."""
    need = 1 if bootstrap else 2  # training segments an outer fold needs to choose alphas
    if test is None:
        if n < need + 1:
            raise BrainshapeError(
                f"cross-validation needs at least {need + 1} folds (stories or blocks): one "
                f"held out for scoring and {need} to choose alphas, got {n}. Use more stories."
            )
        return list(range(n)), list(range(n))
    scored = sorted({int(i) for i in test})
    training = [j for j in range(n) if j not in scored]
    if not scored or scored[0] < 0 or scored[-1] >= n:
        raise BrainshapeError(f"test segments {list(test)} are not among the {n} segments.")
    if len(training) < need:
        raise BrainshapeError(
            f"a fixed test set leaves {len(training)} training fold(s); choosing alphas needs "
            f"at least {need} (more training stories, or encoding.folds: blocks to cut them)."
        )
    return scored, training


class OuterFold:
    """One outer fold: features z-scored on its training rows, alphas chosen, refit, scored."""

    def __init__(self, B, Xb, train: np.ndarray, test: np.ndarray, alphas, engine: str):
        self.B, self.train, self.test, self.alphas, self.engine = B, train, test, alphas, engine
        tr = B.index(train)
        x_mean, x_scale = standardise(B, Xb[tr])
        self.Xz = (Xb - x_mean) / x_scale
        self.gram = None
        if gram_path(train.size + test.size, self.Xz.shape[1]):
            # One Gram matrix of the training and held-out rows serves the inner splits and
            # the refit: training rows first, so its leading block is the training Gram.
            self.gram = B.gram(self.Xz[B.index(np.concatenate([train, test]))])

    def run(self, Y, k: int, inner, target_chunk: int, sums, orders) -> None:
        """Choose the alphas on ``inner`` (positions in the training rows), refit and add the
        held-out predictions of every target to ``sums`` as fold ``k``."""
        B, n_tr = self.B, self.train.size
        K_tt = None if self.gram is None else self.gram[:n_tr, :n_tr]
        Xz_tr = self.Xz[B.index(self.train)]
        cv = inner_cv_scores(
            B, Xz_tr, Y, inner, self.alphas, target_chunk, K_tt, self.engine, self.train
        )
        chosen = best_alpha_index(B, cv)
        sums.fold_alphas[k] = self.alphas[B.to_numpy(chosen).astype(int)]
        refit = Refit(B, self, B.to_numpy(chosen).astype(int))
        sums.n_total += self.test.size
        for chunk in chunks(Y.shape[1], target_chunk):
            pred = refit.predict(B.asarray(Y[self.train, chunk]), chunk)
            sums.add(k, self.test, chunk, pred, B.asarray(Y[self.test, chunk]), orders)


class Refit:
    """The model of one outer fold on all its training rows, with each target's alpha.

    Each alpha's targets are predicted through the alpha's hat matrix ``P diag(1/(e+a))
    rows^T`` (held-out x training rows) where that is cheaper than coefficients in the
    basis (``cost.use_hat``: many targets share the alpha), else from their coefficients.
    """

    def __init__(self, B, fold: OuterFold, chosen: np.ndarray):
        self.B = B
        tr, te = B.index(fold.train), B.index(fold.test)
        if fold.gram is None:
            # Z-scored on the training rows: already centred.
            basis, self.rows, self.eig = decompose(B, fold.Xz[tr])
            self.P = B.mm(fold.Xz[te], basis)
        else:
            n = fold.train.size
            self.rows, self.eig, self.P = decompose_gram(B, fold.gram[:n, :n], fold.gram[n:, :n])
        self.alphas = fold.alphas
        self.chosen = chosen
        self.hats = {}
        if fold.engine == "fast":
            k, n_tr, n_te = self.rows.shape[1], fold.train.size, fold.test.size
            for a, count in enumerate(np.bincount(chosen, minlength=len(fold.alphas))):
                if count and cost.use_hat(n_tr, n_te, k, int(count)):
                    shrink = 1.0 / (self.eig + float(fold.alphas[a]))
                    self.hats[a] = B.mm(self.P * shrink[None, :], self.rows.T)

    def predict(self, Y_tr, chunk: slice):
        """Held-out predictions (n_test, chunk) of the chunk's targets from training rows."""
        B = self.B
        y_mean = column_mean(B, Y_tr)
        Y_c = Y_tr - y_mean
        idx = self.chosen[chunk]
        direct = ~np.isin(idx, list(self.hats))
        if direct.all():
            shrink = self.eig[:, None] + B.asarray(self.alphas[idx])[None, :]
            return B.mm(self.P, B.mm(self.rows.T, Y_c) / shrink) + y_mean
        pred = B.zeros((self.P.shape[0], idx.size))
        if direct.any():
            cols = B.index(np.flatnonzero(direct))
            shrink = self.eig[:, None] + B.asarray(self.alphas[idx[direct]])[None, :]
            pred[:, cols] = B.mm(self.P, B.mm(self.rows.T, Y_c[:, cols]) / shrink)
        for a, hat in self.hats.items():
            cols = np.flatnonzero(idx == a)
            if cols.size:
                pred[:, B.index(cols)] = B.mm(hat, Y_c[:, B.index(cols)])
        return pred + y_mean


class HeldOutSums:
    """Running sums over the outer folds from which ``cross_validate`` scores the targets.

    The r of the concatenated held-out predictions needs five sums per target (of p, y, p^2,
    y^2 and p y, taken about a reference near the target's mean for accuracy); the null needs
    the cross sum of each permutation.
    """

    def __init__(self, B, Y, target_chunk, n_folds, n_permutations, keep_predictions):
        n, m = Y.shape
        self.B = B
        self.rel = rel_tol(B)
        self.y_ref = np.zeros(m)
        self.constant_y = np.zeros(m, dtype=bool)
        for chunk in chunks(m, target_chunk):
            Yc = np.asarray(Y[:, chunk], dtype=np.float64)
            self.y_ref[chunk] = Yc.mean(0)
            self.constant_y[chunk] = Yc.max(0) == Yc.min(0)
        if self.constant_y.all():
            raise BrainshapeError(
                f"every one of the {m} targets is constant over all {n} TRs, so there is "
                "nothing to predict; check the fMRI preprocessing (mask, z-scoring)."
            )
        self.sums = np.zeros((5, m))
        self.null_cross = np.zeros((n_permutations, m)) if n_permutations else None
        self.predictions = np.zeros((n, m)) if keep_predictions else None
        self.fold_scores = np.zeros((n_folds, m))
        self.fold_alphas = np.zeros((n_folds, m))
        self.n_total = 0

    def add(self, i, test, chunk, pred, y_test, orders) -> None:
        """Add fold ``i``'s held-out predictions ``pred`` and data ``y_test`` of ``chunk``."""
        B = self.B
        if self.predictions is not None:
            self.predictions[test, chunk] = B.to_numpy(pred)
        pc = pred - pred.mean(0)
        yc = y_test - y_test.mean(0)
        var_p = (pc * pc).sum(0)
        flat = constant(B, y_test) | (var_p <= self.rel * (pred * pred).sum(0))
        self.fold_scores[i, chunk] = B.to_numpy(
            r_from_moments(B, (pc * yc).sum(0), var_p, (yc * yc).sum(0), flat)
        )
        ref = B.asarray(self.y_ref[chunk])
        p_c = pred - ref
        y_c = y_test - ref
        moments = [p_c.sum(0), y_c.sum(0), (p_c**2).sum(0), (y_c**2).sum(0)]
        moments.append((p_c * y_c).sum(0))
        for k, value in enumerate(moments):
            self.sums[k, chunk] += B.to_numpy(value)
        if orders is not None:
            add_null_cross(B, p_c, y_c, orders, self.null_cross[:, chunk])

    def result(self) -> CVResult:
        sp, sy, spp, syy, spy = self.sums
        n = self.n_total
        var_p = spp - sp**2 / n
        var_y = syy - sy**2 / n
        flat = self.constant_y | (var_p <= 1e-10 * spp)
        null = None
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = (spy - sp * sy / n) / np.sqrt(var_p * var_y)
            scores[flat] = 0.0
            if self.null_cross is not None:
                null = (self.null_cross - sp * sy / n) / np.sqrt(var_p * var_y)
                null[:, flat] = 0.0
                null = np.clip(null, -1.0, 1.0)
        return CVResult(
            scores=np.clip(scores, -1.0, 1.0),
            fold_scores=self.fold_scores,
            alphas=self.fold_alphas,
            null=null,
            predictions=self.predictions,
        )


def add_null_cross(B, p_c, y_c, orders: np.ndarray, out: np.ndarray) -> None:
    """Add ``sum_t p_c[t] * y_c[order[t]]`` for each row order to ``out`` (n_permutations, m).

    ``p_c`` and ``y_c`` (n_test, m) are backend arrays, ``orders`` (n_permutations, n_test).
    The targets of many permutations are gathered in one indexing operation, a block of
    permutations at a time so that memory stays under ``NULL_BLOCK_ELEMENTS`` elements.
    """
    n_test, m = p_c.shape
    step = max(1, NULL_BLOCK_ELEMENTS // max(1, n_test * m))
    for block in chunks(orders.shape[0], step):
        gathered = y_c[B.index(orders[block])]  # (permutations, n_test, m)
        out[block] += B.to_numpy((gathered * p_c).sum(1))
