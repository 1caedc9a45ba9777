"""Aggregate analyses: explain brainscores from shape features, and compare variants.

One ordinary least-squares regression per stratum x ROI x hemisphere x feature set predicts the
brainscore of each observation (a model variant's layer, or its best layer) from its shape
features. The cross-validation keeps a model *family* together: a model's quantized,
full-precision and untrained variants are never split between training and test.

Shape must be told from what merely comes with depth, size and training, so every feature set
is compared with a *nuisance model* fitted alone with the same folds: relative depth (as a
cubic), log10 parameter count and one indicator per variant kind other than full precision
(``untrained`` among them when the strata are pooled). Untrained variants form their own stratum
by default (``regressions.untrained``). Reported per regression: the cross-validated R^2 of the
feature set alone (held-out predictions of all folds pooled) with its permutation p-value
(scores exchanged across all observations by default, or only within each family; the whole
cross-validation redone for each permutation, done as one matrix product because OLS predictions
are linear in the scores), the nuisance model's cross-validated R^2, that of nuisance and set
together and the *gain* of the set over the nuisance model, with a permutation p-value by
Freedman and Lane (the nuisance model's residuals permuted as family means between families and
deviations within them, the whole cross-validation of both models redone); Benjamini-Hochberg
q-values of both p-values across all regressions;
coefficients of the combined model (per standard deviation of each feature) with
family-bootstrap percentile intervals and their sign stability (the share of family-bootstrap
refits in which a coefficient keeps its sign on all the data).

Beside them: brainscore against parameter count, each quantized variant against its
full-precision twin and the trained model against its untrained twin (paired differences with
bootstrap intervals over subjects), all at best layers chosen out of sample
(:func:`brainshape.analysis.best_layers`, redone in every bootstrap draw).
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainshape import analysis, figures, scoring
from brainshape.errors import BrainshapeError
from brainshape.models import PREPARED_INFO, quantized_kinds

#: Columns a published-scores CSV must have.
PUBLISHED_COLUMNS = ["model", "roi", "hemisphere", "score"]

#: Observation units: every layer of every variant, each variant's best layer (chosen out of
#: sample, :func:`brainshape.analysis.best_layers`), or each variant with its features averaged
#: over layers.
UNITS = ("layer", "best_layer", "mean")

#: What becomes of untrained variants: ``separate`` (their own stratum, beside the trained
#: variants'), ``exclude`` (left out), ``pool`` (one stratum; the nuisance model then holds the
#: untrained indicator).
UNTRAINED = ("separate", "exclude", "pool")

#: Permutation schemes of the regression null. ``free``: scores exchanged across all
#: observations; the family-grouped cross-validation already keeps a family's shared level out
#: of the held-out score (on simulated data whose scores and features vary by family
#: independently it rejected in 3-8% of data sets at the 5% level). ``within_family``: scores
#: exchanged only among observations of one model family, exact whatever the families share,
#: but blind to effects carried by differences between families (a feature that tracks score
#: across families and not inside them gets p near 1); use it to test within-family contrasts
#: such as quantisation or training.
PERMUTATIONS = ("free", "within_family")

#: Fewest distinct permutations for which a p-value below 0.05 is possible.
_MIN_DISTINCT = 20

#: Prefix of the nuisance columns of an observations table.
NUISANCE = "nuisance_"


# --- inputs -----------------------------------------------------------------------------------


def read_published(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV of published scores: columns model, roi, hemisphere, score (variant optional)."""
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise BrainshapeError(
            f"regressions.published_scores {path} does not exist; give a CSV with columns "
            "model, roi, hemisphere, score"
        ) from None
    missing = [c for c in PUBLISHED_COLUMNS if c not in table.columns]
    if missing:
        raise BrainshapeError(
            f"published scores {path} lacks column(s) {missing} (has {list(table.columns)}); "
            "the CSV needs model, roi, hemisphere, score"
        )
    if not pd.api.types.is_numeric_dtype(table["score"]) or table["score"].isna().any():
        raise BrainshapeError(f"published scores {path}: column score must be numeric, no gaps")
    table = table.astype({"model": str, "roi": str, "hemisphere": str})
    return table


