"""Aggregates over encoding results: the brainscore table, best layers chosen out of sample,
and the brainscore figures."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from brainshape import scoring
from brainshape.errors import BrainshapeError

#: Columns that identify one brainscore.
KEYS = ["model", "variant", "layer", "subject", "roi", "hemisphere"]

#: Columns an encoding table (one row per target) must have.
ENCODING_COLUMNS = [*KEYS, "target", "score", "alpha"]


#: Significance threshold on per-target q-values for ``fraction_significant``.
FDR_LEVEL = 0.05

_SITE = ["subject", "roi", "hemisphere"]


def _read(t, what: str, columns: list[str]) -> pd.DataFrame:
    frame = t if isinstance(t, pd.DataFrame) else pd.read_parquet(t)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        name = "" if isinstance(t, pd.DataFrame) else f"{t} "
        raise BrainshapeError(
            f"{what} {name}lacks columns {missing}; rerun the rule that writes it"
        )
    return frame


def brainscores(
    tables: Sequence[str | os.PathLike] | Sequence[pd.DataFrame],
    baselines: Sequence[str | os.PathLike] | Sequence[pd.DataFrame] = (),
    ceiling: str | os.PathLike | pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Brainscore table from per-target encoding tables, with baselines and ceiling beside it.

    The brainscore of a (model, variant, layer, subject, roi, hemisphere) is the mean held-out
    Pearson r over its targets (one target for ROI means, its voxels otherwise). Returns one row
    per key with columns ``KEYS + [score, score_sem, n_targets, alpha_median]``; ``score_sem``
    is the standard error over targets (NaN for a single target). Then, where the inputs have
    them:

    - ``p_value`` (block-permutation p of the ROI mean r), ``q_value`` (Benjamini-Hochberg over
      the ROI x hemispheres of one model, variant, layer and subject) and
      ``fraction_significant`` (share of targets with per-target q below ``FDR_LEVEL``);
    - ``sensitivity``, ``specificity``, ``invariance``: segment identification of the ROI x
      hemisphere (``scoring.segment_identification``), where the encoding used that metric;
    - ``ceiling`` (mean over targets of the inter-subject r) and ``score_normalized``
      (``score / ceiling``, NaN where the ceiling is not positive);
    - ``score_<baseline>`` and ``excess_<baseline>`` (``score`` minus it) per baseline table,
      matched on subject, roi and hemisphere;
    - ``score_untrained`` and ``excess_untrained``: the same model's ``untrained`` variant at
      the same layer, subject, roi and hemisphere (NaN if the model has no such variant).
    """
    data = _encoding_rows(tables)
    grouped = data.groupby(KEYS, sort=True, observed=True)
    out = grouped.agg(
        score=("score", "mean"),
        score_sem=("score", lambda s: s.std(ddof=1) / np.sqrt(len(s)) if len(s) > 1 else np.nan),
        n_targets=("score", "size"),
        alpha_median=("alpha", "median"),
    ).reset_index()
    out["layer"] = out["layer"].astype("int64")
    out["n_targets"] = out["n_targets"].astype("int64")
    if "p_value_roi" in data.columns:
        out = _with_significance(out, grouped)
    identification = [c for c in ("sensitivity", "specificity", "invariance") if c in data]
    if identification:
        found = grouped[identification].first().reset_index()
        out = out.merge(found, on=KEYS, how="left")
    if ceiling is not None:
        out = _with_ceiling(out, ceiling)
    if baselines:
        out = _with_baselines(out, baselines)
    untrained = out.loc[out["variant"] == "untrained", ["model", "layer", *_SITE, "score"]]
    untrained = untrained.rename(columns={"score": "score_untrained"})
    out = out.merge(untrained, on=["model", "layer", *_SITE], how="left")
    out["excess_untrained"] = out["score"] - out["score_untrained"]
    return out


def _encoding_rows(tables) -> pd.DataFrame:
    frames = []
    for t in tables:
        frame = _read(t, "encoding table", ENCODING_COLUMNS)
        optional = ("p_value", "q_value", "p_value_roi", "sensitivity", "specificity", "invariance")
        extra = [c for c in optional if c in frame.columns]
        frames.append(frame[ENCODING_COLUMNS + extra])
    if not frames:
        raise BrainshapeError("no encoding tables to aggregate: the config selects no model")
    return pd.concat(frames, ignore_index=True)


