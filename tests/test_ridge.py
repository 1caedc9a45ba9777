"""The ridge engine: himalaya equality, contiguous folds, backends, permutations."""

import numpy as np
import pytest
from sklearn.model_selection import KFold

from brainshape import ridge
from brainshape.errors import BrainshapeError


def _data(rng, lengths, p, m, noise=2.0):
    scale = rng.uniform(0.5, 3, p)
    X = rng.standard_normal((sum(lengths), p)) * scale + 3.0
    w = rng.standard_normal((p, m)) / scale[:, None]
    Y = X @ w + noise * rng.standard_normal((X.shape[0], m))
    return X, Y


def _himalaya_outer(X, Y, alphas, segments, gap):
    """The same outer loop written with himalaya's solver for the inner alpha choice."""
    from himalaya.backend import set_backend
    from himalaya.ridge import solve_ridge_cv_svd
    from himalaya.scoring import correlation_score

    set_backend("numpy")
    preds = np.zeros_like(Y)
    alphas_per_fold = []
    fold_r = []
    for i, (train, test) in enumerate(ridge.folds_from_segments(segments, gap)):
        mean, sd = X[train].mean(0), X[train].std(0)
        Xz = (X - mean) / sd
        others = [s[np.isin(s, train)] for j, s in enumerate(segments) if j != i]
        pos = np.full(len(X), -1)
        pos[train] = np.arange(train.size)
        inner = [(pos[a], pos[b]) for a, b in ridge.folds_from_segments(others, gap)]
        best, coefs, _, intercept = solve_ridge_cv_svd(
            Xz[train],
            Y[train],
            alphas=alphas,
            fit_intercept=True,
            score_func=correlation_score,
            cv=inner,
            local_alpha=True,
            warn=False,
        )
        preds[test] = Xz[test] @ coefs + intercept
        alphas_per_fold.append(best)
        fold_r.append([np.corrcoef(preds[test, t], Y[test, t])[0, 1] for t in range(Y.shape[1])])
    rows = np.concatenate(segments)
    r = [np.corrcoef(preds[rows, t], Y[rows, t])[0, 1] for t in range(Y.shape[1])]
    return np.array(alphas_per_fold), np.array(fold_r), np.array(r)


@pytest.mark.parametrize(
    ("lengths", "n_blocks", "gap"), [((50, 40, 60, 45), None, 0), ((200,), 5, 4)]
)
def test_cross_validate_equals_himalaya_with_same_alphas_and_folds(lengths, n_blocks, gap):
    rng = np.random.default_rng(10)
    X, Y = _data(rng, lengths, p=15, m=30, noise=6.0)
    alphas = np.logspace(0, 4, 9)
    segments = ridge.contiguous_folds(lengths, n_blocks=n_blocks)
    result = ridge.cross_validate(X, Y, alphas, segments, gap=gap, target_chunk=7)
    ref_alphas, ref_fold_r, ref_r = _himalaya_outer(X, Y, alphas, segments, gap)
    np.testing.assert_allclose(result.alphas, ref_alphas, rtol=1e-12)
    assert len(np.unique(result.alphas)) > 2  # targets really choose different alphas
    np.testing.assert_allclose(result.fold_scores, ref_fold_r, atol=1e-6)
    np.testing.assert_allclose(result.scores, ref_r, atol=1e-6)


def test_torch_float64_equals_numpy_and_float32_is_close():
    rng = np.random.default_rng(11)
    lengths = (40, 50, 45)
    X, Y = _data(rng, lengths, p=25, m=12)  # p < training rows and > inner train rows
    alphas = np.logspace(-1, 4, 7)
    segments = ridge.contiguous_folds(lengths)
    ref = ridge.cross_validate(X, Y, alphas, segments)
    t64 = ridge.cross_validate(
        X, Y, alphas, segments, backend=ridge.get_backend("torch", "float64")
    )
    np.testing.assert_allclose(t64.scores, ref.scores, atol=1e-10)
    np.testing.assert_array_equal(t64.alphas, ref.alphas)
    t32 = ridge.cross_validate(
        X, Y, alphas, segments, backend=ridge.get_backend("torch", "float32")
    )
    np.testing.assert_allclose(t32.scores, ref.scores, atol=1e-3)


def test_wide_design_uses_the_small_gram_matrix_and_matches_the_tall_path():
    # p > n: the decomposition goes through X X^T; the result must equal sklearn's Ridge.
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(12)
    X = rng.standard_normal((30, 80))
    Y = rng.standard_normal((30, 3))
    B = ridge.get_backend("numpy")
    Xc = X - X.mean(0)
    basis, rows, eig = ridge._decompose(B, Xc)
    coef = basis @ ((rows.T @ (Y - Y.mean(0))) / (eig[:, None] + 5.0))
    np.testing.assert_allclose(coef, Ridge(alpha=5.0).fit(X, Y).coef_.T, atol=1e-10)