def parameter_counts(
    registry: Mapping[str, Mapping], model_dirs: Mapping[str, str | os.PathLike | None]
) -> dict[str, float]:
    """Parameters per model: the registry's ``params``, else the prepared model's count."""
    counts = {}
    for model, entry in registry.items():
        n = entry.get("params")
        info = Path(model_dirs[model]) / PREPARED_INFO if model_dirs.get(model) else None
        if n is None and info is not None and info.is_file():
            n = json.loads(info.read_text()).get("params")
        counts[model] = float(n) if n is not None else float("nan")
    return counts


def _units(scores: pd.DataFrame, unit: str, published: bool) -> tuple[pd.DataFrame, list[str]]:
    """Scores per observation unit (mean over subjects) and the keys that match features."""
    site = ["model", "variant", "roi", "hemisphere"]
    if published or unit == "mean":
        return scores.groupby(site, as_index=False)["score"].mean(), site
    if unit == "best_layer":
        # Each subject's score at the layer the other subjects chose; the features of the
        # chosen layers are averaged the same way (see observations).
        return analysis.best_layers(scores)[[*site, "subject", "layer", "score"]], [*site, "layer"]
    by_layer = scores.groupby([*site, "layer"], as_index=False)["score"].mean()
    return by_layer, [*site, "layer"]


def _nuisance(table: pd.DataFrame, params: Mapping[str, float]) -> pd.DataFrame:
    """Add the nuisance columns: relative depth (cubic, where there is a layer), log10
    parameters, one indicator per variant kind other than ``full``."""
    if "depth" in table.columns:
        depth = table.pop("depth").to_numpy(np.float64)
        for power, suffix in ((1, ""), (2, "2"), (3, "3")):
            table[f"{NUISANCE}depth{suffix}"] = depth**power
    counts = table["model"].map(params)
    unknown = sorted(table.loc[~(counts > 0), "model"].unique())
    if unknown:
        raise BrainshapeError(
            f"models {unknown} have no parameter count for the nuisance model; set params in "
            "their registry entries"
        )
    table[f"{NUISANCE}log_params"] = np.log10(counts.to_numpy(np.float64))
    for k in sorted(set(table["kind"]) - {"full"}):
        table[f"{NUISANCE}kind_{k}"] = (table["kind"] == k).astype(np.float64)
    return table


