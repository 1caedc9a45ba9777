"""Aggregate analyses: explain brainscores from shape features, and compare variants.

One ordinary least-squares regression per ROI x hemisphere x feature set predicts the brainscore
of each observation (a model variant's layer, or its best layer) from its shape features. The
cross-validation keeps a model *family* together: a model's quantized, full-precision and
untrained variants are never split between training and test. Reported per regression: the
cross-validated R^2 (held-out predictions of all folds pooled), a permutation p-value (scores
exchanged across all observations by default, or only within each family; the whole cross-validation
redone for each permutation, done as one matrix product because OLS predictions are linear in
the scores), Benjamini-Hochberg
q-values across all regressions, coefficients (per standard deviation of each feature) with
family-bootstrap percentile intervals, and how often each feature is selected (|t| above the
two-sided 5% critical value) across the training folds.

Beside them: brainscore against parameter count, each quantized variant against its
full-precision twin and the trained model against its untrained twin (paired differences with
bootstrap intervals over subjects).
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from brainshape import scoring
from brainshape.errors import BrainshapeError

#: Columns that identify a row of the topology table.
TOPOLOGY_KEYS = ["model", "variant", "layer", "subject", "roi", "hemisphere"]

#: Columns a published-scores CSV must have.
PUBLISHED_COLUMNS = ["model", "roi", "hemisphere", "score"]

#: Observation units: every layer of every variant, each variant's best layer (by its
#: group-mean score), or each variant with its features averaged over layers.
UNITS = ("layer", "best_layer", "mean")

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

#: Variant kinds compared with the full-precision twin.
QUANTIZED = ("bnb8", "bnb4", "gptq", "gguf")


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


def observations(
    scores: pd.DataFrame,
    topology: pd.DataFrame,
    families: Mapping[str, str],
    *,
    unit: str = "layer",
    published: bool = False,
    default_variants: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One row per observation and ROI x hemisphere: ``score``, ``family`` and the features.

    ``scores`` has ``model, variant, layer, subject, roi, hemisphere, score`` (the pipeline's
    brainscores; averaged over subjects) or, with ``published``, ``model, roi, hemisphere,
    score`` (+ optional ``variant``; missing variants come from ``default_variants``). Features
    come from the ``group`` rows of ``topology``. Published scores have no layer, so their
    features are averaged over layers whatever ``unit`` says.
    """
    if unit not in UNITS:
        raise BrainshapeError(f"regressions.unit is '{unit}'; use one of {list(UNITS)}")
    feats = topology[topology["subject"] == "group"].drop(columns="subject")
    if published:
        scores = scores.copy()
        if "variant" not in scores.columns:
            defaults = default_variants or {}
            scores["variant"] = scores["model"].map(defaults)
        unit = "mean"
        obs = scores.groupby(["model", "variant", "roi", "hemisphere"], as_index=False)[
            "score"
        ].mean()
    else:
        obs = scores.groupby(["model", "variant", "layer", "roi", "hemisphere"], as_index=False)[
            "score"
        ].mean()
        if unit == "best_layer":
            best = obs.groupby(["model", "variant", "roi", "hemisphere"])["score"].idxmax()
            obs = obs.loc[best.to_numpy()].reset_index(drop=True)
        elif unit == "mean":
            obs = obs.groupby(["model", "variant", "roi", "hemisphere"], as_index=False)[
                "score"
            ].mean()
    keys = ["model", "variant", "roi", "hemisphere"]
    if unit == "mean":
        numeric = [c for c in feats.columns if c not in keys and c != "layer"]
        feats = feats.groupby(keys, as_index=False)[numeric].mean()
    else:
        keys = keys + ["layer"]
    table = obs.merge(feats, on=keys, how="inner")
    if table.empty:
        raise BrainshapeError(
            "no brainscore matches a row of the topology table (by model, variant, roi, "
            "hemisphere" + (", layer" if "layer" in keys else "") + "); check that the models, "
            "variants and ROI names of the scores are those of this dataset"
        )
    unknown = sorted(set(table["model"]) - set(families))
    if unknown:
        raise BrainshapeError(f"models {unknown} are not in the registry; add them with a family")
    table.insert(2, "family", table["model"].map(families))
    return table


def feature_columns(table: pd.DataFrame, patterns: Sequence[str], name: str) -> list[str]:
    """Columns of ``table`` matched by the glob ``patterns`` of feature set ``name``."""
    cols = [c for c in table.columns if any(fnmatch.fnmatchcase(c, p) for p in patterns)]
    if not cols:
        raise BrainshapeError(
            f"regressions.feature_sets.{name} ({list(patterns)}) matches no column of the "
            f"topology table; columns: {', '.join(map(str, table.columns))}"
        )
    return cols


