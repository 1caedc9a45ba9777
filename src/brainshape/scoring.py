"""Encoding metrics, their registry, significance and the per-target encoding table.

**Metrics** are looked up by name in ``METRICS`` (the ``encoding.metrics`` config key lists
names from it; the schema's enum is tested against it). Each entry says which function computes
it, which columns of the encoding table it fills and whether it needs the held-out predictions
(kept only then, since they cost memory). A metric function takes a ``HeldOut``: the targets of
one subject's ROI x hemisphere at one layer. Built in:

- ``r``: the held-out Pearson r (``score``), always computed;
- ``mi``: the information (bits) a prediction carries about the data if both are jointly
  Gaussian, ``-1/2 log2(1 - r^2)``; a monotone transform of r, comparable across studies that
  report information rather than correlation;
- ``segment_identification``: can the predicted response of a held-out segment of TRs pick out
  the measured one among all segments? Sensitivity (hit rate of the top match), specificity
  (share of wrong candidates ranked below the right one) and invariance (how stable the
  identifications are when the targets are bootstrap-resampled).

**Significance** (``target_p_values``, ``null_copies``): the engine's block-permutation null
keeps the held-out predictions fixed and permutes the held-out data. That null is too narrow
for cross-validated r: each story also trains the models that predict the other stories, so
the folds' contributions to r are correlated under no signal, which permuting one fold's data
at a time ignores. Per-target p-values therefore come from a pooled null of *copies*:
block-permuted copies of the targets that go through the whole cross-validation (alpha choice
included), as a permutation test that redoes the fit must (Ojala & Garriga 2010). Each target's
r, and each copy's, is standardised by its own fixed-prediction null (which carries that
target's autocorrelation); the p-value of a target is the upper tail at its standardised value
of a Gaussian fitted to the copies' standardised values (a Student t predictive for a new draw,
so p is continuous and not limited to ``1 / (1 + permutations)``; Winkler et al. 2016 for
fitting the permutation distribution). ``fdr`` gives Benjamini-Hochberg q-values;
``permutation_p_values`` / ``permutation_p_value`` the plain counting p-values (ROI level).

``tabulate`` builds the per-target table of one subject from all of these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import stdtr

from brainshape.errors import BrainshapeError

#: Block-permuted copies of the targets in the pooled null of every encode group and layer
#: (``null_copies``): enough to fit the Gaussian's mean and spread to about 3 %.
NULL_COPIES = 500


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between matching columns of two (n, k) arrays: (k,).

    A column that is exactly constant in either array has no defined correlation and gets 0,
    also when rounding in its mean would leave a tiny spurious variance.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ac = a - a.mean(axis=0)
    bc = b - b.mean(axis=0)
    denom = np.sqrt((ac**2).sum(axis=0) * (bc**2).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (ac * bc).sum(axis=0) / denom
    flat = (a.max(axis=0) == a.min(axis=0)) | (b.max(axis=0) == b.min(axis=0))
    r[flat | ~(denom > 0)] = 0.0
    return r


def gaussian_mutual_information(r: np.ndarray) -> np.ndarray:
    """Mutual information in bits for correlation ``r`` under a bivariate Gaussian.

    Negative correlations carry information too, but a prediction anti-correlated with the
    data is a failed model, so r <= 0 maps to 0 bits.
    """
    r = np.clip(np.asarray(r, dtype=np.float64), 0.0, 1.0 - 1e-15)
    return -0.5 * np.log2(1.0 - r**2)


def fdr(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values of a family of p-values (NaN entries stay NaN)."""
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise BrainshapeError("p-values must lie in [0, 1] for the FDR correction.")
    if ok.any():
        from scipy.stats import false_discovery_control  # scipy.stats: ~0.7 s to import

        q[ok] = false_discovery_control(p[ok], method="bh")
    return q


