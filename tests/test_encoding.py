import math

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from brainshape.encoding import (
    SubjectData,
    add_delays,
    cross_validated_scores,
    encode_variant,
    lanczos_downsample,
    lanczos_matrix,
    load_subject,
    ridge_cv,
    tr_times,
)
from brainshape.errors import BrainshapeError
from brainshape.io import save_json, save_npy, save_parquet

# --- time axis and resampling -----------------------------------------------------------------


def by_kernel(x):
    """The Lanczos kernel (window 3) at one x = f_c * lag, written out with math.sin."""
    if x == 0:
        return 1.0
    return 3 * math.sin(math.pi * x) * math.sin(math.pi * x / 3) / (math.pi**2 * x**2)


def test_tr_times_are_volume_middles():
    np.testing.assert_array_equal(tr_times(3, 2.0), [1.0, 3.0, 5.0])
    np.testing.assert_array_equal(tr_times(2, 1.5), [0.75, 2.25])


def test_lanczos_weights_match_hand_values():
    # TR 2 s, so f_c = 0.5 Hz and x = lag / 2.
    new_times = tr_times(3, 2.0)  # 1, 3, 5 s
    word_times = np.array([1.0, 2.0, 3.6, 20.0])
    weights = lanczos_matrix(word_times, new_times, window=3)
    assert weights.shape == (3, 4)

    half_lobe = 6 / math.pi**2  # |x| = 1/2: 3 * sin(pi/2) * sin(pi/6) / (pi^2 / 4)
    negative_lobe = -4 / (3 * math.pi**2)  # x = 3/2: 3 * (-1) * 1 / (2.25 pi^2)

    expected = np.array(
        [
            [1.0, half_lobe, by_kernel(-1.3), 0.0],
            [0.0, half_lobe, by_kernel(-0.3), 0.0],
            [0.0, negative_lobe, by_kernel(0.7), 0.0],
        ]
    )
    np.testing.assert_allclose(weights, expected, atol=1e-15)
    # sin(234 deg) = -(1 + sqrt 5) / 4, sin(78 deg) = 0.978148: 3 * -0.809017 * 0.978148 / 16.6797
    assert by_kernel(-1.3) == pytest.approx(-0.142330, abs=1e-6)

    # Halving the cut-off stretches the kernel: a 2 s lag now sits at x = 1/2.
    wide = lanczos_matrix(np.array([1.0]), new_times, window=3, cutoff_mult=0.5)
    np.testing.assert_allclose(wide[1, 0], half_lobe)


def test_lanczos_downsample_of_constant_rate_impulse_train():
    # Words every TR / n: away from the run edges every volume sees the same pattern, and the
    # sum of the weights approaches n times the kernel's integral (word rate is kept).
    integral = quad(by_kernel, -3, 3, limit=200)[0]
    new_times = tr_times(40, 2.0)
    interior = {}
    for n in (4, 8):
        word_times = np.arange(0, 80, 2.0 / n) + 0.1
        features = np.column_stack([np.ones(word_times.size), -2 * np.ones(word_times.size)])
        out = lanczos_downsample(features, word_times, new_times, window=3)
        assert out.shape == (40, 2)
        np.testing.assert_allclose(out[:, 1], -2 * out[:, 0])
        middle = out[8:32, 0]
        np.testing.assert_allclose(middle, middle[0], rtol=1e-12)
        assert middle[0] == pytest.approx(n * integral, rel=1e-3)
        interior[n] = middle[0]
    assert interior[8] / interior[4] == pytest.approx(2.0, rel=1e-3)


def test_lanczos_rejects_single_volume_and_bad_shapes():
    with pytest.raises(BrainshapeError, match="at least 2 volume times"):
        lanczos_matrix(np.array([0.5]), np.array([1.0]))
    with pytest.raises(BrainshapeError, match="features have 3 rows but there are 2 word times"):
        lanczos_downsample(np.ones((3, 2)), np.array([0.0, 1.0]), tr_times(4, 2.0))


def test_add_delays_against_hand_matrix():
    X = np.array([[1, 10], [2, 20], [3, 30], [4, 40]], dtype=float)
    out = add_delays(X, delays=(0, 1, 2, -1, 5))
    expected = np.array(
        [
            [1, 10, 0, 0, 0, 0, 2, 20, 0, 0],
            [2, 20, 1, 10, 0, 0, 3, 30, 0, 0],
            [3, 30, 2, 20, 1, 10, 4, 40, 0, 0],
            [4, 40, 3, 30, 2, 20, 0, 0, 0, 0],
        ],
        dtype=float,
    )
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(BrainshapeError, match="whole numbers of TRs"):
        add_delays(X, delays=(1.5,))


