"""The ridge engine and its estimator: himalaya and scikit-learn equality, contiguous folds,
backends, permutations."""

import math

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler

from brainshape import ridge, scoring
from brainshape.errors import BrainshapeError
from brainshape.ridge import crossval, scores


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
    basis, rows, eig = ridge.decompose(B, Xc)
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
    p_values = scoring.permutation_p_values(result.scores, result.null)
    assert p_values[0] == pytest.approx(0.01)  # no permutation beats the real signal
    assert p_values[1] > 0.05
    # The definition, recomputed from the null.
    expected = (1 + (result.null[:, 1] >= result.scores[1]).sum()) / 100
    assert p_values[1] == pytest.approx(expected)


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


def test_ridge_cv_estimator_equals_himalaya_solve_ridge_cv_svd():
    from himalaya.backend import set_backend
    from himalaya.ridge import solve_ridge_cv_svd
    from himalaya.scoring import correlation_score

    set_backend("numpy")
    rng = np.random.default_rng(15)
    X, Y = _data(rng, (300,), p=40, m=25, noise=8.0)
    alphas = np.logspace(-1, 4, 11)
    splits = ridge.folds_from_segments(ridge.contiguous_folds([300], n_blocks=5))
    fit = ridge.RidgeCV(alphas, cv=splits, target_chunk=10).fit(X, Y)
    best, coefs, cv_scores, intercept = solve_ridge_cv_svd(
        X, Y, alphas=alphas, fit_intercept=True, score_func=correlation_score, cv=splits,
        local_alpha=True, warn=False,
    )  # fmt: skip
    np.testing.assert_allclose(fit.best_alphas_, best, rtol=1e-12)
    assert len(np.unique(fit.best_alphas_)) > 2
    np.testing.assert_allclose(fit.coef_, coefs, atol=1e-6)
    np.testing.assert_allclose(fit.intercept_, intercept, atol=1e-6)
    chosen = np.take_along_axis(fit.cv_scores_, np.searchsorted(alphas, fit.best_alphas_)[None], 0)
    np.testing.assert_allclose(chosen[0], cv_scores[0], atol=1e-6)
    # An integer cv cuts the same contiguous blocks.
    by_count = ridge.RidgeCV(alphas, cv=5).fit(X, Y)
    np.testing.assert_array_equal(by_count.best_alphas_, fit.best_alphas_)


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
    for module in (crossval, scores):
        monkeypatch.setattr(module, "gram_path", lambda n_rows, n_features: False)
    slow = ridge.cross_validate(X, Y, alphas, segments, gap=gap, target_chunk=5)
    np.testing.assert_array_equal(fast.alphas, slow.alphas)
    np.testing.assert_allclose(fast.scores, slow.scores, atol=1e-12)
    np.testing.assert_allclose(fast.fold_scores, slow.fold_scores, atol=1e-12)


def test_wide_ridge_cv_estimator_equals_himalaya():
    from himalaya.backend import set_backend
    from himalaya.ridge import solve_ridge_cv_svd
    from himalaya.scoring import correlation_score

    set_backend("numpy")
    rng = np.random.default_rng(17)
    X, Y = _data(rng, (120,), p=300, m=9, noise=3.0)
    alphas = np.logspace(0, 5, 11)
    splits = ridge.folds_from_segments(ridge.contiguous_folds([120], n_blocks=4))
    fit = ridge.RidgeCV(alphas, cv=splits).fit(X, Y)
    best, coefs, cv_scores, intercept = solve_ridge_cv_svd(
        X, Y, alphas=alphas, fit_intercept=True, score_func=correlation_score, cv=splits,
        local_alpha=True, warn=False,
    )  # fmt: skip
    np.testing.assert_allclose(fit.best_alphas_, best, rtol=1e-12)
    np.testing.assert_allclose(fit.coef_, coefs, atol=1e-6)
    np.testing.assert_allclose(fit.intercept_, intercept, atol=1e-6)


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
    monkeypatch.setattr(crossval, "NULL_BLOCK_ELEMENTS", 1)
    one_by_one = ridge.cross_validate(X, Y, [1.0, 10.0, 100.0], segments, **kw)
    np.testing.assert_allclose(one_by_one.null, result.null, atol=1e-14)
    np.testing.assert_array_equal(
        scoring.permutation_p_values(one_by_one.scores, one_by_one.null),
        scoring.permutation_p_values(result.scores, result.null),
    )


def test_auto_backend_does_not_import_torch_without_a_gpu_driver():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from brainshape import ridge\n"
        "from brainshape.ridge import backends\n"
        "backends.GPU_DEVICE_FILES = ('/nonexistent/nvidiactl',)\n"
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


# --- moved from the encoding stage's former test-only ridge ------------------------------------