def observations(
    scores: pd.DataFrame,
    topology: pd.DataFrame,
    families: Mapping[str, str],
    *,
    params: Mapping[str, float],
    kinds: Mapping[tuple[str, str], str],
    unit: str = "layer",
    untrained: str = "separate",
    published: bool = False,
    default_variants: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One row per observation and ROI x hemisphere: ``stratum``, ``kind``, ``family``,
    ``score``, the nuisance columns (``nuisance_*``) and the features.

    ``scores`` has ``model, variant, layer, subject, roi, hemisphere, score`` (the pipeline's
    brainscores; averaged over subjects, or with ``unit: best_layer`` each subject at the layer
    the others chose, then averaged with the features of those layers) or, with
    ``published``, ``model, roi, hemisphere, score`` (+ optional ``variant``; missing variants
    come from ``default_variants``). Features come from the ``group`` rows of ``topology``.
    Published scores have no layer, so their features are averaged over layers whatever
    ``unit`` says. ``params``: parameters per model; ``kinds``: (model, variant) -> kind.
    """
    if unit not in UNITS:
        raise BrainshapeError(f"regressions.unit is '{unit}'; use one of {list(UNITS)}")
    if untrained not in UNTRAINED:
        raise BrainshapeError(
            f"regressions.untrained is '{untrained}'; use one of {list(UNTRAINED)}"
        )
    feats = topology[topology["subject"] == "group"].drop(columns="subject")
    if published:
        scores = scores.copy()
        if "variant" not in scores.columns:
            scores["variant"] = scores["model"].map(default_variants or {})
    obs, keys = _units(scores, unit, published)
    if "layer" not in keys:
        numeric = [c for c in feats.columns if c not in keys and c != "layer"]
        feats = feats.groupby(keys, as_index=False)[numeric].mean()
    table = obs.merge(feats, on=keys, how="inner")
    if table.empty:
        raise BrainshapeError(
            "no brainscore matches a row of the topology table (by model, variant, roi, "
            "hemisphere" + (", layer" if "layer" in keys else "") + "); check that the models, "
            "variants and ROI names of the scores are those of this dataset"
        )
    if "layer" in keys:
        # Relative depth: the layer over the variant's deepest layer (0 = the embeddings).
        deepest = topology.groupby(["model", "variant"])["layer"].max().clip(lower=1)
        index = pd.MultiIndex.from_frame(table[["model", "variant"]])
        table["depth"] = table["layer"].to_numpy(np.float64) / deepest.reindex(index).to_numpy()
    if "subject" in table.columns:  # best layers: one row per subject, averaged here
        site = ["model", "variant", "roi", "hemisphere"]
        table = table.drop(columns="subject").groupby(site, as_index=False).mean()
    unknown = sorted(set(table["model"]) - set(families))
    if unknown:
        raise BrainshapeError(f"models {unknown} are not in the registry; add them with a family")
    table.insert(2, "family", table["model"].map(families))
    kind = [
        kinds.get((m, v), "full") for m, v in zip(table["model"], table["variant"], strict=True)
    ]
    table.insert(3, "kind", kind)
    is_untrained = table["kind"] == "untrained"
    if untrained == "exclude":
        table = table[~is_untrained].reset_index(drop=True)
    stratum = np.where(is_untrained, "untrained", "trained") if untrained == "separate" else "all"
    if untrained == "exclude":
        stratum = "trained"
    table.insert(0, "stratum", stratum)
    return _nuisance(table, params)


def feature_columns(table: pd.DataFrame, patterns: Sequence[str], name: str) -> list[str]:
    """Columns of ``table`` matched by the glob ``patterns`` of feature set ``name``."""
    cols = [c for c in table.columns if any(fnmatch.fnmatchcase(c, p) for p in patterns)]
    if not cols:
        raise BrainshapeError(
            f"regressions.feature_sets.{name} ({list(patterns)}) matches no column of the "
            f"topology table; columns: {', '.join(map(str, table.columns))}"
        )
    return cols


def nuisance_columns(table: pd.DataFrame) -> list[str]:
    """The nuisance columns of an observations table."""
    return [c for c in table.columns if c.startswith(NUISANCE)]


# --- one regression ---------------------------------------------------------------------------


@dataclass
class Fit:
    """Result of one regression; arrays are per feature of the set (in ``features`` order).

    ``cv_r2``, ``p_value``: the set alone; ``cv_r2_nuisance``: the nuisance model alone;
    ``cv_r2_combined``: both; ``gain`` = combined - nuisance, ``p_gain`` its Freedman-Lane
    permutation p-value. Coefficients, intervals and sign stability are those of the combined
    model.
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


def group_folds(groups: np.ndarray, n_folds: int) -> list[np.ndarray]:
    """Test indices per fold: whole groups, leave-one-group-out when groups <= ``n_folds``."""
    labels = np.unique(groups)
    if labels.size < 2:
        raise BrainshapeError(
            f"family-grouped cross-validation needs at least 2 model families, got "
            f"{labels.size} ({list(labels)}); add models of other families"
        )
    if labels.size <= n_folds:
        return [np.flatnonzero(groups == g) for g in labels]
    # Larger families first, each into the currently smallest fold (as GroupKFold balances).
    sizes = {g: int((groups == g).sum()) for g in labels}
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    load = np.zeros(n_folds)
    for g in sorted(labels, key=lambda g: (-sizes[g], str(g))):
        k = int(load.argmin())
        folds[k].append(g)
        load[k] += sizes[g]
    return [np.flatnonzero(np.isin(groups, f)) for f in folds]


def permutation_orders(
    groups: np.ndarray, n_permutations: int, rng: np.random.Generator, scheme: str
) -> np.ndarray:
    """Row orders (n_permutations, n_obs) of the scores for the permutation null.

    ``within_family`` shuffles each family's observations among themselves; ``free`` shuffles
    all. Refuses a scheme under which fewer than 20 distinct orders exist (no p-value could fall
    below 0.05), naming the setting to change.
    """
    if scheme not in PERMUTATIONS:
        raise BrainshapeError(
            f"regressions.permutation is '{scheme}'; use one of {list(PERMUTATIONS)}"
        )
    n = len(groups)
    if scheme == "free":
        blocks = [np.arange(n)]
    else:
        blocks = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    log_distinct = sum(math.lgamma(b.size + 1) for b in blocks)
    if log_distinct < math.log(_MIN_DISTINCT):
        distinct = math.exp(log_distinct)
        sizes = ", ".join(str(b.size) for b in blocks)
        raise BrainshapeError(
            f"permutations {scheme.replace('_', ' ')} can give only {distinct:.0f} distinct "
            f"orders of the {n} observations (family sizes {sizes}), too few for a p-value "
            "below 0.05; use regressions.unit: layer (more observations per family) or "
            "regressions.permutation: free"
        )
    order = np.tile(np.arange(n), (n_permutations, 1))
    for block in blocks:
        order[:, block] = rng.permuted(np.tile(block, (n_permutations, 1)), axis=1)
    return order


def _design(x: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(len(x)), x])