# --- ridge ------------------------------------------------------------------------------------


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


def test_ridge_fixed_alpha_equals_sklearn_on_standardised_design():
    rng = np.random.default_rng(0)
    lengths = (30, 25, 35)
    X_runs, Y_runs = _random_runs(rng, lengths, p=6, m=3, scale=np.array([1, 5, 0.1, 2, 1, 1]))
    X_runs = [np.column_stack([X, np.full(len(X), 7.0)]) for X in X_runs]  # constant column
    X, Y = np.concatenate(X_runs), np.concatenate(Y_runs)

    fit = ridge_cv(X_runs, Y_runs, alphas=[10.0], target_chunk=2)
    scaler = StandardScaler().fit(X)
    reference = Ridge(alpha=10.0, fit_intercept=True).fit(scaler.transform(X), Y)
    np.testing.assert_allclose(fit.coef, reference.coef_.T, atol=1e-10)
    X_new = rng.standard_normal((7, 7))
    np.testing.assert_allclose(
        fit.predict(X_new), reference.predict(scaler.transform(X_new)), atol=1e-10
    )
    np.testing.assert_array_equal(fit.alphas, [10.0, 10.0, 10.0])


def test_alpha_selection_equals_brute_force_loop():
    rng = np.random.default_rng(1)
    lengths = (40, 30, 35, 45)
    X_runs, Y_runs = _random_runs(rng, lengths, p=12, m=5)
    alphas = np.logspace(-1, 4, 11)
    fit = ridge_cv(X_runs, Y_runs, alphas=alphas, target_chunk=3)

    Xz = StandardScaler().fit_transform(np.concatenate(X_runs))
    Y = np.concatenate(Y_runs)
    mean_r = np.zeros((alphas.size, Y.shape[1]))
    for train, test in _run_splits(lengths):
        for a, alpha in enumerate(alphas):
            pred = Ridge(alpha=alpha).fit(Xz[train], Y[train]).predict(Xz[test])
            for t in range(Y.shape[1]):
                mean_r[a, t] += np.corrcoef(pred[:, t], Y[test, t])[0, 1] / len(lengths)
    np.testing.assert_allclose(fit.cv_scores, mean_r, atol=1e-10)
    np.testing.assert_array_equal(fit.alphas, alphas[np.argmax(mean_r, axis=0)])
    assert len(set(fit.alphas)) > 1  # the test data make the targets choose differently


def test_ridge_cv_equals_himalaya():
    # himalaya's default CV score is the negative squared error; with its Pearson
    # correlation_score as score_func it selects by the same criterion, so alphas and
    # refit predictions must agree.
    from himalaya.backend import set_backend
    from himalaya.ridge import solve_ridge_cv_svd
    from himalaya.scoring import correlation_score

    set_backend("numpy")
    rng = np.random.default_rng(2)
    lengths = (50, 40, 60)
    X_runs, Y_runs = _random_runs(rng, lengths, p=20, m=40, scale=rng.uniform(0.5, 3, 20))
    alphas = np.logspace(0, 4, 9)
    fit = ridge_cv(X_runs, Y_runs, alphas=alphas, target_chunk=16)

    scaler = StandardScaler().fit(np.concatenate(X_runs))
    best, coefs, cv_scores, intercept = solve_ridge_cv_svd(
        scaler.transform(np.concatenate(X_runs)),
        np.concatenate(Y_runs),
        alphas=alphas,
        fit_intercept=True,
        score_func=correlation_score,
        cv=_run_splits(lengths),
        local_alpha=True,
        warn=False,
    )
    np.testing.assert_allclose(fit.alphas, best, rtol=1e-12)
    assert len(set(fit.alphas)) > 1
    X_new = rng.standard_normal((15, 20)) * 2 + 3
    np.testing.assert_allclose(
        fit.predict(X_new), scaler.transform(X_new) @ coefs + intercept, atol=1e-6
    )
    best_mean_r = np.take_along_axis(
        fit.cv_scores, np.searchsorted(alphas, fit.alphas)[None], axis=0
    )[0]
    np.testing.assert_allclose(best_mean_r, cv_scores[0], atol=1e-8)


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
    result = cross_validated_scores(X_runs, Y_runs, alphas=np.logspace(-1, 5, 13))
    assert result.scores[0] == pytest.approx(math.sqrt(snr / (1 + snr)), abs=0.03)
    assert abs(result.scores[1]) < 0.1
    assert result.fold_scores.shape == (4, 2) and result.alphas.shape == (4, 2)
    assert np.all(result.fold_scores[:, 0] > 0.6)