def _with_significance(out: pd.DataFrame, grouped) -> pd.DataFrame:
    """``p_value`` of the ROI mean, its q over the ROI x hemispheres of one model, variant,
    layer and subject, and the share of targets with q below :data:`FDR_LEVEL`."""
    stats = grouped.agg(
        p_value=("p_value_roi", "first"),
        fraction_significant=("q_value", lambda q: float(np.mean(q < FDR_LEVEL))),
    ).reset_index()
    out = out.merge(stats, on=KEYS, how="left")
    family = ["model", "variant", "layer", "subject"]
    out["q_value"] = out.groupby(family, observed=True)["p_value"].transform(
        lambda p: pd.Series(scoring.fdr(p.to_numpy()), index=p.index)
    )
    out.loc[out["p_value"].isna(), "fraction_significant"] = np.nan
    return out


def _with_ceiling(out: pd.DataFrame, ceiling) -> pd.DataFrame:
    ceil = _read(ceiling, "ceiling table", [*_SITE, "ceiling"])
    ceil = ceil.groupby(_SITE, observed=True)["ceiling"].mean().reset_index()
    out = out.merge(ceil, on=_SITE, how="left")
    positive = out["ceiling"] > 0
    out["score_normalized"] = np.where(positive, out["score"] / out["ceiling"], np.nan)
    return out


def _with_baselines(out: pd.DataFrame, tables) -> pd.DataFrame:
    """``score_<baseline>`` and ``excess_<baseline>`` from the baseline tables (one per
    baseline and subject group)."""
    base = pd.concat(
        [_read(t, "baseline table", ["baseline", *_SITE, "score"]) for t in tables],
        ignore_index=True,
    )
    for name, rows in base.groupby("baseline", sort=True):
        mean = rows.groupby(_SITE, observed=True)["score"].mean().rename(f"score_{name}")
        out = out.merge(mean.reset_index(), on=_SITE, how="left")
        out[f"excess_{name}"] = out["score"] - out[f"score_{name}"]
    return out


# --- best layers, chosen out of sample ------------------------------------------------------

#: Columns that identify a variant's ROI x hemisphere, over which a best layer is chosen.
_SITE_KEYS = ["model", "variant", "roi", "hemisphere"]

#: Bootstrap draws handled at once by :func:`held_out_best` (bounds its draws x subjects x
#: layers array).
_DRAW_CHUNK = 200