def _random_runs(rng, lengths, p, m, scale=None):
    scale = np.ones(p) if scale is None else scale
    X_runs = [rng.standard_normal((n, p)) * scale + 3.0 for n in lengths]
    w = rng.standard_normal((p, m))
    Y_runs = [X @ (w / scale[:, None]) + 2 * rng.standard_normal((X.shape[0], m)) for X in X_runs]
    return X_runs, Y_runs


def _run_splits(lengths):
    edges = np.cumsum([0, *lengths])
    everything = np.arange(edges[-1])
    splits = []
    for i in range(len(lengths)):
        test = np.arange(edges[i], edges[i + 1])
        splits.append((np.setdiff1d(everything, test), test))
    return splits


def test_ridge_cv_fixed_alpha_equals_sklearn_on_standardised_design():
    rng = np.random.default_rng(0)
    lengths = (30, 25, 35)
    X_runs, Y_runs = _random_runs(rng, lengths, p=6, m=3, scale=np.array([1, 5, 0.1, 2, 1, 1]))
    X_runs = [np.column_stack([X, np.full(len(X), 7.0)]) for X in X_runs]  # constant column
    X, Y = np.concatenate(X_runs), np.concatenate(Y_runs)

    # The engine's z-scoring (constant columns keep scale 1) is scikit-learn's.
    B = ridge.get_backend("numpy")
    mean, scale = ridge.standardise(B, X)
    scaler = StandardScaler().fit(X)
    np.testing.assert_allclose((X - mean) / scale, scaler.transform(X), atol=1e-12)

    fit = ridge.RidgeCV([10.0], cv=_run_splits(lengths), target_chunk=2).fit((X - mean) / scale, Y)
    reference = Ridge(alpha=10.0, fit_intercept=True).fit(scaler.transform(X), Y)
    np.testing.assert_allclose(fit.coef_, reference.coef_.T, atol=1e-10)
    X_new = scaler.transform(rng.standard_normal((7, 7)))
    np.testing.assert_allclose(fit.predict(X_new), reference.predict(X_new), atol=1e-10)
    np.testing.assert_array_equal(fit.best_alphas_, [10.0, 10.0, 10.0])


def test_alpha_selection_equals_brute_force_loop():
    rng = np.random.default_rng(1)
    lengths = (40, 30, 35, 45)
    X_runs, Y_runs = _random_runs(rng, lengths, p=12, m=5)
    alphas = np.logspace(-1, 4, 11)
    Xz = StandardScaler().fit_transform(np.concatenate(X_runs))
    Y = np.concatenate(Y_runs)
    fit = ridge.RidgeCV(alphas, cv=_run_splits(lengths), target_chunk=3).fit(Xz, Y)

    mean_r = np.zeros((alphas.size, Y.shape[1]))
    for train, test in _run_splits(lengths):
        for a, alpha in enumerate(alphas):
            pred = Ridge(alpha=alpha).fit(Xz[train], Y[train]).predict(Xz[test])
            for t in range(Y.shape[1]):
                mean_r[a, t] += np.corrcoef(pred[:, t], Y[test, t])[0, 1] / len(lengths)
    np.testing.assert_allclose(fit.cv_scores_, mean_r, atol=1e-10)
    np.testing.assert_array_equal(fit.best_alphas_, alphas[np.argmax(mean_r, axis=0)])
    assert len(set(fit.best_alphas_)) > 1  # the test data make the targets choose differently


def test_ridge_cv_estimator_api():
    from sklearn.base import clone

    rng = np.random.default_rng(20)
    X, Y = _data(rng, (200,), p=8, m=3)
    est = ridge.RidgeCV(np.logspace(0, 3, 4), cv=4)
    copy = clone(est).set_params(cv=5)
    assert copy.get_params()["cv"] == 5 and est.cv == 4
    assert repr(est).startswith("RidgeCV(alphas=")
    fit = est.fit(X[:150], Y[:150])
    r = fit.score(X[150:], Y[150:])
    expected = [np.corrcoef(fit.predict(X[150:])[:, t], Y[150:, t])[0, 1] for t in range(3)]
    np.testing.assert_allclose(r, expected, atol=1e-12)
    one = ridge.RidgeCV(np.logspace(0, 3, 4), cv=4).fit(X[:150], Y[:150, 0])
    assert one.predict(X[150:]).shape == (50,)
    assert one.score(X[150:], Y[150:, 0]) == pytest.approx(r[0])
    with pytest.raises(BrainshapeError, match="cv must be between 2 and the 150 rows"):
        ridge.RidgeCV(cv=1).fit(X[:150], Y[:150])
    shuffled = list(KFold(4, shuffle=True, random_state=0).split(X))
    with pytest.raises(BrainshapeError, match="shuffled or interleaved split"):
        ridge.RidgeCV(cv=shuffled).fit(X, Y)
    with pytest.raises(BrainshapeError, match="call fit before predict"):
        ridge.RidgeCV().predict(X)
    with pytest.raises(BrainshapeError, match="alphas must be a non-empty list of positive"):
        ridge.RidgeCV([0.0, 1.0]).fit(X, Y)