def _unidentified(x: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Columns of a training fold that only tell its families apart: constant within each
    family and taking fewer than three values (a slope through two family means would be
    extrapolated to the held-out families; it is a family contrast, not an effect)."""
    if groups is None:
        return np.zeros(x.shape[1], dtype=bool)
    labels, inverse = np.unique(groups, return_inverse=True)
    out = np.zeros(x.shape[1], dtype=bool)
    for j in range(x.shape[1]):
        means = np.bincount(inverse, x[:, j]) / np.bincount(inverse)
        within = np.allclose(
            x[:, j], means[inverse], rtol=0, atol=1e-12 * (1 + np.abs(means).max())
        )
        out[j] = within and np.unique(np.round(means, 12)).size < 3
    return out


def cv_r2(
    x: np.ndarray, ys: np.ndarray, folds: Sequence[np.ndarray], groups: np.ndarray | None = None
) -> np.ndarray:
    """Cross-validated R^2 of OLS for each column of ``ys`` (n_obs, n_columns).

    Held-out predictions of all folds are pooled; R^2 = 1 - SS_res / SS_tot around the mean of
    all observations. One pseudo-inverse per fold serves every column. With ``groups`` (the
    observations' families), a column that in a training fold only tells its families apart
    (:func:`_unidentified`) is left out of that fold's fit.
    """
    ys = np.asarray(ys, dtype=np.float64)
    pred = np.empty_like(ys)
    n = len(x)
    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        xtr, xte = _design(x[train]), _design(x[test])
        # Standardise by the training fold only (OLS with an intercept is unchanged by it,
        # but the pseudo-inverse is better conditioned). A column constant in the training
        # fold, or one that only tells its families apart, carries no effect there: it is
        # zeroed, not extrapolated to the held-out families.
        mu, sd = xtr[:, 1:].mean(0), xtr[:, 1:].std(0)
        sd[_unidentified(x[train], None if groups is None else groups[train])] = 0.0
        scale = np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 1e-12)
        xtr[:, 1:] = (xtr[:, 1:] - mu) * scale
        xte[:, 1:] = (xte[:, 1:] - mu) * scale
        pred[test] = xte @ (np.linalg.pinv(xtr) @ ys[train])
    ss_res = ((ys - pred) ** 2).sum(0)
    ss_tot = ((ys - ys.mean(0)) ** 2).sum(0)
    return 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, np.nan)


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns with variance, standardised, and the mask of those columns."""
    sd = x.std(axis=0)
    varying = sd > 0
    return (x[:, varying] - x[:, varying].mean(axis=0)) / sd[varying], varying


def _p(null: np.ndarray, observed: float) -> float:
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + null.size))


