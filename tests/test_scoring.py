"""Metrics and statistics: FDR, mutual information, segment identification."""

import math

import numpy as np
import pytest

from brainshape import scoring
from brainshape.errors import BrainshapeError


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
