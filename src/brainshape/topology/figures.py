"""Figures of the shape stage: each layer's agreement with each brain cloud, beside its null."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from brainshape.errors import BrainshapeError
from brainshape.io import atomic_path


def plot_agreement(
    table: pd.DataFrame,
    model: str,
    path: str | os.PathLike,
    dataset: str = "",
    measures: Sequence[str] = ("rsa", "cka_debiased"),
) -> None:
    """Agreement of each layer's cloud with each group brain cloud, beside its null.

    One row per ROI x hemisphere, one column per measure; per variant a line of the measure by
    layer and a band over the null (the null's brain clouds: mean +- 1.96 sd). A marker shows
    layers whose family-wise p-value (``<measure>_p_fwe``: corrected over every layer, model,
    variant, ROI x hemisphere and measure of the table, :func:`~brainshape.topology.nulls.
    family_wise`) is below 0.05.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = table[(table["model"] == model) & (table["subject"] == "group")]
    if data.empty:
        raise BrainshapeError(f"no rows of model '{model}' in the topology table; is it selected?")
    sites = data[["roi", "hemisphere"]].drop_duplicates().sort_values(["roi", "hemisphere"])
    fig, axes = plt.subplots(
        len(sites), len(measures), figsize=(3.6 * len(measures) + 1, 1.7 * len(sites) + 0.9),
        sharex=True, squeeze=False,
    )  # fmt: skip
    for r, (roi, hemi) in enumerate(sites.itertuples(index=False)):
        part = data[(data["roi"] == roi) & (data["hemisphere"] == hemi)]
        for c, name in enumerate(measures):
            ax = axes[r, c]
            for k, (variant, rows) in enumerate(part.groupby("variant", sort=True)):
                rows = rows.sort_values("layer")
                band = 1.96 * rows[f"{name}_null_sd"]
                mean = rows[f"{name}_null_mean"]
                ax.fill_between(rows["layer"], mean - band, mean + band, color=f"C{k}", alpha=0.15)
                ax.plot(rows["layer"], rows[name], color=f"C{k}", marker="o", ms=2.5, label=variant)
                hit = rows[rows[f"{name}_p_fwe"] < 0.05]
                ax.plot(hit["layer"], hit[name], "k*", ms=6, label="family-wise p < 0.05")
            ax.set_title(f"{roi} {hemi}: {name}", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("layer")
    handles: dict = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="upper right", fontsize=8)
    title = f"{model}: layer and brain clouds, with the time-shifted null"
    fig.suptitle(title + (f" ({dataset})" if dataset else ""), x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.96 - 0.25 / len(sites)))
    with atomic_path(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