def _permuted_residuals(
    r: np.ndarray, groups: np.ndarray, n: int, rng: np.random.Generator, scheme: str
) -> np.ndarray:
    """``n`` permutations (n_obs, n) of residuals ``r`` that keep their family structure.

    Each residual is its family's mean plus a deviation. Deviations are exchanged within each
    family; with ``free`` the family means are also exchanged between families (so that what a
    family shares moves as a block, as it must for the gain's null to have the observed spread
    when families differ), with ``within_family`` they stay.
    """
    labels, inverse = np.unique(groups, return_inverse=True)
    means = np.bincount(inverse, r) / np.bincount(inverse)
    deviations = r - means[inverse]
    order = np.tile(np.arange(len(r)), (n, 1))
    for g in range(labels.size):
        block = np.flatnonzero(inverse == g)
        order[:, block] = rng.permuted(np.tile(block, (n, 1)), axis=1)
    if scheme == "free":
        family = np.argsort(rng.random((n, labels.size)), axis=1)
        shared = means[family[:, inverse]]
    else:
        shared = np.tile(means[inverse], (n, 1))
    return (shared + deviations[order]).T


def _gain_test(
    xn: np.ndarray, xc: np.ndarray, y: np.ndarray, groups, folds, n: int, rng, scheme: str
) -> tuple[float, float, float, float]:
    """Nuisance-only and combined cross-validated R^2, the gain and its p-value.

    Freedman and Lane: the nuisance model is fitted to all observations, its residuals are
    permuted (:func:`_permuted_residuals`) and added back to its fitted values; each permuted
    score vector goes through the cross-validation of both models, as the observed one does.
    """
    both = cv_r2(xn, y[:, None], folds, groups)[0], cv_r2(xc, y[:, None], folds, groups)[0]
    d = _design(xn)
    fitted = d @ (np.linalg.pinv(d) @ y)
    ys = fitted[:, None] + _permuted_residuals(y - fitted, groups, n, rng, scheme)
    null = cv_r2(xc, ys, folds, groups) - cv_r2(xn, ys, folds, groups)
    gain = float(both[1] - both[0])
    return float(both[0]), float(both[1]), gain, _p(null, gain)


def _bootstrap(d: np.ndarray, y: np.ndarray, groups: np.ndarray, n: int, rng) -> np.ndarray:
    """OLS coefficients (n, columns of ``d``) of ``n`` family-bootstrap resamples.

    Whole families are resampled; each resample is a weighted least-squares fit with the number
    of times each observation was drawn as its weight (all at once).
    """
    labels, inverse = np.unique(groups, return_inverse=True)
    draws = rng.integers(0, labels.size, size=(n, labels.size))
    counts = np.stack([np.bincount(row, minlength=labels.size) for row in draws])
    w = counts[:, inverse].astype(np.float64)  # (n, n_obs)
    xtwx = np.einsum("bn,ni,nj->bij", w, d, d)
    xtwy = np.einsum("bn,ni,n->bi", w, d, y)
    return np.einsum("bij,bj->bi", np.linalg.pinv(xtwx), xtwy)


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
) -> Fit:
    """Cross-validated OLS of ``y`` (n_obs,) on ``x`` (n_obs, n_features), grouped by ``groups``,
    alone and beside the ``nuisance`` columns (n_obs, n_nuisance; none: intercept only).

    Constant columns are left out (coefficient NaN, stability 0). Coefficients are per standard
    deviation of each feature, in score units. ``permutation`` picks the null (``PERMUTATIONS``)
    of both p-values: the scores' for the set alone, the nuisance residuals' for the gain.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xn = np.zeros((len(y), 0)) if nuisance is None else np.asarray(nuisance, dtype=np.float64)
    groups = np.asarray(groups)
    if not (np.isfinite(x).all() and np.isfinite(y).all() and np.isfinite(xn).all()):
        raise BrainshapeError(
            "a feature or score is NaN or infinite; drop the feature from "
            "regressions.feature_sets or fix its source table"
        )
    xs, varying = _standardise(x)
    xn, _ = _standardise(xn)
    folds = group_folds(groups, n_folds)
    rng = np.random.default_rng(seed)
    observed = float(cv_r2(xs, y[:, None], folds, groups)[0])
    order = permutation_orders(groups, n_permutations, rng, permutation)
    p_value = _p(cv_r2(xs, y[order].T, folds, groups), observed)
    combined = np.column_stack([xn, xs])
    r2_nuisance, r2_combined, gain, p_gain = _gain_test(
        xn, combined, y, groups, folds, n_permutations, rng, permutation
    )
    k = x.shape[1]
    coef, low, high, stability = (np.full(k, np.nan) for _ in range(4))
    stability[~varying] = 0.0
    d = _design(combined)
    full = (np.linalg.pinv(d) @ y)[1 + xn.shape[1] :]
    boot = _bootstrap(d, y, groups, n_bootstrap, rng)[:, 1 + xn.shape[1] :]
    alpha = (1 - ci) / 2
    coef[varying] = full
    low[varying], high[varying] = np.quantile(boot, [alpha, 1 - alpha], axis=0)
    stability[varying] = (np.sign(boot) == np.sign(full)).mean(axis=0)
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
    )


#: Regression-level columns of the regressions table, in order (then the feature columns).
REGRESSION_COLUMNS = [
    "stratum", "roi", "hemisphere", "feature_set", "n_obs", "n_families", "n_features",
    "cv_r2", "p_value", "q_value", "cv_r2_nuisance", "cv_r2_combined", "gain", "p_gain",
    "q_gain", "n_permutations",
]  # fmt: skip
FEATURE_COLUMNS = ["feature", "coef", "ci_low", "ci_high", "stability"]


def _rows(key: tuple, name: str, res: Fit) -> list[dict]:
    stratum, roi, hemi = key
    head = {"stratum": stratum, "roi": roi, "hemisphere": hemi, "feature_set": name}
    head.update(n_obs=res.n_obs, n_families=res.n_groups, n_features=len(res.features))
    head.update({k: getattr(res, k) for k in ("cv_r2", "p_value", "cv_r2_nuisance")})
    head.update({k: getattr(res, k) for k in ("cv_r2_combined", "gain", "p_gain")})
    head["n_permutations"] = res.n_permutations
    return [
        {**head, "feature": f, "coef": res.coef[j], "ci_low": res.ci_low[j],
         "ci_high": res.ci_high[j], "stability": res.stability[j]}
        for j, f in enumerate(res.features)
    ]  # fmt: skip


def run_regressions(
    obs: pd.DataFrame,
    feature_sets: Mapping[str, Sequence[str]],
    *,
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    n_folds: int = 5,
    seed: int = 0,
    permutation: str = "free",
) -> pd.DataFrame:
    """Every stratum x ROI x hemisphere x feature set; one row per (regression, feature).

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
            )
            rows += _rows(key, name, res)
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
    for col in ("n_obs", "n_families", "n_features", "n_permutations"):
        table[col] = table[col].astype("int64")
    return table[REGRESSION_COLUMNS + FEATURE_COLUMNS]