def test_shuffled_splits_are_refused_for_time_ordered_data():
    splits = list(KFold(5, shuffle=True, random_state=0).split(np.zeros((100, 1))))
    with pytest.raises(BrainshapeError, match="fold 0: the held-out TRs are not one contiguous"):
        ridge.check_time_ordered(splits, 100)
    # Unshuffled K-fold holds out contiguous blocks: accepted.
    ridge.check_time_ordered(list(KFold(5).split(np.zeros((100, 1)))), 100)
    # A segment list in scrambled order reaches the same check inside cross_validate.
    rng = np.random.default_rng(13)
    X, Y = _data(rng, (90,), p=3, m=2)
    order = rng.permutation(90)
    shuffled = [np.sort(order[k::3]) for k in range(3)]
    with pytest.raises(BrainshapeError, match="shuffled or interleaved split"):
        ridge.cross_validate(X, Y, [1.0, 10.0], shuffled)


def test_gap_drops_training_rows_next_to_the_held_out_block():
    segments = ridge.contiguous_folds([30], n_blocks=3)
    splits = ridge.folds_from_segments(segments, gap=2)
    train, test = splits[1]
    np.testing.assert_array_equal(test, np.arange(10, 20))
    np.testing.assert_array_equal(train, np.r_[0:8, 22:30])
    with pytest.raises(BrainshapeError, match="encoding.n_blocks must be a whole number of at"):
        ridge.contiguous_folds([30], n_blocks=2)
    with pytest.raises(BrainshapeError, match="encoding.gap must be a non-negative"):
        ridge.folds_from_segments(segments, gap=-1)


def test_block_permutation_p_values_separate_signal_from_noise():
    rng = np.random.default_rng(14)
    lengths = (120, 120, 120)
    n = sum(lengths)
    X = rng.standard_normal((n, 4))
    Y = np.column_stack([X @ [1.0, -1, 0.5, 0] + rng.standard_normal(n), rng.standard_normal(n)])
    result = ridge.cross_validate(
        X, Y, [1.0, 100.0], ridge.contiguous_folds(lengths), n_permutations=99, seed=1
    )
    assert result.null.shape == (99, 2)
    assert result.p_values[0] == pytest.approx(0.01)  # no permutation beats the real signal
    assert result.p_values[1] > 0.05
    # The definition, recomputed from the null.
    expected = (1 + (result.null[:, 1] >= result.scores[1]).sum()) / 100
    assert result.p_values[1] == pytest.approx(expected)


def test_block_permutations_keep_blocks_intact():
    (orders,) = ridge.block_permutations([25], n_permutations=4, block=10, seed=0)
    for order in orders:
        assert sorted(order) == list(range(25))
        starts = [i for i in range(25) if order[i] % 10 == 0]
        for s in starts:  # each block is copied whole and in order
            run = order[s : s + min(10, 25 - order[s])]
            np.testing.assert_array_equal(run, np.arange(order[s], order[s] + len(run)))


def test_unknown_backend_is_named():
    with pytest.raises(BrainshapeError, match="encoding.backend must be one of"):
        ridge.get_backend("jax")


def test_solve_ridge_cv_equals_himalaya_solve_ridge_cv_svd():
    from himalaya.backend import set_backend
    from himalaya.ridge import solve_ridge_cv_svd
    from himalaya.scoring import correlation_score

    set_backend("numpy")
    rng = np.random.default_rng(15)
    X, Y = _data(rng, (300,), p=40, m=25, noise=8.0)
    alphas = np.logspace(-1, 4, 11)
    splits = ridge.folds_from_segments(ridge.contiguous_folds([300], n_blocks=5))
    fit = ridge.solve_ridge_cv(X, Y, alphas, splits, target_chunk=10)
    best, coefs, cv_scores, intercept = solve_ridge_cv_svd(
        X, Y, alphas=alphas, fit_intercept=True, score_func=correlation_score, cv=splits,
        local_alpha=True, warn=False,
    )  # fmt: skip
    np.testing.assert_allclose(fit.alphas, best, rtol=1e-12)
    assert len(np.unique(fit.alphas)) > 2
    np.testing.assert_allclose(fit.coef, coefs, atol=1e-6)
    np.testing.assert_allclose(fit.intercept, intercept, atol=1e-6)
    chosen = np.take_along_axis(fit.cv_scores, np.searchsorted(alphas, fit.alphas)[None], 0)
    np.testing.assert_allclose(chosen[0], cv_scores[0], atol=1e-6)