# --- one regression ---------------------------------------------------------------------------


@dataclass
class Fit:
    """Result of one regression; arrays are per feature (in ``features`` order)."""

    features: list[str]
    cv_r2: float
    p_value: float
    coef: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    selection: np.ndarray
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


def cv_r2(x: np.ndarray, ys: np.ndarray, folds: Sequence[np.ndarray]) -> np.ndarray:
    """Cross-validated R^2 of OLS for each column of ``ys`` (n_obs, n_columns).

    Held-out predictions of all folds are pooled; R^2 = 1 - SS_res / SS_tot around the mean of
    all observations. One pseudo-inverse per fold serves every column.
    """
    ys = np.asarray(ys, dtype=np.float64)
    pred = np.empty_like(ys)
    n = len(x)
    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        xtr, xte = _design(x[train]), _design(x[test])
        # Standardise by the training fold only (OLS with an intercept is unchanged by it,
        # but the pseudo-inverse is better conditioned).
        mu, sd = xtr[:, 1:].mean(0), xtr[:, 1:].std(0)
        sd[sd == 0] = 1.0
        xtr[:, 1:] = (xtr[:, 1:] - mu) / sd
        xte[:, 1:] = (xte[:, 1:] - mu) / sd
        pred[test] = xte @ (np.linalg.pinv(xtr) @ ys[train])
    ss_res = ((ys - pred) ** 2).sum(0)
    ss_tot = ((ys - ys.mean(0)) ** 2).sum(0)
    return 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, np.nan)


