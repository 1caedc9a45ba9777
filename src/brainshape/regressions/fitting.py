"""One regression per stratum x ROI x hemisphere x feature set: the set alone, the nuisance model,
both together and the gain, with their p-values, coefficients and intervals.

The cross-validation keeps a model *family* together: a model's quantized, full-precision and
untrained variants are never split between training and test. Shape must be told from what
merely comes with depth, size and training, so every feature set is compared with a *nuisance
model* fitted alone with the same folds (:mod:`brainshape.regressions.inputs`). Reported
per regression: the cross-validated R^2 of the feature set alone (held-out predictions of all
folds pooled) with its permutation p-value (the whole cross-validation redone for each
permutation, done as one matrix product because OLS predictions are linear in the scores), the
nuisance model's cross-validated R^2, that of nuisance and set together and the *gain* of the
set over the nuisance model, with a permutation p-value by Freedman and Lane
(:mod:`brainshape.regressions.permutation`); Benjamini-Hochberg q-values of both p-values across
all regressions; coefficients of the combined model (per standard deviation of each feature)
with family-bootstrap intervals and their sign stability
(:mod:`brainshape.regressions.bootstrap`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from brainshape import scoring
from brainshape.errors import BrainshapeError
from brainshape.regressions.bootstrap import family_bootstrap, jackknife_intervals
from brainshape.regressions.crossval import cv_r2, group_folds, standardise
from brainshape.regressions.inputs import (
    feature_columns,
    landmark_reliability,
    nuisance_columns,
)
from brainshape.regressions.permutation import (
    DEPTH_BINS,
    depth_blocks,
    gain_test,
    permutation_orders,
    permutation_p,
)

#: How observations are weighted in each regression (``regressions.weights``, :func:`row_weights`).
WEIGHTS = ("family", "row")


@dataclass
class Fit:
    """Result of one regression; arrays are per feature of the set (in ``features`` order).

    ``cv_r2``, ``p_value``: the set alone; ``cv_r2_nuisance``: the nuisance model alone;
    ``cv_r2_combined``: both; ``gain`` = combined - nuisance, ``p_gain`` its Freedman-Lane
    permutation p-value. Coefficients, intervals (leave-one-family-out jackknife) and sign
    stability (family bootstrap) are those of the combined model; ``n_degenerate`` counts the
    family leave-outs and bootstrap resamples that could not identify the features (left out).
    """

    features: list[str]
    cv_r2: float
    p_value: float
    cv_r2_nuisance: float
    cv_r2_combined: float
    gain: float
    p_gain: float
    coef: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    stability: np.ndarray
    n_obs: int
    n_groups: int
    n_permutations: int
    n_degenerate: int = 0


def _coefficients(xn, xs, varying, y, groups, w, n_bootstrap, rng, ci) -> tuple:
    """Coefficients of the features in the combined model, their intervals (leave-one-family-out
    jackknife, :mod:`~brainshape.regressions.bootstrap`) and sign stability over family-bootstrap
    refits (NaN and 0 for constant features), and the degenerate resamples of both."""
    k = varying.size
    coef, low, high, stability = (np.full(k, np.nan) for _ in range(4))
    stability[~varying] = 0.0
    coef[varying], low[varying], high[varying], left = jackknife_intervals(xn, xs, y, groups, w, ci)
    boot, degenerate = family_bootstrap(xn, xs, y, groups, n_bootstrap, rng, w)
    if len(boot):
        stability[varying] = (np.sign(boot) == np.sign(coef[varying])).mean(axis=0)
    return coef, low, high, stability, degenerate + left


def fit(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    features: Sequence[str],
    *,
    nuisance: np.ndarray | None = None,
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    n_folds: int = 5,
    seed: int = 0,
    ci: float = 0.95,
    permutation: str = "free",
    blocks: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> Fit:
    """Cross-validated least squares of ``y`` (n_obs,) on ``x`` (n_obs, n_features), grouped by
    ``groups``, alone and beside the ``nuisance`` columns (n_obs, n_nuisance; none: intercept
    only), every fit and R^2 weighted by ``weights`` (n_obs,; default all 1).

    Constant columns are left out (coefficient NaN, stability 0). Coefficients are per standard
    deviation of each feature, in score units. ``permutation`` picks the null (``PERMUTATIONS``)
    of both p-values: the scores' for the set alone, the nuisance residuals' for the gain,
    whose deviations from their family's mean are exchanged within ``blocks`` (default: within
    each family; :func:`~brainshape.regressions.permutation.depth_blocks`).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xn = np.zeros((len(y), 0)) if nuisance is None else np.asarray(nuisance, dtype=np.float64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    groups = np.asarray(groups)
    if not (np.isfinite(x).all() and np.isfinite(y).all() and np.isfinite(xn).all()):
        raise BrainshapeError(
            "a feature or score is NaN or infinite; drop the feature from "
            "regressions.feature_sets or fix its source table"
        )
    xs, varying = standardise(x)
    xn, _ = standardise(xn)
    folds = group_folds(groups, n_folds)
    rng = np.random.default_rng(seed)
    observed = float(cv_r2(xs, y[:, None], folds, groups, w)[0])
    order = permutation_orders(groups, n_permutations, rng, permutation)
    p_value = permutation_p(cv_r2(xs, y[order].T, folds, groups, w), observed)
    r2_nuisance, r2_combined, gain, p_gain = gain_test(
        xn, np.column_stack([xn, xs]), y, groups, folds, n_permutations, rng, permutation,
        blocks, w,
    )  # fmt: skip
    coef, low, high, stability, degenerate = _coefficients(
        xn, xs, varying, y, groups, w, n_bootstrap, rng, ci
    )
    return Fit(
        features=list(features),
        cv_r2=observed,
        p_value=p_value,
        cv_r2_nuisance=r2_nuisance,
        cv_r2_combined=r2_combined,
        gain=gain,
        p_gain=p_gain,
        coef=coef,
        ci_low=low,
        ci_high=high,
        stability=stability,
        n_obs=len(y),
        n_groups=int(np.unique(groups).size),
        n_permutations=int(n_permutations),
        n_degenerate=degenerate,
    )


#: Regression-level columns of the regressions table, in order (then the feature columns).
REGRESSION_COLUMNS = [
    "stratum", "roi", "hemisphere", "feature_set", "n_obs", "n_families", "n_features",
    "cv_r2", "p_value", "q_value", "cv_r2_nuisance", "cv_r2_combined", "gain", "p_gain",
    "q_gain", "n_permutations", "n_degenerate",
]  # fmt: skip
FEATURE_COLUMNS = ["feature", "coef", "ci_low", "ci_high", "stability", "landmark_reliability"]


def _rows(key: tuple, name: str, res: Fit, part: pd.DataFrame) -> list[dict]:
    stratum, roi, hemi = key
    head = {"stratum": stratum, "roi": roi, "hemisphere": hemi, "feature_set": name}
    head.update(n_obs=res.n_obs, n_families=res.n_groups, n_features=len(res.features))
    head.update({k: getattr(res, k) for k in ("cv_r2", "p_value", "cv_r2_nuisance")})
    head.update({k: getattr(res, k) for k in ("cv_r2_combined", "gain", "p_gain")})
    head.update(n_permutations=res.n_permutations, n_degenerate=res.n_degenerate)
    return [
        {**head, "feature": f, "coef": res.coef[j], "ci_low": res.ci_low[j],
         "ci_high": res.ci_high[j], "stability": res.stability[j],
         "landmark_reliability": landmark_reliability(part, f)}
        for j, f in enumerate(res.features)
    ]  # fmt: skip


def row_weights(table: pd.DataFrame, scheme: str = "family") -> np.ndarray:
    """Weights of the observations of one regression (mean 1).

    ``family``: each family counts once and each of its variants once within it (every row
    weighs 1 / (rows of its variant x variants of its family)), so that neither a model's layer
    count nor a family's number of models and variants decides how much it counts; ``row``:
    every row alike.
    """
    if scheme not in WEIGHTS:
        raise BrainshapeError(f"regressions.weights is '{scheme}'; use one of {list(WEIGHTS)}")
    if scheme == "row":
        return np.ones(len(table))
    variant = table["model"].astype(str) + "|" + table["variant"].astype(str)
    per_variant = variant.map(variant.value_counts())
    variants = table.assign(v=variant).groupby("family")["v"].transform("nunique")
    w = 1.0 / (per_variant.to_numpy(np.float64) * variants.to_numpy(np.float64))
    return w / w.mean()


def run_regressions(
    obs: pd.DataFrame,
    feature_sets: Mapping[str, Sequence[str]],
    *,
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    n_folds: int = 5,
    seed: int = 0,
    permutation: str = "free",
    depth_bins: int = DEPTH_BINS,
    weights: str = "family",
) -> pd.DataFrame:
    """Every stratum x ROI x hemisphere x feature set; one row per (regression, feature).

    Observations are weighted by ``weights`` (:func:`row_weights`).
    The gain's null exchanges residual deviations within each family and relative-depth bin
    (``depth_bins`` equal bins; :func:`~brainshape.regressions.permutation.depth_blocks`).

    A stratum with fewer than two model families is skipped (nothing to cross-validate by
    family). ``q_value`` and ``q_gain``: Benjamini-Hochberg over all regressions of the table.
    """
    rows = []
    sets = {name: feature_columns(obs, patterns, name) for name, patterns in feature_sets.items()}
    nuisance = nuisance_columns(obs)
    for key, part in obs.groupby(["stratum", "roi", "hemisphere"], sort=True):
        if part["family"].nunique() < 2:
            continue
        for name, cols in sets.items():
            res = fit(
                part[cols].to_numpy(),
                part["score"].to_numpy(),
                part["family"].to_numpy(),
                cols,
                nuisance=part[nuisance].to_numpy(),
                n_permutations=n_permutations,
                n_bootstrap=n_bootstrap,
                n_folds=n_folds,
                seed=seed,
                permutation=permutation,
                weights=row_weights(part, weights),
                blocks=depth_blocks(
                    part["family"].to_numpy(),
                    part["depth"].to_numpy() if "depth" in part.columns else None,
                    depth_bins,
                ),
            )
            rows += _rows(key, name, res, part)
    if not rows:
        raise BrainshapeError(
            "no stratum has models of two families, so nothing can be cross-validated by "
            "family; select models of more families (or regressions.untrained: pool)"
        )
    table = pd.DataFrame(rows)
    keys = ["stratum", "roi", "hemisphere", "feature_set"]
    per = table.drop_duplicates(keys)[[*keys, "p_value", "p_gain"]].copy()
    per["q_value"] = scoring.fdr(per["p_value"].to_numpy())
    per["q_gain"] = scoring.fdr(per["p_gain"].to_numpy())
    table = table.merge(per[[*keys, "q_value", "q_gain"]], on=keys)
    for col in ("n_obs", "n_families", "n_features", "n_permutations", "n_degenerate"):
        table[col] = table[col].astype("int64")
    return table[REGRESSION_COLUMNS + FEATURE_COLUMNS]