# --- scaling and compression ------------------------------------------------------------------


def _pairs(variants: Sequence[str], model: str, kinds) -> list[tuple[str, str, str]]:
    """(variant, reference, label) of each contrast among a model's variants."""
    by_kind: dict[str, list[str]] = {}
    for v in variants:
        by_kind.setdefault(kinds.get((model, v), "full"), []).append(v)
    pairs = []
    for full in by_kind.get("full", []):
        for kind in quantized_kinds():
            pairs += [(v, full, f"{kind} - full") for v in by_kind.get(kind, [])]
        pairs += [(full, v, "full - untrained") for v in by_kind.get("untrained", [])]
    return pairs


def _held_out(part: pd.DataFrame, subjects: list[str], counts: np.ndarray) -> dict:
    """Per (variant, roi, hemisphere): scores (n_draws, n_subjects) at held-out best layers."""
    out = {}
    for (variant, roi, hemi), site in part.groupby(["variant", "roi", "hemisphere"], sort=True):
        subs, _, matrix = analysis.score_matrix(site[site["subject"].isin(subjects)])
        if subs != subjects:
            continue  # a site some subjects lack: no pairing possible
        out[(variant, roi, hemi)] = analysis.held_out_best(matrix, counts)[1]
    return out


def _draw_means(diff: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per draw, the mean difference over its subjects (each as often as drawn)."""
    ok = np.isfinite(diff) & (counts > 0)
    return np.where(ok, diff * counts, 0).sum(axis=1) / np.maximum((counts * ok).sum(axis=1), 1)


def contrasts(
    scores: pd.DataFrame,
    kinds: Mapping[tuple[str, str], str],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Paired differences between a model's variants, per ROI x hemisphere and over all.

    Contrasts: each quantized variant minus the full-precision twin of the same model, and the
    full-precision model minus its untrained twin. Each subject's score of a variant is taken
    at the layer best on the other subjects (:func:`brainshape.analysis.held_out_best`);
    differences are paired by subject. The interval is a percentile bootstrap over subjects
    that redoes the choice of layers in every draw. ``roi`` = ``all`` averages the ROI x
    hemispheres per subject first.
    """
    columns = [
        "model", "contrast", "variant", "reference", "roi", "hemisphere",
        "difference", "ci_low", "ci_high", "n_subjects",
    ]  # fmt: skip
    if not {"variant", "layer", "subject"} <= set(scores.columns):
        # Published scores carry no subjects to pair: nothing to compare.
        return pd.DataFrame(columns=columns)
    rng = np.random.default_rng(seed)
    alpha = (1 - ci) / 2
    rows = []
    for model, part in scores.groupby("model", sort=True):
        pairs = _pairs(list(part["variant"].unique()), model, kinds)
        subjects = sorted(
            set.intersection(*(set(g) for _, g in part.groupby("variant")["subject"]))
        )
        if not pairs or len(subjects) < 2:
            continue
        n = len(subjects)
        draws = rng.integers(0, n, size=(n_bootstrap, n))
        counts = np.vstack([np.ones(n), [np.bincount(d, minlength=n) for d in draws]])
        held = _held_out(part, subjects, counts)
        for variant, reference, label in pairs:
            sites = sorted(
                {k[1:] for k in held if k[0] == variant}
                & {k[1:] for k in held if k[0] == reference}
            )
            diffs = {site: held[(variant, *site)] - held[(reference, *site)] for site in sites}
            if not diffs:
                continue
            stack = np.stack(list(diffs.values()))
            found = np.isfinite(stack).sum(axis=0)
            # Mean over the ROI x hemispheres of each subject (NaN where it was not drawn).
            total = np.where(np.isfinite(stack), stack, 0).sum(axis=0)
            diffs[("all", "all")] = np.where(found > 0, total / np.maximum(found, 1), np.nan)
            for (roi, hemi), diff in diffs.items():
                means = _draw_means(diff, counts)
                low, high = np.quantile(means[1:], [alpha, 1 - alpha])
                rows.append((model, label, variant, reference, roi, hemi, means[0], low, high, n))
    table = pd.DataFrame(rows, columns=columns)
    table["n_subjects"] = table["n_subjects"].astype("int64")
    return table


def scaling_table(
    scores: pd.DataFrame,
    counts: Mapping[str, float],
    kinds: Mapping[tuple[str, str], str],
) -> pd.DataFrame:
    """Per model variant: ``score`` (mean over subjects and ROI x hemispheres of the scores at
    best layers chosen out of sample; published scores as given), ``params``, ``kind``."""
    best = analysis.best_layers(scores) if "layer" in scores.columns else scores
    per = best.groupby(["model", "variant"], as_index=False)["score"].mean()
    per["params"] = per["model"].map(counts)
    per["kind"] = [kinds.get((m, v), "full") for m, v in zip(per.model, per.variant, strict=True)]
    return per


# --- plots ------------------------------------------------------------------------------------


def _save(fig, path) -> None:
    import matplotlib.pyplot as plt

    from brainshape.io import atomic_path

    with atomic_path(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _heat(ax, values: pd.DataFrame, q: pd.DataFrame, title: str, vmin: float, vmax: float):
    """One heat map panel, each cell annotated and starred where its q-value is below 0.05;
    NaN cells grey, marked n/a."""
    import matplotlib

    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="lightgrey")
    image = ax.imshow(
        np.ma.masked_invalid(values.to_numpy(np.float64)), cmap=cmap, vmin=vmin, vmax=vmax,
        aspect="auto",
    )  # fmt: skip
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values.iloc[i, j]
            text = "n/a" if np.isnan(v) else f"{v:.2f}" + ("*" if q.iloc[i, j] < 0.05 else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.set_xticks(range(values.shape[1]), values.columns, rotation=20)
    ax.set_yticks(range(values.shape[0]), values.index)
    ax.set_title(title, fontsize=10)
    return image


def plot_regressions(
    table: pd.DataFrame, path: str | os.PathLike, dataset: str = "", note: str = ""
) -> None:
    """Heat maps over stratum x ROI x hemisphere (rows) by feature set (columns): the
    cross-validated R^2 of each feature set alone (star: q < 0.05) and its gain over the
    nuisance model (star: q_gain < 0.05). Colours saturate at -1 and 1 (R^2) and +-0.5 (gain).
    The gain is n/a where the nuisance model itself fails out of sample (its R^2 below -1: with
    few families its family-level terms are extrapolated far beyond the training families).
    """
    plt = _pyplot()
    regs = table.drop_duplicates(["stratum", "roi", "hemisphere", "feature_set"])
    regs = regs.assign(target=regs["stratum"] + ": " + regs["roi"] + " " + regs["hemisphere"])
    regs = regs.assign(gain=regs["gain"].where(regs["cv_r2_nuisance"] >= -1))
    wide = {v: regs.pivot(index="target", columns="feature_set", values=v) for v in
            ("cv_r2", "q_value", "gain", "q_gain")}  # fmt: skip
    rows, cols = wide["cv_r2"].shape
    fig, axes = plt.subplots(1, 2, figsize=(3.2 * cols + 4.5, 0.42 * rows + 1.8), sharey=True)
    # R^2 is at most 1 but unbounded below: colours saturate so one bad fit does not wash out
    # the rest (the number in the cell is exact).
    left = _heat(axes[0], wide["cv_r2"], wide["q_value"], "cross-validated R² (set alone)", -1, 1)
    right = _heat(axes[1], wide["gain"], wide["q_gain"], "gain over the nuisance model", -0.5, 0.5)
    fig.colorbar(left, ax=axes[0], label="R²")
    fig.colorbar(right, ax=axes[1], label="R² (set + nuisance) - R² (nuisance)")
    fig.suptitle(f"Brainscore explained by shape{f' ({dataset})' if dataset else ''}")
    figures.finish(fig, note)
    _save(fig, path)


def plot_scaling(
    scores: pd.DataFrame,
    counts: Mapping[str, float],
    kinds: Mapping[tuple[str, str], str],
    path: str | os.PathLike,
    dataset: str = "",
    note: str = "",
) -> None:
    """Brainscore against log parameters, one point per model variant (:func:`scaling_table`:
    best layers chosen out of sample), coloured by variant kind; ``note`` under the figure."""
    plt = _pyplot()
    per = scaling_table(scores, counts, kinds)
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, rows in per.groupby("kind", sort=True):
        ax.scatter(rows["params"], rows["score"], label=kind, s=30)
        for row in rows.itertuples():
            ax.annotate(row.model, (row.params, row.score), fontsize=7, alpha=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("brainscore (out-of-sample best layer, mean r)")
    ax.legend(fontsize=8, title="variant kind", title_fontsize=8)
    ax.set_title(f"Brainscore against model size{f' ({dataset})' if dataset else ''}")
    figures.finish(fig, note)
    _save(fig, path)


def plot_contrasts(
    table: pd.DataFrame, path: str | os.PathLike, dataset: str = "", note: str = ""
) -> None:
    """Paired differences over all ROI x hemispheres, one row per model and contrast; ``note``
    under the figure."""
    plt = _pyplot()
    overall = table[table["roi"] == "all"].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(6, 0.4 * max(len(overall), 1) + 1.5))
    if overall.empty:
        ax.text(0.5, 0.5, "no variant pairs to compare", ha="center", va="center")
        ax.set_axis_off()
    else:
        y = np.arange(len(overall))
        err = np.stack(
            [overall["difference"] - overall["ci_low"], overall["ci_high"] - overall["difference"]]
        )
        ax.errorbar(overall["difference"], y, xerr=err, fmt="o", capsize=3)
        ax.set_yticks(
            y, [f"{m}: {c}" for m, c in zip(overall.model, overall.contrast, strict=True)]
        )
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel(
            "difference in brainscore (r) at out-of-sample best layers, 95% bootstrap interval"
        )
    ax.set_title(f"Variant against its twin{f' ({dataset})' if dataset else ''}")
    figures.finish(fig, note)
    _save(fig, path)
