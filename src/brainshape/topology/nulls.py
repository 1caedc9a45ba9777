"""The null of every geometry value: the same measure against time-shifted brain clouds.

Two clouds that share nothing but are both slow look alike to every geometry measure (nearby
volumes are close in both), so each value is reported beside the same measure against copies of
the brain cloud moved in time, which keep its own autocorrelation and lose its alignment with
the stimulus.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import t as student_t

from brainshape.errors import BrainshapeError

if TYPE_CHECKING:
    from brainshape.topology.timebase import TimeBase

#: Fewest seconds between two shifted brain clouds of the null: longer than the haemodynamic
#: response and the Lanczos window, so a shifted cloud shares no stimulus with the original.
MIN_SHIFT_S = 30.0


def time_shifts(base: TimeBase, n_shifts: int) -> list[int]:
    """Shifts (in points of the time base) of the null's brain clouds: ``k N / (n + 1)``.

    A shifted cloud pairs layer point ``i`` with brain point ``(i + shift) mod N``: whole blocks
    of the concatenated stories move together, so each keeps its own autocorrelation and loses
    its alignment with the stimulus. Refused when two shifts lie less than ``MIN_SHIFT_S`` apart.
    """
    n = base.n_points()
    if n_shifts < 2:
        raise BrainshapeError(f"topology.null_shifts is {n_shifts}; use 2 or more")
    gap = n / (n_shifts + 1) * base.seconds_per_point()
    if gap < MIN_SHIFT_S:
        raise BrainshapeError(
            f"topology.null_shifts: {n_shifts} shifts of the {n} volumes of the time base leave "
            f"{gap:.0f} s between shifted brain clouds, less than {MIN_SHIFT_S:g} s (the "
            "response would overlap); lower topology.null_shifts"
        )
    return [int(round(k * n / (n_shifts + 1))) for k in range(1, n_shifts + 1)]


def shifted(series: np.ndarray, index: np.ndarray, shift: int) -> np.ndarray:
    """The brain cloud at the landmarks moved ``shift`` points later (circularly)."""
    return series[(index + shift) % len(series)]


#: Columns each measure fills, in this order.
NULL_SUFFIXES = ("", "_null_mean", "_null_sd", "_z", "_p")


def null_columns(name: str) -> list[str]:
    """``name``, ``name_null_mean``, ``name_null_sd``, ``name_z``, ``name_p``."""
    return [f"{name}{s}" for s in NULL_SUFFIXES]


def against_null(name: str, values: Sequence[float], closer: str) -> dict[str, float]:
    """The observed value (``values[0]``) beside the null (``values[1:]``, one per shift).

    ``z`` = (value - null mean) / null sd; ``p``: one-sided toward ``closer``, from Student's t
    with S - 1 degrees of freedom on ``z / sqrt(1 + 1/S)`` (a new draw against the mean and sd
    of S null draws, exact for a Gaussian null).
    """
    v = np.asarray(values, dtype=np.float64)
    obs, null = float(v[0]), v[1:]
    mean, sd = float(null.mean()), float(null.std(ddof=1))
    z = (obs - mean) / sd if sd > 0 else float("nan")
    t = z / math.sqrt(1 + 1 / null.size)
    p = float(
        student_t.sf(t, null.size - 1) if closer == "higher" else student_t.cdf(t, null.size - 1)
    )
    return dict(zip(null_columns(name), (obs, mean, sd, z, p), strict=True))