def test_cross_validated_scores_equal_manual_outer_loop_and_ignore_chunking():
    rng = np.random.default_rng(4)
    lengths = (30, 40, 35, 25)
    X_runs, Y_runs = _random_runs(rng, lengths, p=10, m=7)
    Y_runs[2][:, 3] = 5.0  # constant within one run only
    alphas = np.logspace(0, 4, 5)
    result = cross_validated_scores(X_runs, Y_runs, alphas, target_chunk=3)

    predictions = []
    for i in range(len(lengths)):
        others = [j for j in range(len(lengths)) if j != i]
        fit = ridge_cv([X_runs[j] for j in others], [Y_runs[j] for j in others], alphas)
        predictions.append(fit.predict(X_runs[i]))
        np.testing.assert_array_equal(result.alphas[i], fit.alphas)
    pred, Y = np.concatenate(predictions), np.concatenate(Y_runs)
    manual = [np.corrcoef(pred[:, t], Y[:, t])[0, 1] for t in range(Y.shape[1])]
    np.testing.assert_allclose(result.scores, manual, atol=1e-10)
    assert result.fold_scores[2, 3] == 0.0  # no variance in that held-out run

    one_by_one = cross_validated_scores(X_runs, Y_runs, alphas, target_chunk=1)
    np.testing.assert_allclose(one_by_one.scores, result.scores, atol=1e-12)
    np.testing.assert_array_equal(one_by_one.alphas, result.alphas)


def test_constant_targets_score_zero_unless_all_are_constant():
    rng = np.random.default_rng(5)
    X_runs, Y_runs = _random_runs(rng, (20, 20, 20), p=4, m=2)
    for Y in Y_runs:
        Y[:, 1] = 0.1
    result = cross_validated_scores(X_runs, Y_runs, [1.0, 10.0])
    assert result.scores[1] == 0.0 and np.all(result.fold_scores[:, 1] == 0.0)
    assert result.scores[0] > 0.3
    for Y in Y_runs:
        Y[:, 0] = -1.0
    with pytest.raises(BrainshapeError, match="every target is constant over all runs"):
        cross_validated_scores(X_runs, Y_runs, [1.0, 10.0])


def test_cross_validation_needs_three_runs():
    rng = np.random.default_rng(6)
    X_runs, Y_runs = _random_runs(rng, (20, 20), p=3, m=2)
    with pytest.raises(BrainshapeError, match="at least 3 runs .* got 2. Use more stories"):
        cross_validated_scores(X_runs, Y_runs, [1.0])
    ridge_cv(X_runs, Y_runs, [1.0])  # two runs are enough to choose an alpha
    with pytest.raises(BrainshapeError, match="ridge_cv needs at least 2 runs"):
        ridge_cv(X_runs[:1], Y_runs[:1], [1.0])


# --- encode_variant ---------------------------------------------------------------------------

TR = 2.0
DELAYS = (1, 2, 3, 4)
RUNS = {"a": 60, "b": 56, "c": 64, "d": 58}  # volumes per story


