"""Metrics, their registry and significance: FDR, mutual information, segment identification,
pooled-null p-values without signal and with planted voxels."""

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import yaml

from brainshape import demo, encoding, fmri, ridge, scoring, stimuli, subjects
from brainshape.errors import BrainshapeError

SCHEMAS = Path(__file__).parents[1] / "workflow" / "schemas"


def test_fdr_matches_benjamini_hochberg_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.2, np.nan])
    # Sorted 0.01, 0.03, 0.04, 0.2 (m = 4): p * m / rank = 0.04, 0.06, 0.0533, 0.2, then the
    # running minimum from the top: 0.04, 0.0533, 0.0533, 0.2.
    np.testing.assert_allclose(scoring.fdr(p)[:4], [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    assert math.isnan(scoring.fdr(p)[4])
    with pytest.raises(BrainshapeError, match=r"p-values must lie in \[0, 1\]"):
        scoring.fdr([0.5, 1.5])


def test_gaussian_mutual_information_of_known_correlations():
    # r = sqrt(3)/2: 1 - r^2 = 1/4, so MI = -log2(1/4) / 2 = 1 bit.
    mi = scoring.gaussian_mutual_information([math.sqrt(3) / 2, 0.0, -0.4])
    np.testing.assert_allclose(mi, [1.0, 0.0, 0.0], atol=1e-12)


def test_permutation_p_value_counts_the_observed_value():
    assert scoring.permutation_p_value(0.5, [0.1, 0.5, 0.7, 0.2]) == pytest.approx(3 / 5)
    assert scoring.permutation_p_value(0.9, np.zeros(99)) == pytest.approx(0.01)


def test_segment_identification_finds_a_good_model_and_not_noise():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((200, 30))
    obs = signal + rng.standard_normal((200, 30))
    good = scoring.segment_identification(signal, obs, segment_trs=10, n_bootstrap=50)
    assert good["n_segments"] == 20
    assert good["sensitivity"] == 1.0 and good["specificity"] == 1.0
    assert good["invariance"] > 0.95
    noise = scoring.segment_identification(
        rng.standard_normal((200, 30)), obs, segment_trs=10, n_bootstrap=50
    )
    assert noise["sensitivity"] < 0.3  # chance is 1 / 20
    assert 0.3 < noise["specificity"] < 0.7  # chance is 0.5
    assert noise["invariance"] < good["invariance"]
    with pytest.raises(BrainshapeError, match="at least 2 segments of 150 TRs"):
        scoring.segment_identification(signal, obs, segment_trs=150)


def test_pearson_equals_scipy_and_is_zero_for_constant_columns():
    from scipy.stats import pearsonr

    rng = np.random.default_rng(7)
    a = rng.standard_normal((50, 4))
    b = 0.5 * a + rng.standard_normal((50, 4))
    b[:, 3] = 0.1  # constant: its mean rounds, the r must still be exactly 0
    a[:, 2] = -3.0
    r = scoring.pearson(a, b)
    for k in (0, 1):
        assert r[k] == pytest.approx(pearsonr(a[:, k], b[:, k]).statistic, abs=1e-12)
    assert r[2] == 0.0 and r[3] == 0.0


# --- the registry -------------------------------------------------------------------------------


def test_config_schema_metric_enum_is_the_registry():
    schema = yaml.safe_load((SCHEMAS / "config.schema.yaml").read_text())
    entry = schema["properties"]["encoding"]["properties"]["metrics"]
    assert entry["items"]["enum"] == list(scoring.METRICS)
    assert set(entry["default"]) <= set(scoring.METRICS)


def test_metric_names_columns_and_predictions():
    assert scoring.check_metrics(["segment_identification", "mi"]) == [
        "r", "mi", "segment_identification",
    ]  # fmt: skip
    assert scoring.metric_columns(["mi"]) == ["score", "mi"]
    assert scoring.needs_predictions(["segment_identification"])
    assert not scoring.needs_predictions(["r", "mi"])
    with pytest.raises(BrainshapeError, match=r"unknown metric\(s\) \['auc'\]; known: \['r'"):
        scoring.check_metrics(["auc"])


# --- significance -------------------------------------------------------------------------------


def test_null_copies_are_block_permutations_within_segments():
    rng = np.random.default_rng(1)
    Y = rng.standard_normal((45, 3))
    Y[:, 1] = 2.0  # constant: never copied
    segments = [np.arange(0, 25), np.arange(25, 45)]
    copies = scoring.null_copies(Y, segments, n_copies=6, block=10, seed=0)
    assert copies.shape == (45, 6)
    sources = set()
    for copy in copies.T:
        # The values are distinct, so the rows each copy took are recoverable.
        (source,) = [j for j in (0, 2) if np.isin(copy, Y[:, j]).all()]
        sources.add(source)
        rows = np.array([np.flatnonzero(Y[:, source] == v)[0] for v in copy])
        for segment in segments:
            taken = rows[segment]
            blocks = [segment[i : i + 10] for i in range(0, segment.size, 10)]
            assert sorted(taken) == list(segment)  # a permutation within the segment
            pieces, start = [], 0
            while start < taken.size:  # cut where the rows stop running consecutively
                stop = start + 1
                while stop < taken.size and taken[stop] == taken[stop - 1] + 1:
                    stop += 1
                pieces.append(taken[start:stop])
                start = stop
            whole = [b for b in blocks for piece in pieces if set(b) <= set(piece)]
            assert len(whole) == len(blocks)  # every block of 10 rows stays whole
    assert sources == {0, 2}
    assert not np.array_equal(copies, scoring.null_copies(Y, segments, 6, 10, seed=1))


def test_target_p_values_are_the_predictive_t_of_the_pooled_standardised_null():
    rng = np.random.default_rng(2)
    null = 0.05 * rng.standard_normal((40, 4))
    copy_null = 0.05 * rng.standard_normal((40, 30))
    copy_scores = 0.06 * rng.standard_normal(30)
    scores = np.array([0.0, 0.1, 0.3, 0.0])
    null[:, 3] = 0.0  # a target whose null has no spread
    p = scoring.target_p_values(scores, null, copy_scores, copy_null)
    z = np.arctanh(scores[:3]) - np.arctanh(null[:, :3]).mean(0)
    z /= np.arctanh(null[:, :3]).std(0, ddof=1)
    pool = (np.arctanh(copy_scores) - np.arctanh(copy_null).mean(0)) / np.arctanh(copy_null).std(
        0, ddof=1
    )
    t = (z - pool.mean()) / (pool.std(ddof=1) * math.sqrt(1 + 1 / 30))
    np.testing.assert_allclose(p[:3], scipy.stats.t.sf(t, 29), rtol=1e-12)
    assert p[3] == 1.0
    assert p[2] < 1e-4  # far beyond what 40 permutations could count (1 / 41)


_NULL_LENGTHS = (70, 64, 76, 66)


def _null_data(seed, m):
    """Slow features with FIR delays and autocorrelated targets, independent of each other."""
    rng = np.random.default_rng(seed)
    rho = rng.uniform(0.0, 0.6, m)  # targets differ in autocorrelation
    X_runs, Y_runs = [], []
    for n in _NULL_LENGTHS:
        x, y = rng.standard_normal((n + 4, 8)), rng.standard_normal((n, m))
        for t in range(1, n + 4):
            x[t] = 0.8 * x[t - 1] + 0.6 * x[t]
        for t in range(1, n):
            y[t] = rho * y[t - 1] + np.sqrt(1 - rho**2) * y[t]
        X_runs.append(np.hstack([x[4 - d : 4 - d + n] for d in range(4)]))
        Y_runs.append(y)
    return np.concatenate(X_runs), np.concatenate(Y_runs)


def test_target_p_values_hold_their_level_without_signal():
    # 30 simulated data sets without signal, 50 targets each, the default 100 permutations:
    # the pooled-null p-values are uniform and BH finds something in about 5 % of the sets
    # (q < 0.05 controls the family-wise rate when no target has signal). The engine's
    # fixed-prediction null alone is too narrow for cross-validated r and is not.
    m, sets = 50, 30
    segments = ridge.contiguous_folds(_NULL_LENGTHS)
    pooled, alone, with_findings = [], [], 0
    for seed in range(sets):
        X, Y = _null_data(seed, m)
        copies = scoring.null_copies(Y, segments, 200, 10, seed)
        result = ridge.cross_validate(
            X, np.hstack([Y, copies]), np.logspace(0, 6, 13), segments, n_permutations=100,
            seed=seed,
        )  # fmt: skip
        p = scoring.target_p_values(
            result.scores[:m], result.null[:, :m], result.scores[m:], result.null[:, m:]
        )
        pooled.append(p)
        alone.append(
            scipy.stats.norm.sf(scoring.standardised(result.scores[:m], result.null[:, :m]))
        )
        with_findings += bool((scoring.fdr(p) < 0.05).any())
    pooled, alone = np.concatenate(pooled), np.concatenate(alone)
    print(
        f"P(p < 0.05): pooled {np.mean(pooled < 0.05):.3f}, fixed-prediction null alone "
        f"{np.mean(alone < 0.05):.3f}; P(p < 0.01): {np.mean(pooled < 0.01):.4f}; sets with "
        f"q < 0.05: {with_findings}/{sets}"
    )
    assert 0.033 < np.mean(pooled < 0.05) < 0.067  # 1500 p-values: +-3 standard errors
    assert np.mean(pooled < 0.01) < 0.018
    assert with_findings <= 4  # P(Binomial(30, 0.05) >= 5) = 0.016
    assert np.mean(alone < 0.05) > 0.075


def test_planted_voxels_reach_q_below_005_on_demo_data_in_voxel_mode(tmp_path):
    # The demo generator's data (4 stories, TR 2 s, its SNR and noise) for one subject, one
    # planted ROI x hemisphere (IFG L: 36 of 408 voxels), preprocessed with fmri.targets:
    # voxels and encoded with the default permutations (100, blocks of 10 TRs).
    words = demo.generate_stimuli(tmp_path, stories=demo.DEFAULT_STORIES, subjects=1, seed=5)
    rng = np.random.default_rng(5)
    layers = [{s: rng.standard_normal((len(w), 24)) for s, w in words.items()} for _ in range(2)]
    planted = [{"roi": "IFG", "hemisphere": "L", "model": "toy", "variant": "fp32", "layer": 1}]
    demo.generate_bold(
        tmp_path, words, {("toy", "fp32", 1): layers[1]}, subjects=1, seed=5, planted=planted
    )
    out = tmp_path / "fmri" / "sub-01"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fmri.preprocess_subject(
            tmp_path / demo.FMRIPREP, "01", list(words), demo.SPACE, tmp_path / demo.ATLAS_IMAGE,
            tmp_path / demo.ATLAS_LABELS, out, rois=None, mode="voxels",
            confounds=list(demo.NUISANCE_CONFOUNDS), detrend=True, standardize=True,
            high_pass=None, trim_start=2, trim_end=2, t_r=2.0,
        )  # fmt: skip
    features = {s: np.stack([layers[0][s], layers[1][s]]).astype(np.float32) for s in words}
    table = encoding.encode_variant(
        stimuli.stack_words(words), features, subjects.read_subjects([out]), n_permutations=100
    )
    planted_rows = (table["roi"] == "IFG") & (table["hemisphere"] == "L")
    at_layer = table[(table["layer"] == 1) & planted_rows]
    assert len(at_layer) == 36 and (at_layer["q_value"] < 0.05).all()
    others = table[(table["layer"] == 1) & ~planted_rows]
    assert (others["q_value"] < 0.05).sum() <= 0.05 * (len(at_layer) + len(others))
    assert not (table[table["layer"] == 0]["q_value"] < 0.05).any()
    # A counting p-value cannot go below 1 / 101: with 36 of 408 voxels at that floor BH gives
    # q = 0.0099 * 408 / 36 = 0.11, so none would have been found.
    floor = np.maximum(table[table["layer"] == 1]["p_value"].to_numpy(), 1 / 101)
    assert not (scoring.fdr(floor) < 0.05).any()
