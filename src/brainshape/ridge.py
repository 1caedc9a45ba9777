"""The ridge engine: every alpha of a grid from one decomposition, contiguous folds, backends.

Two entry points, both on the same solver code:

- ``cross_validate(X, Y, alphas, segments, ...)``: the nested cross-validation of the encoding
  stage. Per outer fold the features are z-scored on the training rows, the alpha of every
  target is chosen by an inner contiguous cross-validation on those rows
  (``inner_cv_scores``), the model is refitted on all training rows and the held-out rows are
  predicted; returns a ``CVResult`` (held-out r of every target, per-fold r and alphas, the
  block-permutation null, optionally the predictions).
- ``RidgeCV``: one level of it as a scikit-learn-style estimator (``fit``, ``predict``,
  ``score``, attributes ending in ``_``), the counterpart of himalaya's ``RidgeCV``.

Time-ordered fMRI is cross-validated with contiguous folds only: a fold holds out one story
(``contiguous_folds(run_lengths)``) or one contiguous block of TRs
(``contiguous_folds(run_lengths, n_blocks=...)``), with ``gap`` TRs dropped from the training
rows on either side of it (``folds_from_segments(segments, gap)``, or ``cross_validate(...,
gap=...)``). ``check_time_ordered`` refuses splits whose held-out rows are not one contiguous
block, the signature of a shuffled K-fold.

Each training design is decomposed once (eigendecomposition of the smaller Gram matrix,
equivalent to its thin SVD) and that one decomposition serves every alpha and every block of
targets, so stacking the targets of many subjects who heard the same stories costs one
decomposition, not one per subject. With fewer rows than delayed columns (the usual case for
a story set), one Gram matrix of the rows per outer fold serves every inner split and the
refit: their Gram matrices and held-out projections are re-centred blocks of it.

Backends: ``numpy`` (CPU) and ``torch`` (CUDA when present, else CPU). ``dtype="float64"`` is
the reference path (used in tests against himalaya); ``float32`` is the fast path on GPUs.
Targets are processed in blocks of ``target_chunk`` columns (``DEFAULT_TARGET_CHUNK``) so
whole-brain voxel targets fit in memory."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from brainshape.errors import BrainshapeError

#: Targets per block in the solves: memory grows with (rank of the design) x chunk.
DEFAULT_TARGET_CHUNK = 20000


# --- backends ---------------------------------------------------------------------------------


class NumpyBackend:
    """Arrays on the CPU through numpy (and its BLAS/LAPACK)."""

    name = "numpy"

    def __init__(self, dtype: str = "float64"):
        self.dtype = np.dtype(dtype)
        self.device = "cpu"

    def asarray(self, a):
        return np.asarray(a, dtype=self.dtype)

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a, dtype=np.float64)

    def eigh(self, A):
        return np.linalg.eigh(A)

    def zeros(self, shape):
        return np.zeros(shape, dtype=self.dtype)

    def index(self, idx: np.ndarray):
        return idx

    def colmax(self, A):
        return A.max(axis=0)

    def colmin(self, A):
        return A.min(axis=0)

    def sqrt(self, A):
        return np.sqrt(A)

    def clip_min(self, A, low: float):
        return np.clip(A, low, None)


class TorchBackend:
    """Arrays on a torch device (CUDA when available); the same solver code as numpy."""

    name = "torch"

    def __init__(self, dtype: str = "float32", device: str | None = None):
        import torch

        self.torch = torch
        self.dtype = getattr(torch, str(dtype))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def asarray(self, a):
        if isinstance(a, self.torch.Tensor):
            return a.to(device=self.device, dtype=self.dtype)
        return self.torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)

    def to_numpy(self, a) -> np.ndarray:
        return a.detach().to("cpu", self.torch.float64).numpy()

    def eigh(self, A):
        return self.torch.linalg.eigh(A)

    def zeros(self, shape):
        return self.torch.zeros(shape, dtype=self.dtype, device=self.device)

    def index(self, idx: np.ndarray):
        return self.torch.as_tensor(idx, dtype=self.torch.long, device=self.device)

    def colmax(self, A):
        return A.max(dim=0).values

    def colmin(self, A):
        return A.min(dim=0).values

    def sqrt(self, A):
        return self.torch.sqrt(A)

    def clip_min(self, A, low: float):
        return self.torch.clamp(A, min=low)


BACKENDS = ("auto", "numpy", "torch")

#: Device files of a GPU driver (NVIDIA, AMD ROCm, WSL). Without any of them no CUDA device can
#: be visible, and ``auto`` need not import torch (about 3 s) to learn that.
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")


def _cuda_available() -> bool:
    if "torch" not in sys.modules and not any(os.path.exists(f) for f in GPU_DEVICE_FILES):
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return torch.cuda.is_available()


def get_backend(name: str = "auto", dtype: str | None = None):
    """The backend for ``encoding.backend``: ``numpy``, ``torch`` or ``auto``.

    ``auto`` takes torch on a CUDA GPU (float32 unless ``dtype`` says otherwise) and numpy
    otherwise (float64 unless told). An explicit ``torch`` runs on CUDA when present, else CPU.
    """
    if name not in BACKENDS:
        raise BrainshapeError(f"encoding.backend must be one of {list(BACKENDS)}, got {name!r}.")
    if dtype is not None and dtype not in ("float32", "float64"):
        raise BrainshapeError(f"encoding.dtype must be float32 or float64, got {dtype!r}.")
    if name == "auto":
        name = "torch" if _cuda_available() else "numpy"
    if name == "torch":
        return TorchBackend(dtype or "float32")
    return NumpyBackend(dtype or "float64")


# --- folds ------------------------------------------------------------------------------------


Split = tuple[np.ndarray, np.ndarray]


def contiguous_folds(run_lengths: Sequence[int], n_blocks: int | None = None) -> list[np.ndarray]:
    """Held-out segments (row indices) of the concatenated runs, in time order.

    With ``n_blocks=None`` each run (story) is one segment: leave one story out. Otherwise the
    concatenated rows are cut into ``n_blocks`` contiguous blocks of near-equal length. Use
    ``folds_from_segments`` to turn segments into (train, test) splits with a gap.
    """
    lengths = [int(n) for n in run_lengths]
    n = sum(lengths)
    if n_blocks is None:
        edges = np.cumsum([0, *lengths])
    else:
        if isinstance(n_blocks, bool) or int(n_blocks) != n_blocks or n_blocks < 3:
            raise BrainshapeError(
                f"encoding.n_blocks must be a whole number of at least 3 (one block held out "
                f"for scoring, two to choose alphas), got {n_blocks!r}."
            )
        if n_blocks > n:
            raise BrainshapeError(f"encoding.n_blocks ({n_blocks}) exceeds the {n} TRs.")
        edges = np.linspace(0, n, int(n_blocks) + 1).round().astype(int)
    return [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def folds_from_segments(segments: Sequence[np.ndarray], gap: int = 0) -> list[Split]:
    """Leave-one-segment-out splits; training rows within ``gap`` rows of the test are dropped.

    ``segments`` hold row indices in increasing order. The gap is measured in rows of the
    concatenation (TRs), so it keeps the haemodynamic tail of the held-out block out of the
    training set of a block split.
    """
    if isinstance(gap, bool) or int(gap) != gap or gap < 0:
        raise BrainshapeError(f"encoding.gap must be a non-negative number of TRs, got {gap!r}.")
    splits = []
    for i, test in enumerate(segments):
        train = np.concatenate([s for j, s in enumerate(segments) if j != i])
        if gap and test.size:
            near = (train >= test[0] - gap) & (train <= test[-1] + gap)
            train = train[~near]
        splits.append((train, np.asarray(test)))
    return splits


def check_time_ordered(splits: Sequence[Split], n_rows: int) -> None:
    """Refuse splits that are not contiguous: time-ordered data never get shuffled folds.

    Every held-out set must be one run of consecutive rows in increasing order, disjoint from
    its training rows and inside ``[0, n_rows)``. A shuffled K-fold fails on the first fold.
    """
    for k, (train, test) in enumerate(splits):
        test = np.asarray(test)
        train = np.asarray(train)
        if test.size == 0:
            raise BrainshapeError(f"fold {k}: the held-out set is empty.")
        if test.min() < 0 or test.max() >= n_rows or (train.size and train.max() >= n_rows):
            raise BrainshapeError(f"fold {k}: row indices fall outside the {n_rows} TRs.")
        if not np.array_equal(test, np.arange(test[0], test[0] + test.size)):
            raise BrainshapeError(
                f"fold {k}: the held-out TRs are not one contiguous block in time order (a "
                "shuffled or interleaved split). fMRI time series are autocorrelated, so such "
                "a split leaks the held-out signal into training; hold out whole stories "
                "(encoding.folds: stories) or contiguous blocks with a gap (encoding.folds: "
                "blocks, encoding.gap)."
            )
        if np.intersect1d(train, test).size:
            raise BrainshapeError(f"fold {k}: training and held-out rows overlap.")


# --- the solver -------------------------------------------------------------------------------


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


def _chunks(m: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, m)) for start in range(0, m, size)]


def _decompose(B, Xc):
    """``(basis, rows, eig)`` of a centred design with ``basis diag(1/(eig+a)) rows^T`` the
    ridge operator: the thin SVD ``X = U S V^T`` taken through the smaller Gram matrix."""
    n, p = Xc.shape
    if n >= p:
        eig, V = B.eigh(Xc.T @ Xc)
        basis, rows = V, Xc @ V
    else:
        eig, U = B.eigh(Xc @ Xc.T)
        basis, rows = Xc.T @ U, U
    # Rounding leaves zero eigenvalues slightly negative.
    return basis, rows, B.clip_min(eig, 0.0)


def _gram_path(n_rows: int, n_features: int) -> bool:
    """Whether to work from the rows' Gram matrix (kernel form) rather than the features.

    With fewer rows than features every training set of a cross-validation is decomposed
    through its (rows x rows) Gram matrix anyway; those Gram matrices, and the projections of
    the held-out rows, are then sub-blocks of one Gram matrix of all rows (re-centred in
    O(rows^2)), so the features are multiplied once instead of three times per split.
    """
    return n_rows < n_features


def _gram(A):
    """``A A^T`` (numpy hands this product to BLAS ``syrk``: half a general product's work)."""
    return A @ A.T


def _centred_grams(K, train, test):
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


def _decompose_gram(B, K_tt, K_vt):
    """``(rows, eig, P)`` from kernel blocks: ``K_tt = U diag(eig) U^T`` (``rows = U``) and
    ``P = K_vt U``, the held-out rows projected on the basis ``_decompose`` would return."""
    eig, U = B.eigh(K_tt)
    return U, B.clip_min(eig, 0.0), K_vt @ U


def _constant(B, A):
    return B.colmax(A) == B.colmin(A)


def _column_mean(B, A):
    """Column means, exact for constant columns so that centring leaves exact zeros."""
    mean = A.mean(0)
    const = _constant(B, A)
    mean[const] = A[0][const]
    return mean


def standardise(B, X):
    """Column means and standard deviations (ddof 0); constant columns get mean exact, scale 1."""
    mean = _column_mean(B, X)
    scale = X.std(0) if B.name == "numpy" else X.std(0, correction=0)
    scale[_constant(B, X) | (scale == 0)] = 1.0
    return mean, scale


def _r_from_moments(B, cov, var_p, var_y, flat):
    denom = B.sqrt(var_p * var_y)
    r = cov / (denom + (denom == 0))
    r[flat | (denom == 0)] = 0.0
    return r


def _split_scores(B, P, RtY, shrink, y_val, out):
    """Add the held-out r of every alpha to ``out`` (n_alphas, m_chunk).

    ``P`` (n_val, k) is the projection of the held-out rows, ``RtY`` (k, m) the training
    targets in the decomposition's basis, ``shrink`` (n_alphas, k) ``1 / (eig + alpha)``.
    r needs the covariance and the two variances: with ``P`` centred on its own rows the
    covariance of every alpha is one small product, and only the prediction variance needs
    the full (n_val, k) x (k, m) product per alpha.
    """
    Pc = P - P.mean(0)
    yc = y_val - y_val.mean(0)
    var_y = (yc * yc).sum(0)
    cross = RtY * (Pc.T @ yc)  # (k, m)
    cov = shrink @ cross  # (n_alphas, m)
    # A target constant in training has RtY exactly 0 (exact centring), so its predictions
    # are exactly flat and the zero denominator sets r = 0.
    const_y = _constant(B, y_val)
    for a in range(shrink.shape[0]):
        pred = Pc @ (RtY * shrink[a][:, None])
        out[a] += _r_from_moments(B, cov[a], (pred * pred).sum(0), var_y, const_y)


def _rel_tol(B) -> float:
    # Predictions whose variance is rounding noise count as constant (r = 0).
    return 1e-20 if B.dtype in (np.float64,) or str(B.dtype).endswith("float64") else 1e-10


def inner_cv_scores(B, Xz, Y, splits: Sequence[Split], alphas, target_chunk: int, gram=None):
    """Mean over ``splits`` of held-out Pearson r per alpha and target: (n_alphas, m).

    ``Xz`` (n, p) and ``Y`` (n, m) are backend arrays (Y may be numpy, moved by chunks).
    Each split re-centres features and targets on its own training rows, as himalaya's
    ``solve_ridge_cv_svd(fit_intercept=True)`` does. ``gram`` (n, n): ``Xz Xz^T`` when the
    caller has it; with fewer rows than features it is computed here and every split is
    solved from its blocks.
    """
    m = Y.shape[1]
    alphas_b = B.asarray(alphas)
    total = B.zeros((len(alphas), m))
    if gram is None and _gram_path(*Xz.shape):
        gram = _gram(Xz)
    for train, val in splits:
        tr, va = B.index(train), B.index(val)
        if gram is not None:
            rows, eig, P = _decompose_gram(B, *_centred_grams(gram, tr, va))
        else:
            X_tr = Xz[tr]
            mean = _column_mean(B, X_tr)
            basis, rows, eig = _decompose(B, X_tr - mean)
            P = (Xz[va] - mean) @ basis
        shrink = 1.0 / (eig[None, :] + alphas_b[:, None])
        for chunk in _chunks(m, target_chunk):
            Yc = B.asarray(Y[:, chunk])
            Y_tr = Yc[tr]
            RtY = rows.T @ (Y_tr - _column_mean(B, Y_tr))
            _split_scores(B, P, RtY, shrink, Yc[va], total[:, chunk])
    return total / len(splits)


def best_alpha_index(B, cv_scores):
    """Index of the best alpha per target; exact ties go to the larger alpha."""
    n_alphas = cv_scores.shape[0]
    flipped = cv_scores.flip(0) if B.name == "torch" else cv_scores[::-1]
    idx = flipped.argmax(0) if B.name == "torch" else np.argmax(flipped, axis=0)
    return n_alphas - 1 - idx


def block_permutations(
    lengths: Sequence[int], n_permutations: int, block: int, seed: int = 0
) -> list[np.ndarray]:
    """Per held-out fold, ``n_permutations`` row orders that shuffle blocks of ``block`` TRs.

    Returns one (n_permutations, n_i) integer array per fold of length ``n_i``. Blocks keep
    the autocorrelation of the data inside them, so the null respects it.
    """
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        starts = np.arange(0, n, block)
        blocks = [np.arange(s, min(s + block, n)) for s in starts]
        orders = np.empty((n_permutations, n), dtype=np.int64)
        for q in range(n_permutations):
            orders[q] = np.concatenate([blocks[i] for i in rng.permutation(len(blocks))])
        out.append(orders)
    return out


#: Elements of the (permutations, held-out rows, targets) block gathered at once for the null.
NULL_BLOCK_ELEMENTS = 1 << 22


def _add_null_cross(B, p_c, y_c, orders: np.ndarray, out: np.ndarray) -> None:
    """Add ``sum_t p_c[t] * y_c[order[t]]`` for each row order to ``out`` (n_permutations, m).

    ``p_c`` and ``y_c`` (n_test, m) are backend arrays, ``orders`` (n_permutations, n_test).
    The targets of many permutations are gathered in one indexing operation, a block of
    permutations at a time so that memory stays under ``NULL_BLOCK_ELEMENTS`` elements.
    """
    n_test, m = p_c.shape
    step = max(1, NULL_BLOCK_ELEMENTS // max(1, n_test * m))
    for block in _chunks(orders.shape[0], step):
        gathered = y_c[B.index(orders[block])]  # (permutations, n_test, m)
        out[block] += B.to_numpy((gathered * p_c).sum(1))


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
) -> CVResult:
    """Outer leave-one-segment-out ridge with per-target alphas from an inner loop.

    ``X`` (n, p) is the delayed design and ``Y`` (n, m) the targets, rows in time order (TRs
    of the runs, concatenated); ``segments`` the held-out row sets (``contiguous_folds``), at
    least 3. In outer fold i, training rows are the other segments less ``gap`` rows on each
    side of segment i; features are z-scored on them; the alpha of each target maximises the
    mean held-out r over the inner leave-one-segment-out folds of the remaining segments
    (with the same gap); the refit on all training rows predicts segment i. Scores of the
    concatenated predictions come from running sums, so predictions of all folds are never
    held at once. With ``n_permutations``, ``CVResult.null`` holds the r of the predictions
    with block-permuted held-out data (``block_permutations``).

    ``test`` fixes a test set instead: the indices of the segments (a test story) that are
    held out and scored, each in turn, with training and the inner folds on the other segments
    only (at least 2); ``CVResult.held_out`` then lists the scored rows.
    """
    B = backend or get_backend("numpy")
    scored, training = _outer_segments(len(segments), test)
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
    sums = _HeldOutSums(B, Y, target_chunk, len(scored), n_permutations, keep_predictions)
    Xb = B.asarray(X)
    for k, i in enumerate(scored):
        train, held = outer[i]
        if train.size < 2:
            raise BrainshapeError(f"fold {i}: fewer than 2 training TRs remain after the gap.")
        # Inner folds: the other (training) segments, with this outer fold's training rows only.
        inner_segments = [segments[j][np.isin(segments[j], train)] for j in training if j != i]
        inner_segments = [s for s in inner_segments if s.size]
        position = np.full(X.shape[0], -1)
        position[train] = np.arange(train.size)
        inner = [(position[a], position[b]) for a, b in folds_from_segments(inner_segments, gap)]
        fold_perms = None if perms is None else perms[i]
        _outer_fold(B, Xb, Y, k, train, held, inner, alphas, target_chunk, sums, fold_perms)
    result = sums.result()
    if test is not None:
        rows = np.concatenate([segments[i] for i in scored])
        result.held_out = rows
        if result.predictions is not None:
            result.predictions = result.predictions[rows]
    return result


def _outer_segments(n: int, test: Sequence[int] | None) -> tuple[list[int], list[int]]:
    """(segments scored as outer folds, segments that train): every segment both, or, with a
    fixed ``test`` set, the test segments scored and the others training."""
    if test is None:
        if n < 3:
            raise BrainshapeError(
                f"cross-validation needs at least 3 folds (stories or blocks): one held out "
                f"for scoring and two to choose alphas, got {n}. Use more stories."
            )
        return list(range(n)), list(range(n))
    scored = sorted({int(i) for i in test})
    training = [j for j in range(n) if j not in scored]
    if not scored or scored[0] < 0 or scored[-1] >= n:
        raise BrainshapeError(f"test segments {list(test)} are not among the {n} segments.")
    if len(training) < 2:
        raise BrainshapeError(
            f"a fixed test set leaves {len(training)} training fold(s); choosing alphas needs "
            "at least 2 (more training stories, or encoding.folds: blocks to cut them)."
        )
    return scored, training


def _outer_fold(B, Xb, Y, i, train, test, inner, alphas, target_chunk, sums, orders) -> None:
    """Choose the alphas of outer fold ``i`` on its training rows, refit, predict ``test``."""
    tr, te = B.index(train), B.index(test)
    x_mean, x_scale = standardise(B, Xb[tr])
    Xz = (Xb - x_mean) / x_scale
    Xz_tr = Xz[tr]
    gram = None
    if _gram_path(train.size + test.size, Xz.shape[1]):
        # One Gram matrix of the training and held-out rows serves the inner splits and
        # the refit: training rows first, so its leading block is the training Gram.
        gram = _gram(Xz[B.index(np.concatenate([train, test]))])
    K_tt = None if gram is None else gram[: train.size, : train.size]
    cv = inner_cv_scores(B, Xz_tr, Y[train], inner, alphas, target_chunk, gram=K_tt)
    chosen = B.asarray(alphas)[best_alpha_index(B, cv)]
    sums.fold_alphas[i] = B.to_numpy(chosen)

    # Z-scored on the training rows: already centred.
    if gram is None:
        basis, rows, eig = _decompose(B, Xz_tr)
        P = Xz[te] @ basis
    else:
        rows, eig, P = _decompose_gram(B, K_tt, gram[train.size :, : train.size])
    sums.n_total += test.size
    for chunk in _chunks(Y.shape[1], target_chunk):
        Yc = B.asarray(Y[:, chunk])
        Y_tr = Yc[tr]
        y_mean = _column_mean(B, Y_tr)
        coef = (rows.T @ (Y_tr - y_mean)) / (eig[:, None] + chosen[chunk][None, :])
        pred = P @ coef + y_mean
        sums.add(i, test, chunk, pred, Yc[te], orders)


class _HeldOutSums:
    """Running sums over the outer folds from which ``cross_validate`` scores the targets.

    The r of the concatenated held-out predictions needs five sums per target (of p, y, p^2,
    y^2 and p y, taken about a reference near the target's mean for accuracy); the null needs
    the cross sum of each permutation.
    """

    def __init__(self, B, Y, target_chunk, n_folds, n_permutations, keep_predictions):
        n, m = Y.shape
        self.B = B
        self.rel = _rel_tol(B)
        self.y_ref = np.zeros(m)
        self.constant_y = np.zeros(m, dtype=bool)
        for chunk in _chunks(m, target_chunk):
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
        flat = _constant(B, y_test) | (var_p <= self.rel * (pred * pred).sum(0))
        self.fold_scores[i, chunk] = B.to_numpy(
            _r_from_moments(B, (pc * yc).sum(0), var_p, (yc * yc).sum(0), flat)
        )
        ref = B.asarray(self.y_ref[chunk])
        p_c = pred - ref
        y_c = y_test - ref
        moments = [p_c.sum(0), y_c.sum(0), (p_c**2).sum(0), (y_c**2).sum(0)]
        moments.append((p_c * y_c).sum(0))
        for k, value in enumerate(moments):
            self.sums[k, chunk] += B.to_numpy(value)
        if orders is not None:
            _add_null_cross(B, p_c, y_c, orders, self.null_cross[:, chunk])

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


# --- the estimator ----------------------------------------------------------------------------


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
        x_mean = _column_mean(B, Xb)
        basis, rows, eig = _decompose(B, Xb - x_mean)
        m = Y.shape[1]
        self.coef_ = np.zeros((X.shape[1], m))
        self.intercept_ = np.zeros(m)
        for chunk in _chunks(m, int(self.target_chunk)):
            Yc = B.asarray(Y[:, chunk])
            y_mean = _column_mean(B, Yc)
            c = basis @ ((rows.T @ (Yc - y_mean)) / (eig[:, None] + chosen[chunk][None, :]))
            self.coef_[:, chunk] = B.to_numpy(c)
            self.intercept_[chunk] = B.to_numpy(y_mean - x_mean @ c)
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