def _dataset(seed=0, stories_02=("a", "b", "c", "d")):
    """Words, features (3 layers x words x 4; layer 2 drives the BOLD) and two subjects."""
    rng = np.random.default_rng(seed)
    words, features, designs = [], {}, {}
    for story, n_trs in RUNS.items():
        onset = np.sort(rng.uniform(1.0, n_trs * TR - 4.0, size=int(n_trs * 2.5)))
        words.append(
            pd.DataFrame(
                {
                    "story": story,
                    "word_index": np.arange(onset.size, dtype=np.int64),
                    "word": "w",
                    "onset": onset,
                    "offset": onset + 0.3,
                    "aligned": True,
                }
            )
        )
        feats = rng.standard_normal((3, onset.size, 4)).astype(np.float32)
        features[story] = feats
        resampled = lanczos_downsample(feats[2], onset + 0.15, tr_times(n_trs, TR))
        designs[story] = add_delays(resampled, DELAYS)[2 : n_trs - 1]
    subjects = {}
    for sub, stories in (("01", tuple(RUNS)), ("02", stories_02)):
        weights = rng.standard_normal((16, 3))
        weights[:, 2] = 0  # target 2 is pure noise
        data = {}
        for story in stories:
            signal = designs[story] @ weights
            data[story] = (signal / signal[:, :2].std() + rng.standard_normal(signal.shape)).astype(
                np.float32
            )
        targets = pd.DataFrame(
            {
                "target": np.arange(3, dtype=np.int64),
                "roi": ["A", "A", "B"],
                "hemisphere": ["L", "R", "L"],
                "n_voxels": np.array([10, 12, 8], dtype=np.int64),
            }
        )
        runs = {s: {"n_trs": RUNS[s], "trim_start": 2, "trim_end": 1, "tr": TR} for s in stories}
        subjects[sub] = SubjectData(data=data, targets=targets, runs=runs)
    return pd.concat(words, ignore_index=True), features, subjects, designs


ALPHAS = np.logspace(0, 4, 5)


def test_encode_variant_recovers_planted_layer_and_matches_manual_pipeline():
    words, features, subjects, _ = _dataset()
    table = encode_variant(words, features, subjects, alphas=ALPHAS, target_chunk=2)
    assert list(table.columns) == [
        "layer", "subject", "target", "roi", "hemisphere", "score", "alpha", "mi", "p_value",
        "q_value", "p_value_roi",
    ]  # fmt: skip
    assert len(table) == 3 * 2 * 3
    assert table["layer"].dtype == np.int64 and table["target"].dtype == np.int64
    assert table["score"].dtype == np.float64 and table["alpha"].dtype == np.float64
    assert list(table["roi"][:3]) == ["A", "A", "B"] and list(table["hemisphere"][:3]) == list(
        "LRL"
    )

    scores = table.set_index(["layer", "subject", "target"])["score"]
    for sub in ("01", "02"):
        assert scores[(2, sub, 0)] > 0.5 and scores[(2, sub, 1)] > 0.5
        assert abs(scores[(2, sub, 2)]) < 0.3
        assert abs(scores[(0, sub, 0)]) < 0.3

    # The same numbers from the public steps, one subject alone (stacking must not matter).
    word_times = {s: g["onset"].to_numpy() + 0.15 for s, g in words.groupby("story")}
    for layer in (0, 2):
        X_runs = []
        for story, n_trs in RUNS.items():
            resampled = lanczos_downsample(
                features[story][layer], word_times[story], tr_times(n_trs, TR)
            )
            X_runs.append(add_delays(resampled, DELAYS)[2 : n_trs - 1])
        Y_runs = [subjects["02"].data[s] for s in RUNS]
        manual = cross_validated_scores(X_runs, Y_runs, ALPHAS)
        rows = table[(table["layer"] == layer) & (table["subject"] == "02")]
        np.testing.assert_allclose(rows["score"], manual.scores, atol=1e-10)
        np.testing.assert_allclose(rows["alpha"], np.median(manual.alphas, axis=0))


def test_encode_variant_handles_subjects_with_different_stories():
    words, features, subjects, _ = _dataset(seed=1, stories_02=("a", "b", "c"))
    table = encode_variant(words, features, subjects, alphas=ALPHAS)
    alone = encode_variant(words, features, {"02": subjects["02"]}, alphas=ALPHAS)
    both = table[table["subject"] == "02"].reset_index(drop=True)
    pd.testing.assert_frame_equal(both, alone)
    assert set(table["subject"]) == {"01", "02"}