def permutation_p_values(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """One-sided p-values ``(1 + #{null >= observed}) / (1 + n_permutations)`` per column of a
    ``(n_permutations, m)`` null: never 0, exact when the null is exchangeable with the data."""
    null = np.asarray(null)
    return (1.0 + (null >= np.asarray(observed)[None] - 1e-12).sum(0)) / (1.0 + null.shape[0])


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """:func:`permutation_p_values` of one statistic against its null (any shape)."""
    null = np.asarray(null, dtype=np.float64).reshape(-1, 1)
    return float(permutation_p_values(np.array([observed]), null)[0])


def segment_identification(
    pred: np.ndarray,
    obs: np.ndarray,
    segment_trs: int,
    n_bootstrap: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """Identify held-out segments from predicted responses.

    ``pred`` and ``obs`` (n_trs, n_targets) hold held-out predictions and data in time order.
    They are cut into consecutive segments of ``segment_trs`` TRs (a shorter tail is dropped);
    each segment's (segment_trs x n_targets) pattern is z-scored and the correlation matrix
    ``C[i, j]`` between predicted segment i and measured segment j is formed. Returns:

    - ``sensitivity``: share of segments whose best-matching measured segment is their own
      (chance 1 / n_segments);
    - ``specificity``: share of (segment, wrong candidate) pairs with ``C[i, j] < C[i, i]``
      (chance 0.5);
    - ``invariance``: mean over ``n_bootstrap`` resamples of the targets (with replacement) of
      the share of segments identified as with all targets (1 = identification does not hinge
      on particular targets);
    - ``n_segments``.
    """
    pred = np.asarray(pred, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    if pred.shape != obs.shape or pred.ndim != 2:
        raise BrainshapeError(
            f"segment identification needs predictions and data of one shape (n_trs, "
            f"n_targets), got {pred.shape} and {obs.shape}."
        )
    n_segments = pred.shape[0] // int(segment_trs)
    if segment_trs < 1 or n_segments < 2:
        raise BrainshapeError(
            f"segment identification needs at least 2 segments of {segment_trs} TRs; the "
            f"held-out data have {pred.shape[0]} TRs. Use shorter segments."
        )

    def patterns(a, cols):
        seg = a[: n_segments * segment_trs, cols].reshape(n_segments, -1)
        seg = seg - seg.mean(1, keepdims=True)
        norm = np.linalg.norm(seg, axis=1, keepdims=True)
        return seg / np.where(norm > 0, norm, 1.0)

    def identify(cols):
        C = patterns(pred, cols) @ patterns(obs, cols).T
        return C, C.argmax(1)

    everything = np.arange(pred.shape[1])
    C, best = identify(everything)
    own = np.arange(n_segments)
    diagonal = np.diag(C)
    wrong = ~np.eye(n_segments, dtype=bool)
    rng = np.random.default_rng(seed)
    agree = [
        np.mean(identify(rng.integers(0, pred.shape[1], pred.shape[1]))[1] == best)
        for _ in range(n_bootstrap)
    ]
    return {
        "sensitivity": float(np.mean(best == own)),
        "specificity": float(np.mean((C < diagonal[:, None])[wrong])),
        "invariance": float(np.mean(agree)) if agree else np.nan,
        "n_segments": int(n_segments),
    }


# --- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldOut:
    """What a metric sees: the targets of one subject's ROI x hemisphere at one layer.

    ``scores`` (k,): held-out Pearson r of each target. ``predictions`` and ``data`` (n, k):
    the held-out predictions of every row (folds concatenated in time order) and the measured
    responses, given only to metrics with ``needs_predictions`` (None otherwise).
    ``segment_trs`` and ``seed``: the ``encoding`` options of that name.
    """

    scores: np.ndarray
    predictions: np.ndarray | None = None
    data: np.ndarray | None = None
    segment_trs: int = 10
    seed: int = 0


@dataclass(frozen=True)
class Metric:
    """One entry of ``METRICS``.

    ``function(held_out)`` returns a mapping from each name in ``columns`` to a value per
    target (an array of k) or one value for the whole ROI x hemisphere (repeated on its
    targets' rows). ``needs_predictions``: the function reads ``predictions`` and ``data``.
    """

    function: Callable[[HeldOut], Mapping[str, float | np.ndarray]]
    columns: tuple[str, ...]
    needs_predictions: bool = False


def _r(held: HeldOut) -> dict[str, np.ndarray]:
    return {"score": held.scores}


def _mi(held: HeldOut) -> dict[str, np.ndarray]:
    return {"mi": gaussian_mutual_information(held.scores)}


def _segment_identification(held: HeldOut) -> dict[str, float]:
    found = segment_identification(held.predictions, held.data, held.segment_trs, seed=held.seed)
    return {key: found[key] for key in ("sensitivity", "specificity", "invariance")}


#: Encoding metrics by name (the values of ``encoding.metrics``); ``r`` is always computed.
METRICS: dict[str, Metric] = {
    "r": Metric(_r, ("score",)),
    "mi": Metric(_mi, ("mi",)),
    "segment_identification": Metric(
        _segment_identification, ("sensitivity", "specificity", "invariance"), True
    ),
}


def check_metrics(metrics: Sequence[str]) -> list[str]:
    """The metrics to compute, in ``METRICS`` order, ``r`` always among them."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise BrainshapeError(
            f"encoding.metrics lists unknown metric(s) {unknown}; known: {list(METRICS)}."
        )
    return [name for name in METRICS if name == "r" or name in metrics]


def needs_predictions(metrics: Sequence[str]) -> bool:
    """Whether any of ``metrics`` reads the held-out predictions (which then are kept)."""
    return any(METRICS[name].needs_predictions for name in check_metrics(metrics))


def metric_columns(metrics: Sequence[str]) -> list[str]:
    """The encoding-table columns ``metrics`` fill, ``score`` first."""
    return [c for name in check_metrics(metrics) for c in METRICS[name].columns]


# --- significance -------------------------------------------------------------------------------


def null_copies(
    Y: np.ndarray,
    segments: Sequence[np.ndarray],
    n_copies: int,
    block: int,
    seed: int,
) -> np.ndarray:
    """``n_copies`` block-permuted copies of columns of ``Y`` (n, m): (n, n_copies) float64.

    Copy k is a non-constant column of ``Y`` (the columns in a seeded random order, cycled)
    with the rows of every segment (held-out fold: story or block) cut into blocks of
    ``block`` rows and the blocks shuffled, as the engine's null does, but before any fit:
    cross-validating the copies gives the null of r with the whole fit redone.
    """
    rng = np.random.default_rng([seed, 1])
    Y = np.asarray(Y)
    varying = np.flatnonzero(Y.max(axis=0) != Y.min(axis=0))
    if varying.size == 0 or n_copies < 1:
        return np.zeros((Y.shape[0], 0))
    sources = np.resize(rng.permutation(varying), n_copies)
    out = np.empty((Y.shape[0], n_copies))
    for k, column in enumerate(sources):
        rows = [_block_shuffle(rng, np.asarray(s), block) for s in segments]
        out[:, k] = Y[np.concatenate(rows), column]
    return out


def _block_shuffle(rng: np.random.Generator, rows: np.ndarray, block: int) -> np.ndarray:
    blocks = [rows[i : i + block] for i in range(0, rows.size, block)]
    return np.concatenate([blocks[i] for i in rng.permutation(len(blocks))])


def standardised(scores: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Fisher z of each score less its null's mean, over its null's SD (NaN where that is 0).

    ``scores`` (m,) and ``null`` (n_permutations, m) are Pearson r's.
    """
    z_null = np.arctanh(np.clip(null, -1 + 1e-15, 1 - 1e-15))
    z = np.arctanh(np.clip(scores, -1 + 1e-15, 1 - 1e-15))
    sd = z_null.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, (z - z_null.mean(axis=0)) / sd, np.nan)


def target_p_values(
    scores: np.ndarray, null: np.ndarray, copy_scores: np.ndarray, copy_null: np.ndarray
) -> np.ndarray:
    """One-sided p-values of held-out r against the pooled null of the copies.

    ``scores`` (m,) and ``null`` (n_permutations, m): the targets' r and their engine null;
    ``copy_scores`` and ``copy_null`` the same for the copies of ``null_copies``. Each value is
    ``standardised``; a target's p is the upper tail at its value of a Student t with
    ``n - 1`` degrees of freedom centred on the mean of the copies' ``n`` values and scaled by
    their SD times ``sqrt(1 + 1/n)`` (the predictive distribution of a new draw from a
    Gaussian). Targets whose null has no spread (constant targets or predictions) get 1.
    """
    pool = standardised(copy_scores, copy_null)
    pool = pool[np.isfinite(pool)]
    if pool.size < 3:
        raise BrainshapeError(
            f"the pooled null holds {pool.size} usable copies; it needs at least 3 targets "
            "whose data and predictions vary. Check the fMRI preprocessing."
        )
    z = standardised(scores, null)
    n = pool.size
    t = (z - pool.mean()) / (pool.std(ddof=1) * np.sqrt(1 + 1 / n))
    return np.where(np.isfinite(t), stdtr(n - 1, -t), 1.0)


# --- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubjectFit:
    """One subject's targets at one layer, cut from the cross-validation of its group.

    ``scores`` and ``alphas`` (k,): held-out r and the median chosen alpha; ``p_values`` (k,)
    from ``target_p_values`` and ``null`` (n_permutations, k), or None without permutations;
    ``predictions`` and ``data`` (n, k) or None (kept for metrics that need them).
    """

    scores: np.ndarray
    alphas: np.ndarray
    p_values: np.ndarray | None = None
    null: np.ndarray | None = None
    predictions: np.ndarray | None = None
    data: np.ndarray | None = None


def tabulate(
    targets: pd.DataFrame,
    fit: SubjectFit,
    metrics: Sequence[str],
    *,
    segment_trs: int = 10,
    seed: int = 0,
) -> pd.DataFrame:
    """The encoding table of one subject at one layer: one row per target.

    Columns: ``target`` (int64), ``roi``, ``hemisphere``, ``score`` (held-out r), ``alpha``,
    the columns of the other ``metrics`` (``METRICS`` order), then ``p_value`` (per target,
    ``target_p_values``), ``q_value`` (Benjamini-Hochberg over the subject's targets) and
    ``p_value_roi`` (counting p-value of the mean r over the targets of the ROI x hemisphere
    against the mean of their nulls); the three are NaN without permutations.
    """
    names = check_metrics(metrics)
    frame = pd.DataFrame(
        {
            "target": targets["target"].to_numpy(dtype=np.int64),
            "roi": targets["roi"].to_numpy(),
            "hemisphere": targets["hemisphere"].to_numpy(),
            "score": fit.scores.astype(np.float64),
            "alpha": fit.alphas.astype(np.float64),
        }
    )
    groups = frame.groupby(["roi", "hemisphere"], sort=False).indices
    for name in names:
        if name != "r":
            _add_metric(frame, groups, name, fit, segment_trs, seed)
    frame["p_value"] = frame["q_value"] = frame["p_value_roi"] = np.nan
    if fit.p_values is not None:
        frame["p_value"] = fit.p_values
        frame["q_value"] = fdr(fit.p_values)
        roi_p = np.full(len(frame), np.nan)
        for idx in groups.values():
            roi_p[idx] = permutation_p_value(fit.scores[idx].mean(), fit.null[:, idx].mean(1))
        frame["p_value_roi"] = roi_p
    return frame


def _add_metric(frame, groups, name, fit: SubjectFit, segment_trs: int, seed: int) -> None:
    metric = METRICS[name]
    values = {c: np.full(len(frame), np.nan) for c in metric.columns}
    for idx in groups.values():
        held = HeldOut(
            scores=fit.scores[idx],
            predictions=fit.predictions[:, idx] if metric.needs_predictions else None,
            data=fit.data[:, idx] if metric.needs_predictions else None,
            segment_trs=segment_trs,
            seed=seed,
        )
        out = metric.function(held)
        missing = [c for c in metric.columns if c not in out]
        if missing:
            raise BrainshapeError(f"metric {name!r} returned no value for column(s) {missing}.")
        for column in metric.columns:
            values[column][idx] = out[column]
    for column in metric.columns:
        frame[column] = values[column]
