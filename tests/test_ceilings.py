"""Noise ceilings from repeats and from other subjects: planted signal and noise-only data."""

import math

import numpy as np
import pytest

from brainshape.ceilings import repeat_ceiling, single_subject_ceiling


def test_repeat_ceiling_is_the_r_of_the_signal_with_the_repeats_mean():
    rng = np.random.default_rng(0)
    n_rep, n, v = 10, 2000, 3.0
    signal = rng.standard_normal((n, 3))
    signal[:, 2] = 0  # target 2: noise only
    repeats = signal + math.sqrt(v) * rng.standard_normal((n_rep, n, 3))
    got = repeat_ceiling(repeats)
    # The mean of 10 repeats carries noise of variance v / 10: r = 1 / sqrt(1 + v / 10).
    expected = 1 / math.sqrt(1 + v / n_rep)
    assert got[:2] == pytest.approx(expected, abs=0.02)
    best = [np.corrcoef(signal[:, j], repeats.mean(0)[:, j])[0, 1] for j in range(2)]
    np.testing.assert_allclose(got[:2], best, atol=0.02)
    assert np.isnan(got[2]) or got[2] < 0.1  # no shared signal: no ceiling to speak of
    assert np.isnan(repeat_ceiling(repeats[:1])).all()  # one repeat cannot tell


def test_single_subject_ceiling_takes_one_count_per_target():
    isc = np.array([0.5, 0.5, -0.1])
    got = single_subject_ceiling(isc, np.array([2, 5, 5]))
    assert got[0] == pytest.approx(math.sqrt(0.5))  # split-half: sqrt(isc)
    assert got[1] == pytest.approx(single_subject_ceiling(np.array([0.5]), 5)[0])
    assert np.isnan(got[2])
    assert np.isnan(single_subject_ceiling(np.array([0.5]), 1)).all()
