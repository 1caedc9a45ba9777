"""The null of every geometry value: the same measure against brain clouds moved in time.

Two clouds that share nothing but are both slow look alike to every geometry measure (nearby
volumes are close in both), so each value is reported beside the same measure against copies of
the brain cloud that keep its own autocorrelation and lose its alignment with the stimulus. Two
schemes make those copies (:func:`plan_null`):

- ``stories``: whole stories permuted (the layer's story A against the brain's story B, position
  for position in proportion to their lengths). Each story keeps its time order, so a slow
  signal's dependence on the time between two volumes is the same in the copies as in the
  observed pairing. Used where the time base has ``min_stories`` stories or more.
- ``shifts``: each story's brain cloud shifted circularly within the story, by at least
  ``shift_factor`` times the clouds' autocorrelation time (and 30 s). A circular shift cuts a
  story where it wraps, which a slow signal notices: shifts are made only where every story
  lasts ``min_story_taus`` autocorrelation times or more; elsewhere there is no null (NaN), not
  a wrong one.

The p-value is empirical: ``(1 + #{null draws at least as alike}) / (1 + draws)``.
docs/methods.md, section 4, gives the rates measured under slow and story-structured nulls.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from brainshape.errors import BrainshapeError
from brainshape.topology.clouds import Cloud, prepare
from brainshape.topology.measures import MEASURES

if TYPE_CHECKING:
    from brainshape.topology.timebase import TimeBase

#: Fewest seconds a story is shifted by: longer than the haemodynamic response and the Lanczos
#: window, so a shifted cloud shares no stimulus with the original.
MIN_SHIFT_S = 30.0

#: How the null's brain clouds are made: ``auto`` permutes stories where there are
#: ``min_stories`` or more, else shifts within stories.
SCHEMES = ("auto", "shifts", "stories")

#: Columns each measure fills, in this order.
NULL_SUFFIXES = ("", "_null_mean", "_null_sd", "_z", "_p")

#: Columns every pairing row gets once: how its null was made (see :class:`NullPlan`).
PLAN_COLUMNS = ("null_scheme", "null_draws", "null_stories", "null_min_shift_s")


@dataclass(frozen=True)
class NullSettings:
    """The null's settings (``topology.null_*``): draws, scheme, stories needed to permute them,
    the minimum shift in autocorrelation times, the shortest story (in autocorrelation times)
    that may be shifted, and the seed of the draws."""

    draws: int = 200
    scheme: str = "auto"
    min_stories: int = 10
    shift_factor: float = 3.0
    min_story_taus: float = 30.0
    seed: int = 0

    def check(self) -> None:
        if self.scheme not in SCHEMES:
            raise BrainshapeError(
                f"topology.null_scheme is '{self.scheme}'; use one of {list(SCHEMES)}"
            )
        if self.draws < 1:
            raise BrainshapeError(f"topology.null_shifts is {self.draws}; use 100 or more")


@dataclass
class NullPlan:
    """The brain clouds of one null: ``rows`` (n_draws, n_landmarks) holds, per draw, the row of
    the time base each landmark is paired with. ``scheme`` is ``shifts``, ``stories`` or
    ``none`` (no null could be made: ``reason`` says why); ``stories`` counts the stories moved;
    ``min_shift_s`` the smallest shift (NaN unless shifts)."""

    scheme: str
    rows: np.ndarray
    stories: int
    min_shift_s: float = float("nan")
    reason: str = ""

    def without_draws(self) -> NullPlan:
        """The same plan with no draws (``scheme`` none): for clouds it cannot serve."""
        return NullPlan("none", self.rows[:0], 0, self.min_shift_s, self.reason)

    def columns(self) -> dict:
        """The :data:`PLAN_COLUMNS` of every row paired with this null."""
        values = (self.scheme, len(self.rows), self.stories, self.min_shift_s)
        return dict(zip(PLAN_COLUMNS, values, strict=True))


def story_parts(series: np.ndarray, base: TimeBase) -> list[np.ndarray]:
    """A series on the time base (n_points, ...) cut into its stories, in time-base order."""
    sizes = [base.brain_rows(s).size for s in base.stories()]
    return np.split(np.asarray(series), np.cumsum(sizes)[:-1])


def autocorrelation(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Autocorrelation of a cloud by lag (in volumes), pooled within stories.

    ``parts`` holds the cloud story by story (n_volumes_story, n_columns). Each column is
    centred within each story and scaled by its pooled within-story standard deviation; the
    autocorrelation at lag ``k`` is the sum over stories, volumes and columns of the products
    of values ``k`` volumes apart over the same sum at lag 0 (the mean of the columns'
    autocorrelations). Story boundaries are never crossed.
    """
    centred = [np.asarray(p, np.float64) - np.asarray(p, np.float64).mean(axis=0) for p in parts]
    var = sum((c**2).sum(axis=0) for c in centred)
    keep = var > 1e-12 * max(1.0, float(np.max(var, initial=0.0)))
    total = np.zeros(max(len(c) for c in centred))
    for c in centred:
        z = c[:, keep] / np.sqrt(var[keep])
        spectrum = np.fft.rfft(z, n=2 * len(z), axis=0)
        lags = np.fft.irfft(spectrum * np.conj(spectrum), axis=0)[: len(z)]
        total[: len(z)] += lags.sum(axis=1)
    return total / total[0] if total[0] > 0 else np.zeros_like(total)