def test_encode_variant_mismatch_errors():
    words, features, subjects, _ = _dataset()

    def run(w=words, f=features, s=subjects):
        return encode_variant(w, f, s, alphas=ALPHAS)

    no_c = {k: v for k, v in features.items() if k != "c"}
    with pytest.raises(
        BrainshapeError,
        match=r"story c: there is fMRI for it \(sub-01, sub-02\) but no features",
    ):
        run(f=no_c)
    with pytest.raises(
        BrainshapeError,
        match=r"story d: there is fMRI for it \(sub-01, sub-02\) but the words table has no such",
    ):
        run(w=words[words["story"] != "d"])

    short = dict(features, a=features["a"][:, :-1])
    n_words = int((words["story"] == "a").sum())
    with pytest.raises(
        BrainshapeError,
        match=rf"Features of story 'a' have {n_words - 1} words but the words table has "
        rf"{n_words}",
    ):
        run(f=short)

    bad = dict(subjects)
    sub = subjects["01"]
    bad["01"] = SubjectData(dict(sub.data, b=sub.data["b"][:-1]), sub.targets, sub.runs)
    with pytest.raises(
        BrainshapeError,
        match=r"story b, sub-01: BOLD has 52 volumes after trimming but the run should keep "
        r"n_trs - trim_start - trim_end = 56 - 2 - 1 = 53",
    ):
        run(s=bad)

    nan_features = dict(features, b=features["b"].copy())
    nan_features["b"][1, 5, 0] = np.nan
    with pytest.raises(BrainshapeError, match=r"Features of story 'b', layer 1 contain NaN"):
        run(f=nan_features)

    nan_bold = dict(subjects)
    sub = subjects["02"]
    bold_c = sub.data["c"].copy()
    bold_c[3, 1] = np.nan
    nan_bold["02"] = SubjectData(dict(sub.data, c=bold_c), sub.targets, sub.runs)
    with pytest.raises(BrainshapeError, match=r"story c, sub-02: BOLD contains NaN"):
        run(s=nan_bold)

    two = {k: v for k, v in sub.runs.items() if k in ("a", "b")}
    few = {"02": SubjectData({k: sub.data[k] for k in two}, sub.targets, two)}
    with pytest.raises(BrainshapeError, match=r"sub-02 has fMRI for 2 stories .* at least 3"):
        run(s=few)


def test_load_subject_reads_the_fmri_layout(tmp_path):
    _, _, subjects, _ = _dataset()
    sub = subjects["01"]
    directory = tmp_path / "fmri" / "sub-01"
    for story, array in sub.data.items():
        save_npy(directory / f"{story}.npy", array)
    save_parquet(directory / "targets.parquet", sub.targets)
    save_json(directory / "runs.json", sub.runs)

    loaded = load_subject(directory)
    assert loaded.runs == sub.runs
    pd.testing.assert_frame_equal(loaded.targets, sub.targets)
    for story in RUNS:
        np.testing.assert_array_equal(loaded.data[story], sub.data[story])

    (directory / "c.npy").unlink()
    with pytest.raises(BrainshapeError, match=r"c\.npy is missing but .*runs\.json lists story"):
        load_subject(directory)
    with pytest.raises(BrainshapeError, match=r"runs\.json is missing; run the fmri stage"):
        load_subject(tmp_path / "fmri" / "sub-99")


def test_encode_variant_refuses_a_run_shorter_than_its_story():
    words, features, subjects, _ = _dataset()
    sub = subjects["02"]
    n_trs = RUNS["b"]
    # A run cut by 5 volumes (data consistent with its runs.json) no longer covers the story.
    runs = dict(sub.runs, b=dict(sub.runs["b"], n_trs=n_trs - 5))
    data = dict(sub.data, b=sub.data["b"][:-5])
    cut = dict(subjects, **{"02": SubjectData(data, sub.targets, runs)})
    end = words.loc[words.story == "b", "offset"].max()
    assert end > (n_trs - 5) * TR  # the planted words reach into the cut volumes
    with pytest.raises(
        BrainshapeError,
        match=rf"story b, sub-02: the words run to {end:.1f} s but the BOLD run has "
        rf"{n_trs - 5} volumes \({(n_trs - 5) * TR:.1f} s at TR {TR:g} s\)",
    ):
        encode_variant(words, features, cut, alphas=ALPHAS)


def test_segment_identification_is_best_at_the_planted_layer():
    words, features, subjects, _ = _dataset()
    table = encode_variant(
        words,
        features,
        subjects,
        alphas=ALPHAS,
        metrics=("r", "segment_identification"),
        segment_trs=5,
    )
    assert "mi" not in table.columns
    signal = table[table.target < 2]  # targets 0 and 1 carry layer 2's signal
    by_layer = signal.groupby("layer")[["sensitivity", "specificity"]].mean()
    assert by_layer["sensitivity"].idxmax() == 2
    assert by_layer.loc[2, "specificity"] > 0.8
    assert table["invariance"].between(0, 1).all()
    with pytest.raises(BrainshapeError, match=r"unknown metric\(s\) \['auc'\]"):
        encode_variant(words, features, subjects, alphas=ALPHAS, metrics=("r", "auc"))
