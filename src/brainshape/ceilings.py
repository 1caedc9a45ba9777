"""Noise ceilings: how well a perfect model of the stimulus-driven signal could score.

Two estimates, for two kinds of data:

- **Between subjects** (:func:`single_subject_ceiling`): a subject predicted from the mean of
  ``k - 1`` others who heard the same story gives ``isc``; that mean is itself noisy, so under
  the usual model (one shared signal plus independent noise of equal variance in every subject)
  the r a model of the shared signal reaches in one subject is ``sqrt(a)``, ``a`` the positive
  root of ``(k - 1) a^2 - isc^2 (k - 2) a - isc^2 = 0`` (for k = 2: ``sqrt(isc)``, the classic
  split-half correction).
- **Within a subject, from repeats** (:func:`repeat_ceiling`): where a subject heard a story
  several times (ds003020's test story), the signal power is what the repeats share: with
  ``N`` repeats ``r_n`` of a target, ``SP = (Var(sum r_n) - sum Var(r_n)) / (N (N - 1))``,
  and the highest r a model can reach against the repeats' mean is
  ``sqrt(SP / Var(mean r_n))`` (Hsu, Borst & Theunissen 2004; Schoppe et al. 2016).

A module of its own so that the fMRI stage (repeats) and the ceiling stage (between subjects)
share it without depending on each other.
"""

from __future__ import annotations

import numpy as np


def single_subject_ceiling(isc: np.ndarray, n_subjects) -> np.ndarray:
    """The r a perfect model of the shared signal reaches in one subject, from ``isc``.

    ``isc`` is the r of a subject with the mean of the other ``n_subjects - 1`` (a number, or
    one per target); NaN where ``isc`` is not positive (no shared signal to speak of) or there
    are fewer than 2 subjects.
    """
    isc = np.asarray(isc, dtype=np.float64)
    k = np.broadcast_to(np.asarray(n_subjects, dtype=np.float64), isc.shape)
    c2 = isc**2
    with np.errstate(invalid="ignore", divide="ignore"):
        a = (c2 * (k - 2) + np.sqrt(c2**2 * (k - 2) ** 2 + 4 * (k - 1) * c2)) / (2 * (k - 1))
        return np.where((isc > 0) & (k >= 2), np.sqrt(a), np.nan)


def repeat_ceiling(repeats: np.ndarray) -> np.ndarray:
    """Per target, the highest r a model can reach against the mean of ``repeats``
    ``(n_repeats, n_trs, n_targets)``; NaN where the repeats share no signal or fewer than 2."""
    r = np.asarray(repeats, dtype=np.float64)
    n = r.shape[0]
    if n < 2:
        return np.full(r.shape[2], np.nan)
    var_sum = r.sum(axis=0).var(axis=0)
    sum_var = r.var(axis=1).sum(axis=0)
    signal = (var_sum - sum_var) / (n * (n - 1))
    total = r.mean(axis=0).var(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sqrt(np.clip(signal / total, 0.0, 1.0))
    return np.where((signal > 0) & (total > 0), out, np.nan)
