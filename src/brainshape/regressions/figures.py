"""The report's figures of the regressions, the scaling and the contrasts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from brainshape.figures import finish
from brainshape.regressions.variants import scaling_table


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
    finish(fig, note)
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
    finish(fig, note)
    _save(fig, path)


def plot_contrasts(
    table: pd.DataFrame, path: str | os.PathLike, dataset: str = "", note: str = ""
) -> None:
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
        ax.set_xlabel(
            "difference in brainscore (r) at out-of-sample best layers, 95% bootstrap interval"
        )
    ax.set_title(f"Variant against its twin{f' ({dataset})' if dataset else ''}")
    finish(fig, note)
    _save(fig, path)