def test_planted_signal_recovered_at_theoretical_correlation():
    rng = np.random.default_rng(3)
    snr = 1.0
    lengths = (500, 500, 500, 500)
    p = 8
    w = rng.standard_normal(p)
    X_runs, Y_runs = [], []
    for n in lengths:
        X = rng.standard_normal((n, p))
        signal = X @ w / np.linalg.norm(w)  # unit variance
        noise = rng.standard_normal((n, 2)) / math.sqrt(snr)
        X_runs.append(X)
        Y_runs.append(np.column_stack([signal, np.zeros(n)]) + noise)
    result = ridge.cross_validate(
        np.concatenate(X_runs),
        np.concatenate(Y_runs),
        np.logspace(-1, 5, 13),
        ridge.contiguous_folds(lengths),
    )
    assert result.scores[0] == pytest.approx(math.sqrt(snr / (1 + snr)), abs=0.03)
    assert abs(result.scores[1]) < 0.1
    assert result.fold_scores.shape == (4, 2) and result.alphas.shape == (4, 2)
    assert np.all(result.fold_scores[:, 0] > 0.6)


def test_cross_validate_equals_manual_outer_loop_and_ignores_chunking():
    rng = np.random.default_rng(4)
    lengths = (30, 40, 35, 25)
    X_runs, Y_runs = _random_runs(rng, lengths, p=10, m=7)
    Y_runs[2][:, 3] = 5.0  # constant within one run only
    alphas = np.logspace(0, 4, 5)
    X, Y = np.concatenate(X_runs), np.concatenate(Y_runs)
    segments = ridge.contiguous_folds(lengths)
    result = ridge.cross_validate(X, Y, alphas, segments, target_chunk=3)

    # The outer loop written out with the estimator: features z-scored on the training runs,
    # alphas chosen by leaving one training run out, the held-out run predicted.
    predictions = []
    for i, (train, test) in enumerate(ridge.folds_from_segments(segments)):
        scaler = StandardScaler().fit(X[train])
        inner = _run_splits([n for j, n in enumerate(lengths) if j != i])
        fit = ridge.RidgeCV(alphas, cv=inner).fit(scaler.transform(X[train]), Y[train])
        predictions.append(fit.predict(scaler.transform(X[test])))
        np.testing.assert_array_equal(result.alphas[i], fit.best_alphas_)
    pred = np.concatenate(predictions)
    manual = [np.corrcoef(pred[:, t], Y[:, t])[0, 1] for t in range(Y.shape[1])]
    np.testing.assert_allclose(result.scores, manual, atol=1e-10)
    assert result.fold_scores[2, 3] == 0.0  # no variance in that held-out run

    one_by_one = ridge.cross_validate(X, Y, alphas, segments, target_chunk=1)
    np.testing.assert_allclose(one_by_one.scores, result.scores, atol=1e-12)
    np.testing.assert_array_equal(one_by_one.alphas, result.alphas)


def test_constant_targets_score_zero_unless_all_are_constant():
    rng = np.random.default_rng(5)
    X_runs, Y_runs = _random_runs(rng, (20, 20, 20), p=4, m=2)
    for Y in Y_runs:
        Y[:, 1] = 0.1
    X, segments = np.concatenate(X_runs), ridge.contiguous_folds((20, 20, 20))
    result = ridge.cross_validate(X, np.concatenate(Y_runs), [1.0, 10.0], segments)
    assert result.scores[1] == 0.0 and np.all(result.fold_scores[:, 1] == 0.0)
    assert result.scores[0] > 0.3
    for Y in Y_runs:
        Y[:, 0] = -1.0
    with pytest.raises(BrainshapeError, match="every one of the 2 targets is constant over all"):
        ridge.cross_validate(X, np.concatenate(Y_runs), [1.0, 10.0], segments)


def test_cross_validation_needs_three_runs():
    rng = np.random.default_rng(6)
    X_runs, Y_runs = _random_runs(rng, (20, 20), p=3, m=2)
    X, Y = np.concatenate(X_runs), np.concatenate(Y_runs)
    with pytest.raises(BrainshapeError, match=r"at least 3 folds .* got 2. Use more stories"):
        ridge.cross_validate(X, Y, [1.0], ridge.contiguous_folds((20, 20)))
    ridge.RidgeCV([1.0], cv=_run_splits((20, 20))).fit(X, Y)  # two runs choose an alpha
