"""Observations of the regressions: brainscores per unit (layer, best layer or variant) beside
their shape features and the nuisance columns (relative depth, size, variant kind)."""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brainshape import analysis
from brainshape.errors import BrainshapeError
from brainshape.models import PREPARED_INFO

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

#: Prefix of the nuisance columns of an observations table.
NUISANCE = "nuisance_"

#: Cubic B-spline functions of relative depth in the nuisance model (``regressions.depth_splines``).
DEPTH_SPLINES = 8


def depth_basis(depth: np.ndarray, n_functions: int = DEPTH_SPLINES) -> np.ndarray:
    """Cubic B-splines of relative depth (n_obs, n_functions), knots evenly spaced on [0, 1].

    The knots do not depend on the data, so every fold and every permutation sees the same
    basis; with the intercept the nuisance model spans ``n_functions + 1`` functions of depth,
    enough for a profile that peaks inside the network (a cubic is not).
    """
    from sklearn.preprocessing import SplineTransformer

    if n_functions < 2:
        raise BrainshapeError(f"regressions.depth_splines is {n_functions}; use 2 or more")
    # n_knots + degree - 1 B-splines, one fewer without the one the intercept stands for.
    spline = SplineTransformer(n_knots=n_functions - 1, degree=3, include_bias=False)
    spline.fit(np.linspace(0.0, 1.0, 11)[:, None])
    return spline.transform(np.clip(np.asarray(depth, np.float64), 0.0, 1.0)[:, None])


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


#: Intrinsic-dimension columns of topology.parquet and how each enters the nuisance model.
DIMENSION_COLUMNS = {
    "layer_participation_ratio": ("log_participation_ratio", np.log10),
    "layer_twonn": ("twonn", lambda v: v),
}


def _nuisance(
    table: pd.DataFrame, params: Mapping[str, float], depth_splines: int, dimension: bool
) -> pd.DataFrame:
    """Add the nuisance columns: relative depth (``depth_splines`` cubic B-splines, where there
    is a layer), log10 parameters, with ``dimension`` the layer's intrinsic dimension (log10
    participation ratio and TwoNN, where the topology table has them), one indicator per variant
    kind other than ``full``."""
    if "depth" in table.columns:
        basis = depth_basis(table["depth"].to_numpy(np.float64), depth_splines)
        for j in range(basis.shape[1]):
            table[f"{NUISANCE}depth_s{j + 1}"] = basis[:, j]
    counts = table["model"].map(params)
    unknown = sorted(table.loc[~(counts > 0), "model"].unique())
    if unknown:
        raise BrainshapeError(
            f"models {unknown} have no parameter count for the nuisance model; set params in "
            "their registry entries"
        )
    table[f"{NUISANCE}log_params"] = np.log10(counts.to_numpy(np.float64))
    for column, (name, transform) in DIMENSION_COLUMNS.items():
        if dimension and column in table.columns:
            table[f"{NUISANCE}{name}"] = transform(table[column].to_numpy(np.float64))
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
    depth_splines: int = DEPTH_SPLINES,
    dimension: bool = True,
) -> pd.DataFrame:
    """One row per observation and ROI x hemisphere: ``stratum``, ``kind``, ``family``,
    ``score``, ``depth`` (relative depth, where there is a layer), the nuisance columns
    (``nuisance_*``) and the features.

    ``scores`` has ``model, variant, layer, subject, roi, hemisphere, score`` (the pipeline's
    brainscores; averaged over subjects, or with ``unit: best_layer`` each subject at the layer
    the others chose, then averaged with the features of those layers) or, with
    ``published``, ``model, roi, hemisphere, score`` (+ optional ``variant``; missing variants
    come from ``default_variants``). Features come from the ``group`` rows of ``topology``.
    Published scores have no layer, so their features are averaged over layers whatever
    ``unit`` says. ``params``: parameters per model; ``kinds``: (model, variant) -> kind;
    ``depth_splines`` and ``dimension``: the nuisance model's depth basis and whether it holds
    the layers' intrinsic dimension.
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
    return _nuisance(table, params, depth_splines, dimension)


def crossfit_observations(
    scores: Mapping[str, pd.DataFrame], topology: Mapping[str, pd.DataFrame], families, **kw
) -> pd.DataFrame:
    """Cross-fitted observations (:mod:`brainshape.crossfit`): the features of half A beside the
    brainscores of half B, and those of B beside A's, one above the other.

    ``scores`` and ``topology`` map ``A`` and ``B`` to each half's tables; ``kw`` as
    :func:`observations`. The column ``crossfit`` names the half of the features, and the
    nuisance model gets the indicator ``nuisance_crossfit_B``, so that each direction is centred
    on its own mean: no sum over rows then pairs the two halves' noise.
    """
    parts = []
    for features, scored in (("A", "B"), ("B", "A")):
        part = observations(scores[scored], topology[features], families, **kw)
        part.insert(1, "crossfit", features)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    table[f"{NUISANCE}crossfit_B"] = (table["crossfit"] == "B").astype(np.float64)
    return table


def feature_columns(table: pd.DataFrame, patterns: Sequence[str], name: str) -> list[str]:
    """Columns of ``table`` matched by the glob ``patterns`` of feature set ``name``; a
    feature's spread over landmark draws (``*_landmark_sd``) only where a pattern names it."""
    cols = [
        c
        for c in table.columns
        if any(fnmatch.fnmatchcase(c, p) for p in patterns)
        and (not c.endswith("_landmark_sd") or c in patterns)
    ]
    if not cols:
        raise BrainshapeError(
            f"regressions.feature_sets.{name} ({list(patterns)}) matches no column of the "
            f"topology table; columns: {', '.join(map(str, table.columns))}"
        )
    return cols


def landmark_reliability(table: pd.DataFrame, column: str) -> float:
    """The share of a feature's variance over the observations of ``table`` that is not the
    choice of landmarks: ``1 - mean(sd^2) / var``, with ``sd`` its standard deviation over the
    landmark draws (``<column>_landmark_sd``; for a ``<measure>_z``, the measure's over its null
    sd). NaN where topology.parquet has no such column (``topology.stability_seeds`` 0)."""
    sd = table.get(f"{column}_landmark_sd")
    if sd is None and column.endswith("_z"):
        measure = column[: -len("_z")]
        if f"{measure}_landmark_sd" in table and f"{measure}_null_sd" in table:
            sd = table[f"{measure}_landmark_sd"] / table[f"{measure}_null_sd"]
    var = float(table[column].var(ddof=0))
    if sd is None or not var > 0:
        return float("nan")
    return float(1.0 - np.nanmean(np.asarray(sd, np.float64) ** 2) / var)


def nuisance_columns(table: pd.DataFrame) -> list[str]:
    """The nuisance columns of an observations table."""
    return [c for c in table.columns if c.startswith(NUISANCE)]