@pytest.mark.parametrize(
    ("lengths", "n_blocks", "gap"), [((50, 40, 60, 45), None, 0), ((200,), 5, 4)]
)
def test_wide_design_from_one_gram_matrix_equals_per_split_decompositions_and_himalaya(
    lengths, n_blocks, gap, monkeypatch
):
    # More columns than rows (as delayed hidden states of a story set): every split is solved
    # from blocks of one Gram matrix per outer fold.
    rng = np.random.default_rng(16)
    X, Y = _data(rng, lengths, p=260, m=14, noise=4.0)
    alphas = np.logspace(0, 5, 11)
    segments = ridge.contiguous_folds(lengths, n_blocks=n_blocks)
    fast = ridge.cross_validate(X, Y, alphas, segments, gap=gap, target_chunk=5)
    ref_alphas, ref_fold_r, ref_r = _himalaya_outer(X, Y, alphas, segments, gap)
    np.testing.assert_allclose(fast.alphas, ref_alphas, rtol=1e-12)
    assert len(np.unique(fast.alphas)) > 2
    np.testing.assert_allclose(fast.fold_scores, ref_fold_r, atol=1e-6)
    np.testing.assert_allclose(fast.scores, ref_r, atol=1e-6)
    # The per-split decompositions of the features give the same numbers to rounding.
    monkeypatch.setattr(ridge, "_gram_path", lambda n_rows, n_features: False)
    slow = ridge.cross_validate(X, Y, alphas, segments, gap=gap, target_chunk=5)
    np.testing.assert_array_equal(fast.alphas, slow.alphas)
    np.testing.assert_allclose(fast.scores, slow.scores, atol=1e-12)
    np.testing.assert_allclose(fast.fold_scores, slow.fold_scores, atol=1e-12)


def test_wide_solve_ridge_cv_equals_himalaya():
    from himalaya.backend import set_backend
    from himalaya.ridge import solve_ridge_cv_svd
    from himalaya.scoring import correlation_score

    set_backend("numpy")
    rng = np.random.default_rng(17)
    X, Y = _data(rng, (120,), p=300, m=9, noise=3.0)
    alphas = np.logspace(0, 5, 11)
    splits = ridge.folds_from_segments(ridge.contiguous_folds([120], n_blocks=4))
    fit = ridge.solve_ridge_cv(X, Y, alphas, splits)
    best, coefs, cv_scores, intercept = solve_ridge_cv_svd(
        X, Y, alphas=alphas, fit_intercept=True, score_func=correlation_score, cv=splits,
        local_alpha=True, warn=False,
    )  # fmt: skip
    np.testing.assert_allclose(fit.alphas, best, rtol=1e-12)
    np.testing.assert_allclose(fit.coef, coefs, atol=1e-6)
    np.testing.assert_allclose(fit.intercept, intercept, atol=1e-6)


def test_permutation_null_is_the_r_of_the_predictions_with_block_permuted_data(monkeypatch):
    rng = np.random.default_rng(18)
    lengths = (60, 45, 55)
    X, Y = _data(rng, lengths, p=30, m=6, noise=3.0)
    segments = ridge.contiguous_folds(lengths)
    kw = {"n_permutations": 37, "permutation_block": 7, "seed": 3, "keep_predictions": True}
    result = ridge.cross_validate(X, Y, [1.0, 10.0, 100.0], segments, **kw)
    # Reference: permute the data of each held-out fold by the documented block orders, one
    # permutation at a time, and correlate with the concatenated predictions.
    orders = ridge.block_permutations(lengths, 37, 7, seed=3)
    for q in range(37):
        permuted = np.concatenate([Y[s][orders[i][q]] for i, s in enumerate(segments)])
        for t in range(Y.shape[1]):
            r = np.corrcoef(result.predictions[:, t], permuted[:, t])[0, 1]
            assert result.null[q, t] == pytest.approx(r, abs=1e-12)
    # Gathering one permutation at a time or many at once gives the same null.
    monkeypatch.setattr(ridge, "NULL_BLOCK_ELEMENTS", 1)
    one_by_one = ridge.cross_validate(X, Y, [1.0, 10.0, 100.0], segments, **kw)
    np.testing.assert_allclose(one_by_one.null, result.null, atol=1e-14)
    np.testing.assert_array_equal(one_by_one.p_values, result.p_values)


def test_auto_backend_does_not_import_torch_without_a_gpu_driver():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from brainshape import ridge\n"
        "ridge.GPU_DEVICE_FILES = ('/nonexistent/nvidiactl',)\n"
        "assert ridge.get_backend('auto').name == 'numpy'\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_wide_design_on_torch_float64_equals_numpy():
    rng = np.random.default_rng(19)
    lengths = (40, 35, 45)
    X, Y = _data(rng, lengths, p=150, m=8)
    alphas = np.logspace(0, 5, 6)
    segments = ridge.contiguous_folds(lengths)
    kw = {"n_permutations": 9, "seed": 2}
    ref = ridge.cross_validate(X, Y, alphas, segments, **kw)
    t64 = ridge.cross_validate(
        X, Y, alphas, segments, backend=ridge.get_backend("torch", "float64"), **kw
    )
    np.testing.assert_array_equal(t64.alphas, ref.alphas)
    np.testing.assert_allclose(t64.scores, ref.scores, atol=1e-10)
    np.testing.assert_allclose(t64.null, ref.null, atol=1e-10)
