"""The ridge engine: every alpha of a grid from one decomposition, contiguous folds, backends.

Time-ordered fMRI is cross-validated with contiguous folds only: a fold holds out one story
(``contiguous_folds(run_lengths)``) or one contiguous block of TRs
(``contiguous_folds(run_lengths, n_blocks=...)``), with ``gap`` TRs dropped from the training
rows on either side of it (``folds_from_segments(segments, gap)``, or ``cross_validate(...,
gap=...)``).
``check_time_ordered`` refuses splits whose held-out rows are not one contiguous block, the
signature of a shuffled K-fold.

``cross_validate`` is the outer loop: per outer fold the features are z-scored on the training
rows, the alpha of every target is chosen by an inner contiguous cross-validation on those rows
(``inner_cv_scores``), the model is refitted on all training rows and the held-out rows are
predicted. Each training design is decomposed once (eigendecomposition of the smaller Gram
matrix, equivalent to its thin SVD) and that one decomposition serves every alpha and every
block of targets, so stacking the targets of many subjects who heard the same stories costs one
decomposition, not one per subject. With fewer rows than delayed columns (the usual case for
a story set), one Gram matrix of the rows per outer fold serves every inner split and the
refit: their Gram matrices and held-out projections are re-centred blocks of it.

Backends: ``numpy`` (CPU) and ``torch`` (CUDA when present, else CPU). ``dtype="float64"`` is
the reference path (used in tests against himalaya); ``float32`` is the fast path on GPUs.
Targets are processed in blocks of ``target_chunk`` columns so whole-brain voxel targets fit
in memory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from brainshape.errors import BrainshapeError
from brainshape.scoring import permutation_p_values

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


def limit_threads(n_threads: int | None):
    """Context manager capping BLAS/LAPACK threads (threadpoolctl) at the job's threads.

    Oversubscribed multi-threaded LAPACK (more BLAS threads than free cores) can run an
    eigendecomposition tens of times slower than one thread; a job uses what it was given.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n_threads)


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
    fold, the same permutations for every target). ``p_values`` (m,) or None:
    ``(1 + #{null >= score}) / (1 + n_permutations)``. ``predictions`` (n, m) or None: the
    held-out predictions of every row (with ``keep_predictions``).
    """

    scores: np.ndarray
    fold_scores: np.ndarray
    alphas: np.ndarray
    null: np.ndarray | None = None
    p_values: np.ndarray | None = None
    predictions: np.ndarray | None = None


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
) -> CVResult:
    """Outer leave-one-segment-out ridge with per-target alphas from an inner loop.

    ``X`` (n, p) is the delayed design and ``Y`` (n, m) the targets, rows in time order (TRs
    of the runs, concatenated); ``segments`` the held-out row sets (``contiguous_folds``), at
    least 3. In outer fold i, training rows are the other segments less ``gap`` rows on each
    side of segment i; features are z-scored on them; the alpha of each target maximises the
    mean held-out r over the inner leave-one-segment-out folds of the remaining segments
    (with the same gap); the refit on all training rows predicts segment i. Scores of the
    concatenated predictions come from running sums, so predictions of all folds are never
    held at once.
    """
    B = backend or get_backend("numpy")
    if len(segments) < 3:
        raise BrainshapeError(
            f"cross-validation needs at least 3 folds (stories or blocks): one held out for "
            f"scoring and two to choose alphas, got {len(segments)}. Use more stories."
        )
    outer = folds_from_segments(segments, gap)
    check_time_ordered(outer, X.shape[0])
    n, m = Y.shape
    alphas = np.asarray(alphas, dtype=np.float64)
    Xb = B.asarray(X)
    rel = _rel_tol(B)
    perms = (
        block_permutations([len(s) for s in segments], n_permutations, permutation_block, seed)
        if n_permutations
        else None
    )
    y_ref = np.zeros(m)
    constant_y = np.zeros(m, dtype=bool)
    for chunk in _chunks(m, target_chunk):
        Yc = np.asarray(Y[:, chunk], dtype=np.float64)
        y_ref[chunk] = Yc.mean(0)
        constant_y[chunk] = Yc.max(0) == Yc.min(0)
    sums = np.zeros((5, m))
    null_cross = np.zeros((n_permutations, m)) if perms else None
    n_total = 0
    predictions = np.zeros((n, m)) if keep_predictions else None
    fold_scores = np.zeros((len(segments), m))
    fold_alphas = np.zeros((len(segments), m))

    for i, (train, test) in enumerate(outer):
        if train.size < 2:
            raise BrainshapeError(f"fold {i}: fewer than 2 training TRs remain after the gap.")
        tr, te = B.index(train), B.index(test)
        x_mean, x_scale = standardise(B, Xb[tr])
        Xz = (Xb - x_mean) / x_scale
        # Inner folds: the other segments, with the training rows of this outer fold only.
        inner_segments = [s[np.isin(s, train)] for j, s in enumerate(segments) if j != i]
        inner_segments = [s for s in inner_segments if s.size]
        position = np.full(n, -1)
        position[train] = np.arange(train.size)
        inner = [(position[a], position[b]) for a, b in folds_from_segments(inner_segments, gap)]
        Xz_tr = Xz[tr]
        gram = None
        if _gram_path(train.size + test.size, Xz.shape[1]):
            # One Gram matrix of the training and held-out rows serves the inner splits and
            # the refit: training rows first, so its leading block is the training Gram.
            gram = _gram(Xz[B.index(np.concatenate([train, test]))])
        K_tt = None if gram is None else gram[: train.size, : train.size]
        cv = inner_cv_scores(B, Xz_tr, Y[train], inner, alphas, target_chunk, gram=K_tt)
        chosen = B.asarray(alphas)[best_alpha_index(B, cv)]
        fold_alphas[i] = B.to_numpy(chosen)

        # Z-scored on the training rows: already centred.
        if gram is None:
            basis, rows, eig = _decompose(B, Xz_tr)
            P = Xz[te] @ basis
        else:
            rows, eig, P = _decompose_gram(B, K_tt, gram[train.size :, : train.size])
        n_total += test.size
        for chunk in _chunks(m, target_chunk):
            Yc = B.asarray(Y[:, chunk])
            Y_tr = Yc[tr]
            y_mean = _column_mean(B, Y_tr)
            coef = (rows.T @ (Y_tr - y_mean)) / (eig[:, None] + chosen[chunk][None, :])
            pred = P @ coef + y_mean
            if predictions is not None:
                predictions[test, chunk] = B.to_numpy(pred)
            y_test = Yc[te]
            pc = pred - pred.mean(0)
            yc = y_test - y_test.mean(0)
            var_p = (pc * pc).sum(0)
            flat = _constant(B, y_test) | (var_p <= rel * (pred * pred).sum(0))
            fold_scores[i, chunk] = B.to_numpy(
                _r_from_moments(B, (pc * yc).sum(0), var_p, (yc * yc).sum(0), flat)
            )
            ref = B.asarray(y_ref[chunk])
            p_c = pred - ref
            y_c = y_test - ref
            moments = [p_c.sum(0), y_c.sum(0), (p_c**2).sum(0), (y_c**2).sum(0)]
            moments.append((p_c * y_c).sum(0))
            for k, value in enumerate(moments):
                sums[k, chunk] += B.to_numpy(value)
            if perms is not None:
                _add_null_cross(B, p_c, y_c, perms[i], null_cross[:, chunk])

    sp, sy, spp, syy, spy = sums
    var_p = spp - sp**2 / n_total
    var_y = syy - sy**2 / n_total
    flat = constant_y | (var_p <= 1e-10 * spp)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = (spy - sp * sy / n_total) / np.sqrt(var_p * var_y)
        scores[flat] = 0.0
        null = p_values = None
        if perms is not None:
            null = (null_cross - sp * sy / n_total) / np.sqrt(var_p * var_y)
            null[:, flat] = 0.0
            null = np.clip(null, -1.0, 1.0)
    scores = np.clip(scores, -1.0, 1.0)
    if null is not None:
        p_values = permutation_p_values(scores, null)
    return CVResult(
        scores=scores,
        fold_scores=fold_scores,
        alphas=fold_alphas,
        null=null,
        p_values=p_values,
        predictions=predictions,
    )


@dataclass
class RidgeCVFit:
    """One level of ridge cross-validation (numpy float64 arrays).

    ``alphas`` (m,): the chosen alpha per target; ``coef`` (p, m) and ``intercept`` (m,) the
    refit on all rows (``X @ coef + intercept``); ``cv_scores`` (n_alphas, m): mean held-out
    Pearson r of every alpha over the splits.
    """

    alphas: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    cv_scores: np.ndarray


def solve_ridge_cv(
    X: np.ndarray,
    Y: np.ndarray,
    alphas: np.ndarray,
    splits: Sequence[Split],
    *,
    backend=None,
    target_chunk: int = DEFAULT_TARGET_CHUNK,
) -> RidgeCVFit:
    """Per-target alpha by cross-validation over ``splits``, then a refit on all rows.

    The counterpart of himalaya's ``solve_ridge_cv_svd(X, Y, alphas, cv=splits,
    fit_intercept=True, score_func=correlation_score, local_alpha=True)`` (no feature
    scaling here: pass z-scored features if wanted). Splits must be time-ordered
    (``check_time_ordered``).
    """
    B = backend or get_backend("numpy")
    check_time_ordered(splits, X.shape[0])
    alphas = np.asarray(alphas, dtype=np.float64)
    Xb = B.asarray(X)
    cv = inner_cv_scores(B, Xb, Y, splits, alphas, target_chunk)
    chosen = B.asarray(alphas)[best_alpha_index(B, cv)]
    x_mean = _column_mean(B, Xb)
    basis, rows, eig = _decompose(B, Xb - x_mean)
    m = Y.shape[1]
    coef = np.zeros((X.shape[1], m))
    intercept = np.zeros(m)
    for chunk in _chunks(m, target_chunk):
        Yc = B.asarray(Y[:, chunk])
        y_mean = _column_mean(B, Yc)
        c = basis @ ((rows.T @ (Yc - y_mean)) / (eig[:, None] + chosen[chunk][None, :]))
        coef[:, chunk] = B.to_numpy(c)
        intercept[chunk] = B.to_numpy(y_mean - x_mean @ c)
    return RidgeCVFit(
        alphas=B.to_numpy(chosen), coef=coef, intercept=intercept, cv_scores=B.to_numpy(cv)
    )