def autocorrelation_time(parts: Sequence[np.ndarray], tr: float) -> float:
    """Seconds until a cloud's autocorrelation (:func:`autocorrelation`) first falls below 1/e,
    interpolated between volumes; the longest story's length where it never does."""
    rho = autocorrelation(parts)
    below = np.flatnonzero(rho < 1 / math.e)
    if below.size == 0 or below[0] == 0:
        return float(len(rho) * tr) if below.size == 0 else 0.0
    k = int(below[0])
    return float((k - 1 + (rho[k - 1] - 1 / math.e) / (rho[k - 1] - rho[k])) * tr)


def _positions(base: TimeBase, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Story lengths and starts on the time base, and each landmark's story."""
    lengths = np.array([base.brain_rows(s).size for s in base.stories()])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    story = np.searchsorted(starts, index, side="right") - 1
    return lengths, starts, story


def _story_permutations(base: TimeBase, index: np.ndarray, rng, draws: int) -> NullPlan:
    """Draws that pair each layer story with a brain story of a random permutation, the
    landmark at a story's fraction ``f`` of its length with the brain story's volume at ``f``."""
    lengths, starts, story = _positions(base, index)
    local = index - starts[story]
    perms = np.argsort(rng.random((draws, lengths.size)), axis=1)
    other = perms[:, story]  # (draws, n_landmarks)
    moved = np.floor(local * lengths[other] / lengths[story]).astype(np.int64)
    return NullPlan("stories", starts[other] + moved, int(lengths.size))


def _story_seconds(base: TimeBase) -> tuple[np.ndarray, np.ndarray]:
    """Per story of the time base: its points and its TR (s)."""
    lengths = np.array([base.brain_rows(s).size for s in base.stories()])
    return lengths, np.array([float(base.runs[s]["tr"]) for s in base.stories()])


def _minimum_shift(base: TimeBase, tau_s: float, s: NullSettings) -> tuple[float, np.ndarray]:
    """The smallest shift (s) for clouds of autocorrelation time ``tau_s``, and per story the
    number of shifts of at least that many volumes (0 or less: the story is too short)."""
    lengths, tr = _story_seconds(base)
    min_shift_s = max(MIN_SHIFT_S, s.shift_factor * tau_s)
    span = lengths - 2 * np.ceil(min_shift_s / tr).astype(np.int64) + 1
    # A story left in place while others move made the test liberal under slow signals
    # (docs/methods.md), so every story must be long enough to move.
    span[lengths * tr < s.min_story_taus * tau_s] = 0
    return min_shift_s, span


def shiftable(base: TimeBase, tau_s: float, settings: NullSettings) -> bool:
    """Whether clouds of autocorrelation time ``tau_s`` get a null (:func:`plan_null`): always
    with story permutations, and with shifts where every story is long enough."""
    if _permutes(base, settings):
        return True
    return bool((_minimum_shift(base, tau_s, settings)[1] > 0).all())


def _shifts(base: TimeBase, index: np.ndarray, tau_s: float, s: NullSettings, rng) -> NullPlan:
    """Draws that shift every story circularly by a random amount of at least
    ``max(30 s, shift_factor x tau_s)``; none where a story is too short for that."""
    lengths, starts, story = _positions(base, index)
    _, tr = _story_seconds(base)
    min_shift_s, span = _minimum_shift(base, tau_s, s)
    minimum = np.ceil(min_shift_s / tr).astype(np.int64)
    if (span <= 0).any():
        k = int(np.argmin(lengths * tr))
        reason = (
            f"the clouds' autocorrelation time is {tau_s:.0f} s and story "
            f"{base.stories()[k]} lasts {lengths[k] * tr[k]:.0f} s: shifts within stories need "
            f"every story to last {s.min_story_taus:g} autocorrelation times "
            "(topology.null_min_story_taus) and twice the minimum shift of "
            f"{min_shift_s:.0f} s"
        )
        return NullPlan("none", np.zeros((0, index.size), np.int64), 0, min_shift_s, reason)
    u = rng.random((s.draws, lengths.size))
    shift = minimum + np.floor(u * span).astype(np.int64)
    local = index - starts[story]
    rows = starts[story] + (local + shift[:, story]) % lengths[story]
    return NullPlan("shifts", rows, int(lengths.size), min_shift_s)


def _permutes(base: TimeBase, settings: NullSettings) -> bool:
    """Whether the null permutes whole stories (else it shifts within them)."""
    n = len(base.stories())
    return settings.scheme == "stories" or (settings.scheme == "auto" and n >= settings.min_stories)


def plan_null(base: TimeBase, index: np.ndarray, tau_s: float, settings: NullSettings) -> NullPlan:
    """The brain clouds of the null for clouds whose autocorrelation time is ``tau_s`` seconds
    (the slower of the layer's and the brain's), at the landmarks ``index`` of ``base``.

    The draws come from ``settings.seed`` alone, so every pairing with the same time base and
    autocorrelation time gets the same null.
    """
    settings.check()
    rng = np.random.default_rng([int(settings.seed), 20])
    n_stories = len(base.stories())
    if _permutes(base, settings):
        if n_stories < 3:
            raise BrainshapeError(
                f"topology.null_scheme stories needs 3 stories or more; the time base has "
                f"{n_stories}; use topology.null_scheme: shifts (or auto)"
            )
        return _story_permutations(base, index, rng, settings.draws)
    return _shifts(base, index, tau_s, settings, rng)


def null_columns(name: str) -> list[str]:
    """``name``, ``name_null_mean``, ``name_null_sd``, ``name_z``, ``name_p``."""
    return [f"{name}{s}" for s in NULL_SUFFIXES]


def against_null(
    name: str, observed: float, null: Sequence[float], closer: str
) -> dict[str, float]:
    """The observed value beside its null (one value per null draw; none: NaN).

    ``z`` = (value - null mean) / null sd; ``p``: one-sided toward ``closer`` (``higher`` or
    ``lower`` is more alike), empirical with the +1 correction, ``(1 + #{null draws at least as
    alike}) / (1 + draws)``: exact when the observed value is exchangeable with the draws.
    """
    v = np.asarray(null, dtype=np.float64)
    obs = float(observed)
    if v.size < 2:
        return dict(zip(null_columns(name), (obs, *[float("nan")] * 4), strict=True))
    mean, sd = float(v.mean()), float(v.std(ddof=1))
    z = (obs - mean) / sd if sd > 0 else float("nan")
    tol = 1e-12 * max(1.0, abs(obs))
    alike = np.sum(v >= obs - tol) if closer == "higher" else np.sum(v <= obs + tol)
    p = float((1 + alike) / (1 + v.size))
    return dict(zip(null_columns(name), (obs, mean, sd, z, p), strict=True))


def geometry_values(
    layers: Sequence[Cloud],
    series: np.ndarray,
    index: np.ndarray,
    plan: NullPlan,
    measures: Sequence[str],
    metric: str = "euclidean",
    components: int | None = None,
) -> np.ndarray:
    """Each measure of each layer cloud against the brain cloud ``series[index]`` and against
    the null's clouds: (1 + draws, layers, measures), the observed values first.

    ``series`` is the brain cloud on the whole time base (n_points, n_columns); the null's
    clouds are ``series[plan.rows[k]]``, prepared one at a time (memory holds one brain cloud
    however many draws), each measured against every layer.
    """
    values = np.empty((1 + len(plan.rows), len(layers), len(measures)))
    for k, rows in enumerate([index, *plan.rows] if layers else []):
        brain = prepare(series[rows], metric, components)
        for j, layer in enumerate(layers):
            for m, name in enumerate(measures):
                values[k, j, m] = MEASURES[name].function(layer, brain)
    return values


def null_rows(values: np.ndarray, plan: NullPlan, measures: Sequence[str]) -> list[dict]:
    """Per layer of :func:`geometry_values`, the columns of :func:`null_columns` for each measure,
    then :data:`PLAN_COLUMNS`."""
    out = []
    for j in range(values.shape[1]):
        row: dict = {}
        for m, name in enumerate(measures):
            closer = MEASURES[name].closer
            row.update(against_null(name, values[0, j, m], values[1:, j, m], closer))
        out.append({**row, **plan.columns()})
    return out


def null_maxima(values: np.ndarray, measures: Sequence[str]) -> np.ndarray:
    """Per null draw, the largest standardised null value over the layers and measures of
    :func:`geometry_values` (each ``(value - null mean) / null sd``, its sign turned so that
    larger is more alike): one draw of the maximum statistic of a family-wise test."""
    null = values[1:]
    if null.shape[0] < 2 or null.shape[1] == 0:
        return np.full(null.shape[0], np.nan)
    sign = np.array([1.0 if MEASURES[n].closer == "higher" else -1.0 for n in measures])
    sd = null.std(axis=0, ddof=1)
    z = (null - null.mean(axis=0)) / np.where(sd > 0, sd, np.nan) * sign
    return np.nanmax(z.reshape(len(z), -1), axis=1)


def geometry(
    layers: Sequence[Cloud],
    series: np.ndarray,
    index: np.ndarray,
    plan: NullPlan,
    measures: Sequence[str],
    metric: str = "euclidean",
    components: int | None = None,
) -> list[dict[str, float]]:
    """Per layer cloud, each measure against the brain cloud ``series[index]`` beside its null
    (:func:`geometry_values`, :func:`null_rows`)."""
    values = geometry_values(layers, series, index, plan, measures, metric, components)
    return null_rows(values, plan, measures)


def family_wise(table: pd.DataFrame, maxima: Sequence[np.ndarray]) -> pd.DataFrame:
    """``table`` (the group rows of topology.parquet, every model and variant) with
    ``<measure>_p_fwe``: the p-value of each geometry value corrected over every layer, model,
    variant, ROI x hemisphere and measure by the maximum statistic (Westfall and Young 1993;
    Nichols and Holmes 2002): ``(1 + #{draws whose largest standardised null value over the
    whole family reaches the row's z}) / (1 + draws)``.

    ``maxima``: per pairing job, :func:`null_maxima` over its group brain clouds (empty where
    it had no null); draw ``k`` of every job comes from the same seed. Rows without a null, and
    rows of single subjects' clouds, get NaN.
    """
    found = [np.asarray(m, np.float64) for m in maxima if np.size(m)]
    measures = [c[: -len("_null_sd")] for c in table.columns if c.endswith("_null_sd")]
    out = table.copy()
    if not found:
        for name in measures:
            out[f"{name}_p_fwe"] = np.nan
        return out
    if len({m.size for m in found}) != 1:
        raise BrainshapeError(
            "the pairing jobs' nulls have different numbers of draws; rerun rule topology_pairs "
            "for every variant (snakemake -R topology_pairs)"
        )
    family = np.sort(np.nanmax(np.vstack(found), axis=0))
    group = (out["subject"] == "group").to_numpy()
    for name in measures:
        sign = 1.0 if MEASURES[name].closer == "higher" else -1.0
        z = sign * out[f"{name}_z"].to_numpy(np.float64)
        reached = family.size - np.searchsorted(family, z - 1e-12, side="left")
        p = (1 + reached) / (1 + family.size)
        out[f"{name}_p_fwe"] = np.where(group & np.isfinite(z), p, np.nan)
    return out


def null_settings(topology: Mapping) -> NullSettings:
    """The :class:`NullSettings` of a ``topology`` config section."""
    return NullSettings(
        draws=int(topology["null_shifts"]),
        scheme=str(topology["null_scheme"]),
        min_stories=int(topology["null_min_stories"]),
        shift_factor=float(topology["null_shift_factor"]),
        min_story_taus=float(topology["null_min_story_taus"]),
        seed=int(topology["seed"]),
    )
