"""Variants against their twins (quantized against full precision, trained against untrained)
and brainscore against size, at best layers chosen out of sample."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from brainshape import analysis
from brainshape.models import quantized_kinds


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