def score_matrix(part: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Subjects (sorted), layers (sorted) and their scores (n_subjects, n_layers) of one site.

    ``part`` holds the rows of one (model, variant, roi, hemisphere) of a brainscores table.
    A subject without a score at some layer is refused: its choice would be on other layers.
    """
    wide = part.pivot_table(index="subject", columns="layer", values="score", aggfunc="mean")
    if wide.isna().any().any():
        missing = wide.index[wide.isna().any(axis=1)].tolist()
        raise BrainshapeError(
            f"subjects {missing} lack scores at some layers of {part['model'].iloc[0]} "
            f"{part['variant'].iloc[0]}; the best layer needs every layer of every subject"
        )
    return list(wide.index.astype(str)), wide.columns.to_numpy(), wide.to_numpy(np.float64)


def held_out_best(scores: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each subject's score at the layer that is best on the other subjects.

    ``scores`` (n_subjects, n_layers); ``counts`` (n_draws, n_subjects): how often each subject
    is in each draw (all ones: the data as they are; a row of a subject bootstrap otherwise). The
    layer of subject ``i`` in a draw maximises the mean over the draw's other subjects (every
    copy of ``i`` left out), so its score is out of sample. Returns the layer indices and the
    scores (n_draws, n_subjects); NaN (index -1) where a subject is not drawn or no other is.
    """
    n_draws, n = counts.shape
    index = np.full((n_draws, n), -1, dtype=np.int64)
    values = np.full((n_draws, n), np.nan)
    for start in range(0, n_draws, _DRAW_CHUNK):
        c = counts[start : start + _DRAW_CHUNK].astype(np.float64)
        total = c @ scores  # (draws, layers)
        others = total[:, None, :] - c[:, :, None] * scores[None]  # leave subject i out
        best = others.argmax(axis=2)
        ok = (c > 0) & (c < c.sum(axis=1, keepdims=True))
        index[start : start + len(c)] = np.where(ok, best, -1)
        values[start : start + len(c)] = np.where(ok, scores[np.arange(n)[None], best], np.nan)
    return index, values


def held_out_best_sites(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`held_out_best` of many sites at once, each subject counted once: ``scores``
    (n_subjects, n_layers, n_sites), every subject scored at every layer of every site. Returns
    the layer indices and the scores (n_subjects, n_sites) at the layer that is best on the
    other subjects; -1 and NaN with fewer than two subjects."""
    n, _, n_sites = scores.shape
    if n < 2:
        return np.full((n, n_sites), -1, dtype=np.int64), np.full((n, n_sites), np.nan)
    others = scores.sum(axis=0, keepdims=True) - scores  # leave subject i out
    best = others.argmax(axis=1)
    return best, np.take_along_axis(scores, best[:, None, :], axis=1)[:, 0, :]


def best_layers(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (model, variant, subject, roi, hemisphere): the best layer chosen out of sample.

    The layer of a subject maximises the mean score of the other subjects (leave one subject
    out), so the max over layers, biased upward by the number of layers, never scores the data
    it was chosen on. Columns: ``model``, ``variant``, ``subject``, ``roi``, ``hemisphere``,
    ``layer`` (the chosen layer), ``score`` (this subject's score there), ``score_in_sample``
    (this subject's own maximum over layers, for comparison). Needs two subjects at least.
    """
    rows = []
    for key, part in scores.groupby(_SITE_KEYS, sort=True):
        subjects, layers, matrix = score_matrix(part)
        if len(subjects) < 2:
            raise BrainshapeError(
                f"{key[0]} {key[1]} {key[2]} {key[3]} has scores of one subject: a best layer "
                "chosen out of sample needs at least two subjects"
            )
        index, values = held_out_best(matrix, np.ones((1, len(subjects))))
        for i, sub in enumerate(subjects):
            rows.append(
                (*key[:2], sub, *key[2:], int(layers[index[0, i]]), values[0, i], matrix[i].max())
            )
    columns = ["model", "variant", "subject", "roi", "hemisphere", "layer", "score"]
    table = pd.DataFrame(rows, columns=[*columns, "score_in_sample"])
    table["layer"] = table["layer"].astype("int64")
    return table


def baseline_names(scores: pd.DataFrame) -> list[str]:
    """The baselines a brainscores table has a ``score_<baseline>`` column for."""
    own = ("score_sem", "score_normalized", "score_untrained")
    return [c[len("score_") :] for c in scores.columns if c.startswith("score_") and c not in own]


def _variant_lines(ax, panel: pd.DataFrame, measure: str) -> None:
    """Each variant's mean over subjects by layer, with +-1 standard error over subjects."""
    for variant, rows in panel.groupby("variant", sort=True):
        by_layer = rows.groupby("layer")[measure]
        mean = by_layer.mean()
        sem = by_layer.std(ddof=1) / np.sqrt(by_layer.size())
        ax.plot(mean.index, mean.values, marker="o", ms=3, label=variant)
        ax.fill_between(mean.index, (mean - sem).values, (mean + sem).values, alpha=0.2)


def _baseline_lines(ax, panel: pd.DataFrame, measure: str, baselines: list[str]) -> None:
    """Each baseline's mean over subjects, dashed (on normalised panels over the ceiling)."""
    for k, name in enumerate(baselines):
        cols = [f"score_{name}"] + (["ceiling"] if "ceiling" in panel.columns else [])
        per_subject = panel.groupby("subject")[cols].first()
        level = per_subject[f"score_{name}"]
        if measure == "score_normalized":
            level = level / per_subject["ceiling"].where(per_subject["ceiling"] > 0)
        if level.notna().any():
            ax.axhline(level.mean(), color=f"C{7 + k}", ls="--", lw=1, label=f"baseline: {name}")


def _ceiling_band(ax, ceiling: pd.Series | None) -> None:
    """The noise ceiling and its interval over subjects on a raw-r panel."""
    if ceiling is None or not np.isfinite(ceiling["ceiling"]):
        return
    low, high = ceiling["ceiling_low"], ceiling["ceiling_high"]
    if np.isfinite(low) and np.isfinite(high):
        ax.axhspan(low, high, color="0.6", alpha=0.25, lw=0, label="noise ceiling, 95% interval")
    ax.axhline(ceiling["ceiling"], color="0.4", lw=0.8, ls=":", label="noise ceiling")


def _masked(ax, reason: str) -> None:
    """A normalised panel whose ceiling is not reliably above zero: grey, with the reason."""
    import textwrap

    ax.set_facecolor("0.88")
    ax.text(0.5, 0.5, "masked: " + textwrap.fill(reason, 38), transform=ax.transAxes,
            ha="center", va="center", fontsize=7, color="0.25")  # fmt: skip
    ax.set_yticks([])


def brainscores_figure(
    scores: pd.DataFrame,
    model: str,
    *,
    dataset: str = "",
    ceilings: pd.DataFrame | None = None,
    counts: dict | None = None,
):
    """Brainscore by layer, one row per ROI, one line per variant of ``model``; returns the
    figure (``brainshape.figures.save`` writes it).

    Columns: raw r for the left and right hemisphere and, where the table has a noise ceiling,
    the ceiling-normalised score for both. Lines show the mean over subjects; the band is +-1
    standard error across subjects. Dashed horizontal lines are the baselines (``score_<name>``
    columns; on normalised panels divided by the ceiling). With ``ceilings``
    (``summary.ceiling_intervals``) the raw-r panels show the ceiling and its 95% interval, and
    the normalised panels of ROI x hemispheres whose ceiling is not reliably above zero are
    greyed with the reason instead of plotted. ``counts`` (subjects, stories) goes in the
    footnote with the targets per ROI x hemisphere.
    """
    from brainshape import figures

    plt = figures.pyplot()
    data = scores[scores["model"] == model]
    if data.empty:
        raise BrainshapeError(
            f"no brainscores for model '{model}' in the table; is it selected "
            "in the config's models list?"
        )
    rois = list(dict.fromkeys(data["roi"]))
    measures = ["score"]
    if "score_normalized" in data.columns and data["score_normalized"].notna().any():
        measures.append("score_normalized")
    panels = [(m, h) for m in measures for h in ("L", "R")]
    fig, axes = plt.subplots(len(rois), len(panels), sharex=True, squeeze=False,
                             figsize=(4 * len(panels), 1.9 * len(rois) + 1.4))  # fmt: skip
    site = {} if ceilings is None else {(r.roi, r.hemisphere): r for r in ceilings.itertuples()}
    for r, roi in enumerate(rois):
        for c, (measure, hemi) in enumerate(panels):
            ax = axes[r, c]
            panel = data[(data["roi"] == roi) & (data["hemisphere"] == hemi)]
            ceiling = site.get((roi, hemi))
            label = "r" if measure == "score" else "r / ceiling"
            ax.set_title(f"{roi} {hemi} ({label})", fontsize=9)
            if measure == "score_normalized" and ceiling is not None and not ceiling.reliable:
                _masked(ax, ceiling.reason)
                continue
            _variant_lines(ax, panel, measure)
            _baseline_lines(ax, panel, measure, baseline_names(data))
            if measure == "score":
                _ceiling_band(ax, None if ceiling is None else pd.Series(ceiling._asdict()))
            ax.axhline(0, color="grey", lw=0.6)
            if c == 0:
                ax.set_ylabel("r")
    for ax in axes[-1]:
        ax.set_xlabel("layer")
    _legend(fig, axes)
    fig.suptitle(f"{model}: brainscore by layer{f' ({dataset})' if dataset else ''}")
    figures.footnote(fig, _brainscores_note(data, counts, ceilings is not None))
    fig.tight_layout(rect=(0, 0.9 / fig.get_figheight(), 0.86, 0.97))
    return fig


def _legend(fig, axes) -> None:
    legend: dict = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="upper right", fontsize=8)


def _brainscores_note(data: pd.DataFrame, counts: dict | None, ceilings: bool) -> str:
    from brainshape import figures

    n_targets = data.groupby(["subject", "roi", "hemisphere"])["n_targets"].first()
    low, high = int(n_targets.min()), int(n_targets.max())
    span = f"{low}-{high} targets" if high != low else f"{low} target{'s' if low != 1 else ''}"
    targets = f"{span} per subject and ROI x hemisphere"
    counts = counts or {"subjects": data["subject"].nunique()}
    text = (f"{figures.counts_text(counts, targets)}. Lines: mean over subjects; bands: +-1 "
            "standard error over subjects; dashed: baselines (mean over subjects).")  # fmt: skip
    if ceilings:
        text += (" Grey band: noise ceiling (leave-one-out ISC through the ceiling formula) with "
                 "its 95% interval over subjects; r / ceiling panels are greyed where that "
                 "interval does not exclude 0.")  # fmt: skip
    return text