def fit(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    features: Sequence[str],
    *,
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    n_folds: int = 5,
    seed: int = 0,
    ci: float = 0.95,
    permutation: str = "free",
) -> Fit:
    """Cross-validated OLS of ``y`` (n_obs,) on ``x`` (n_obs, n_features), grouped by ``groups``.

    Constant features are left out (coefficient NaN, selection 0). Coefficients are per standard
    deviation of each feature, in score units. ``permutation`` picks the null (``PERMUTATIONS``).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    groups = np.asarray(groups)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise BrainshapeError(
            "a feature or score is NaN or infinite; drop the feature from "
            "regressions.feature_sets or fix its source table"
        )
    n, k = x.shape
    sd = x.std(0)
    varying = sd > 0
    xs = (x[:, varying] - x[:, varying].mean(0)) / sd[varying]
    folds = group_folds(groups, n_folds)
    rng = np.random.default_rng(seed)

    observed = float(cv_r2(xs, y[:, None], folds)[0])
    order = permutation_orders(groups, n_permutations, rng, permutation)
    null = cv_r2(xs, y[order].T, folds)
    p_value = float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_permutations))

    coef = np.full(k, np.nan)
    low, high = np.full(k, np.nan), np.full(k, np.nan)
    selection = np.zeros(k)
    d = _design(xs)
    coef[varying] = (np.linalg.pinv(d) @ y)[1:]
    # Family bootstrap: resample whole families; each resample is a weighted least-squares fit
    # with the number of times each observation was drawn as its weight (all at once).
    labels, inverse = np.unique(groups, return_inverse=True)
    draws = rng.integers(0, labels.size, size=(n_bootstrap, labels.size))
    counts = np.stack([np.bincount(row, minlength=labels.size) for row in draws])
    w = counts[:, inverse].astype(np.float64)  # (n_bootstrap, n_obs)
    xtwx = np.einsum("bn,ni,nj->bij", w, d, d)
    xtwy = np.einsum("bn,ni,n->bi", w, d, y)
    boot = np.einsum("bij,bj->bi", np.linalg.pinv(xtwx), xtwy)[:, 1:]
    alpha = (1 - ci) / 2
    low[varying], high[varying] = np.quantile(boot, [alpha, 1 - alpha], axis=0)

    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        dt = _design(xs[train])
        beta, *_ = np.linalg.lstsq(dt, y[train], rcond=None)
        dof = len(train) - dt.shape[1]
        if dof <= 0:
            continue
        sigma2 = ((y[train] - dt @ beta) ** 2).sum() / dof
        se = np.sqrt(np.clip(np.diag(np.linalg.pinv(dt.T @ dt)) * sigma2, 0, None))[1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.abs(beta[1:]) / se
        selection[varying] += t > stats.t.ppf(0.975, dof)
    selection /= len(folds)
    return Fit(
        features=list(features),
        cv_r2=observed,
        p_value=p_value,
        coef=coef,
        ci_low=low,
        ci_high=high,
        selection=selection,
        n_obs=n,
        n_groups=int(labels.size),
        n_permutations=int(n_permutations),
    )


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
    """Every ROI x hemisphere x feature set; one row per (regression, feature). See docs."""
    rows = []
    for (roi, hemi), part in obs.groupby(["roi", "hemisphere"], sort=True):
        for name, patterns in feature_sets.items():
            cols = feature_columns(obs, patterns, name)
            res = fit(
                part[cols].to_numpy(),
                part["score"].to_numpy(),
                part["family"].to_numpy(),
                cols,
                n_permutations=n_permutations,
                n_bootstrap=n_bootstrap,
                n_folds=n_folds,
                seed=seed,
                permutation=permutation,
            )
            for j, feature in enumerate(cols):
                rows.append(
                    {
                        "roi": roi,
                        "hemisphere": hemi,
                        "feature_set": name,
                        "n_obs": res.n_obs,
                        "n_families": res.n_groups,
                        "n_features": len(cols),
                        "cv_r2": res.cv_r2,
                        "p_value": res.p_value,
                        "n_permutations": res.n_permutations,
                        "feature": feature,
                        "coef": res.coef[j],
                        "ci_low": res.ci_low[j],
                        "ci_high": res.ci_high[j],
                        "selection_freq": res.selection[j],
                    }
                )
    table = pd.DataFrame(rows)
    per_reg = table.drop_duplicates(["roi", "hemisphere", "feature_set"])
    q = scoring.fdr(per_reg["p_value"].to_numpy())
    qmap = dict(
        zip(zip(per_reg.roi, per_reg.hemisphere, per_reg.feature_set, strict=True), q, strict=True)
    )
    table.insert(
        8,
        "q_value",
        [qmap[k] for k in zip(table.roi, table.hemisphere, table.feature_set, strict=True)],
    )
    for col in ("n_obs", "n_families", "n_features", "n_permutations"):
        table[col] = table[col].astype("int64")
    return table


# --- scaling and compression ------------------------------------------------------------------


def variant_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (model, variant, subject, roi, hemisphere): the score at the variant's best layer.

    The best layer of a variant and ROI x hemisphere maximises the mean over subjects, so the
    choice does not favour any one subject.
    """
    mean = scores.groupby(["model", "variant", "layer", "roi", "hemisphere"], as_index=False)[
        "score"
    ].mean()
    best = mean.loc[mean.groupby(["model", "variant", "roi", "hemisphere"])["score"].idxmax()]
    keep = best[["model", "variant", "layer", "roi", "hemisphere"]]
    return scores.merge(keep, on=["model", "variant", "layer", "roi", "hemisphere"])


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
    full-precision model minus its untrained twin. Differences are paired by subject (the
    brainscore at each variant's best layer); the interval is a percentile bootstrap over
    subjects. ``roi`` = ``all`` averages the ROI x hemispheres per subject first.
    """
    columns = [
        "model",
        "contrast",
        "variant",
        "reference",
        "roi",
        "hemisphere",
        "difference",
        "ci_low",
        "ci_high",
        "n_subjects",
    ]
    if not {"variant", "layer", "subject"} <= set(scores.columns):
        # Published scores carry no subjects to pair: nothing to compare.
        return pd.DataFrame(columns=columns)
    best = variant_scores(scores)
    per = best.groupby(["model", "variant", "subject", "roi", "hemisphere"], as_index=False)[
        "score"
    ].mean()
    rng = np.random.default_rng(seed)
    alpha = (1 - ci) / 2
    rows = []
    for model, part in per.groupby("model", sort=True):
        by_kind: dict[str, list[str]] = {}
        for v in part["variant"].unique():
            by_kind.setdefault(kinds.get((model, v), "full"), []).append(v)
        pairs = []
        for full in by_kind.get("full", []):
            for kind in QUANTIZED:
                pairs += [(v, full, f"{kind} - full") for v in by_kind.get(kind, [])]
            pairs += [(full, v, "full - untrained") for v in by_kind.get("untrained", [])]
        for variant, reference, label in pairs:
            a = part[part["variant"] == variant].set_index(["subject", "roi", "hemisphere"])
            b = part[part["variant"] == reference].set_index(["subject", "roi", "hemisphere"])
            diff = (a["score"] - b["score"]).dropna().reset_index()
            overall = diff.groupby("subject", as_index=False)["score"].mean()
            overall["roi"], overall["hemisphere"] = "all", "all"
            for (roi, hemi), d in pd.concat([diff, overall]).groupby(
                ["roi", "hemisphere"], sort=False
            ):
                values = d["score"].to_numpy()
                boot = values[rng.integers(0, values.size, (n_bootstrap, values.size))].mean(1)
                rows.append(
                    {
                        "model": model,
                        "contrast": label,
                        "variant": variant,
                        "reference": reference,
                        "roi": roi,
                        "hemisphere": hemi,
                        "difference": float(values.mean()),
                        "ci_low": float(np.quantile(boot, alpha)),
                        "ci_high": float(np.quantile(boot, 1 - alpha)),
                        "n_subjects": int(values.size),
                    }
                )
    return pd.DataFrame(rows, columns=columns)


# --- parameter counts and plots ---------------------------------------------------------------


def parameter_counts(
    registry: Mapping[str, Mapping], model_dirs: Mapping[str, str | os.PathLike | None]
) -> dict[str, float]:
    """Parameters per model: the registry's ``params``, else the prepared model's count."""
    import json
    from pathlib import Path

    counts = {}
    for model, entry in registry.items():
        n = entry.get("params")
        info = Path(model_dirs[model]) / "brainshape_model.json" if model_dirs.get(model) else None
        if n is None and info is not None and info.is_file():
            n = json.loads(info.read_text()).get("params")
        counts[model] = float(n) if n is not None else float("nan")
    return counts


def _save(fig, path) -> None:
    from pathlib import Path

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


def plot_regressions(table: pd.DataFrame, path: str | os.PathLike, dataset: str = "") -> None:
    """Heat map of cross-validated R^2: ROI x hemisphere (rows) by feature set (columns).

    Each cell is annotated with its R^2 and marked * where the BH q-value is below 0.05.
    Colours saturate at -1.
    """
    plt = _pyplot()
    regs = table.drop_duplicates(["roi", "hemisphere", "feature_set"])
    regs = regs.assign(target=regs["roi"] + " " + regs["hemisphere"])
    r2 = regs.pivot(index="target", columns="feature_set", values="cv_r2")
    q = regs.pivot(index="target", columns="feature_set", values="q_value")
    fig, ax = plt.subplots(figsize=(1.6 * r2.shape[1] + 2.5, 0.45 * r2.shape[0] + 1.6))
    # R^2 is at most 1 but unbounded below: colours saturate at -1 so one bad fit does not wash
    # out the rest (the number in the cell is exact).
    image = ax.imshow(r2.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    for i in range(r2.shape[0]):
        for j in range(r2.shape[1]):
            star = "*" if q.iloc[i, j] < 0.05 else ""
            ax.text(j, i, f"{r2.iloc[i, j]:.2f}{star}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(r2.shape[1]), r2.columns, rotation=20)
    ax.set_yticks(range(r2.shape[0]), r2.index)
    fig.colorbar(image, ax=ax, label="cross-validated R²")
    ax.set_title(f"Brainscore explained by shape{f' ({dataset})' if dataset else ''}")
    fig.tight_layout()
    _save(fig, path)


def plot_scaling(
    scores: pd.DataFrame,
    counts: Mapping[str, float],
    kinds: Mapping[tuple[str, str], str],
    path: str | os.PathLike,
    dataset: str = "",
) -> None:
    """Brainscore (best layer, mean over subjects and ROI x hemispheres) against log parameters.

    One point per model variant, coloured by variant kind; published scores (no layer) are
    averaged over ROI x hemispheres as given.
    """
    plt = _pyplot()
    if "layer" in scores.columns:
        best = variant_scores(scores)
    else:
        best = scores
    per = best.groupby(["model", "variant"], as_index=False)["score"].mean()
    per["params"] = per["model"].map(counts)
    per["kind"] = [kinds.get((m, v), "full") for m, v in zip(per.model, per.variant, strict=True)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, rows in per.groupby("kind", sort=True):
        ax.scatter(rows["params"], rows["score"], label=kind, s=30)
        for row in rows.itertuples():
            ax.annotate(row.model, (row.params, row.score), fontsize=7, alpha=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("brainscore (best layer, mean r)")
    ax.legend(fontsize=8, title="variant kind", title_fontsize=8)
    ax.set_title(f"Brainscore against model size{f' ({dataset})' if dataset else ''}")
    fig.tight_layout()
    _save(fig, path)


def plot_contrasts(table: pd.DataFrame, path: str | os.PathLike, dataset: str = "") -> None:
    """Paired differences over all ROI x hemispheres, one row per model and contrast."""
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
        ax.set_xlabel("difference in brainscore (r), 95% bootstrap interval over subjects")
    ax.set_title(f"Variant against its twin{f' ({dataset})' if dataset else ''}")
    fig.tight_layout()
    _save(fig, path)
