"""The QC page of the report: the decision first, the detail below (as MRIQC's group reports).

:func:`plot_qc` puts every run of a dataset on one figure, one panel per measure with the
threshold of its check, flagged runs in red and named, so that outliers stand out in seconds.
:func:`qc_page` writes the page beside it: one line with the decision (runs, flagged,
excluded), the flagged and excluded runs with their reasons, what could not be measured and why,
then every run's measures.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brainshape.exclusions import excluded_runs
from brainshape.io import atomic_path
from brainshape.qc import Thresholds

#: The figure's panels: (column, title, threshold attribute, threshold side, check).
PANELS = (
    ("isc_z", "inter-subject correlation (z vs shifts)", "chance_z", "below", "at_chance"),
    ("other_z", "best other story (z vs shifts)", "mislabel_z", "above", "mislabeled"),
    ("duplicate_r", "similarity to another run (r)", "duplicate_r", "above", "duplicate"),
    ("fd_mean", "mean framewise displacement (mm)", "max_mean_fd", "above", "motion"),
    ("fd_fraction", "share of volumes above fd_threshold", "max_fd_fraction", "above", "motion"),
    ("global_max_z", "largest global-signal deviation (robust z)", "global_z", "above",
     "global_signal"),
    ("tsnr", "median tSNR in the mask", "min_tsnr", "below", "tsnr"),
)  # fmt: skip


def decisions(table: pd.DataFrame, exclude: Sequence[str]) -> pd.Series:
    """Per run: ``excluded (runs sheet)``, ``excluded (QC)``, ``flagged`` or ``ok``."""
    excluded = excluded_runs(table, exclude)
    out = []
    for row in table.itertuples(index=False):
        if row.sheet_exclusion:
            out.append("excluded (runs sheet)")
        elif row.story in excluded.get(row.subject, {}):
            out.append("excluded (QC)")
        else:
            out.append("flagged" if row.failed else "ok")
    return pd.Series(out, index=table.index, dtype=str)


def headline(table: pd.DataFrame, exclude: Sequence[str], dataset: str = "") -> str:
    """The decision in one line: runs, flagged, excluded."""
    decided = decisions(table, exclude)
    qc_out = int((decided == "excluded (QC)").sum())
    flagged = int((table["failed"] != "").sum())
    sheet = int((decided == "excluded (runs sheet)").sum())
    rule = f"fmri.qc.exclude: {', '.join(exclude)}" if exclude else "flags only"
    where = f"{dataset}: " if dataset else ""
    return (
        f"{where}{len(table) - sheet} runs checked, {flagged} flagged, {qc_out} excluded by the "
        f"QC ({rule}); {sheet} excluded in the runs sheet"
    )


def plot_qc(
    table: pd.DataFrame,
    thresholds: Thresholds,
    exclude: Sequence[str],
    path: str | os.PathLike,
    dataset: str = "",
) -> None:
    """Every run on one figure: a panel per measure of :data:`PANELS`, runs in sheet order along
    x, the check's threshold dashed, flagged runs red and labelled ``sub story``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = table[table["sheet_exclusion"] == ""].reset_index(drop=True)
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(9, 1.9 * len(PANELS) + 0.8), sharex=True)
    x = np.arange(len(runs))
    for ax, (column, title, attr, side, check) in zip(axes, PANELS, strict=True):
        values = runs[column].to_numpy(dtype=np.float64)
        hit = runs["failed"].str.split(";").apply(lambda f, c=check: c in f).to_numpy()
        ax.set_title(title, fontsize=9, loc="left")
        if not np.isfinite(values).any():
            ax.text(0.5, 0.5, "not available", transform=ax.transAxes, ha="center", color="grey")
            continue
        ax.scatter(x[~hit], values[~hit], s=14, color="C0")
        ax.scatter(x[hit], values[hit], s=22, color="C3")
        for i in np.flatnonzero(hit & np.isfinite(values)):
            name = f"sub-{runs['subject'][i]} {runs['story'][i]}"
            ax.annotate(name, (x[i], values[i]), fontsize=7, color="C3", xytext=(3, 2),
                        textcoords="offset points")  # fmt: skip
        limit = getattr(thresholds, attr)
        if limit is not None:
            ax.axhline(limit, color="C3", ls="--", lw=0.8, label=f"flag {side} {limit:g}")
            ax.legend(loc="upper right", fontsize=7, frameon=False)
    names = [f"{s} {t}" for s, t in zip(runs["subject"], runs["story"], strict=True)]
    axes[-1].set_xticks(x, names, rotation=90, fontsize=6)
    fig.suptitle(headline(table, exclude, dataset), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    with atomic_path(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3g}"
    return html.escape(str(value))


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def qc_page(
    table: pd.DataFrame, thresholds: Thresholds, exclude: Sequence[str], dataset: str = ""
) -> str:
    """The QC page (HTML): the decision, the flagged and excluded runs with reasons, what was
    not available and why, then every run's measures."""
    table = table.assign(decision=decisions(table, exclude))
    keys = ["subject", "story", "run"]
    noted = table[(table["decision"] != "ok")]
    notes = noted.assign(
        reason=noted["reason"].where(noted["reason"] != "", noted["sheet_exclusion"])
    )
    missing = (
        table.loc[table["not_available"] != "", "not_available"].str.split("; ").explode()
        .value_counts().rename_axis("not available").reset_index(name="runs")
    )  # fmt: skip
    measures = ["isc", "isc_z", "other_story", "other_z", "duplicate_r", "fd_mean",
                "fd_fraction", "tsnr", "global_outliers", "decision"]  # fmt: skip
    parts = [
        "<html><head><meta charset='utf-8'><style>body{font-family:sans-serif;font-size:13px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
        "</style></head><body>",
        f"<h3>{html.escape(headline(table, exclude, dataset))}</h3>",
        "<h4>Flagged and excluded runs</h4>",
        _html_table(notes[[*keys, "decision", "failed", "reason"]]) if len(notes) else
        "<p>none</p>",
        "<h4>Not available</h4>",
        _html_table(missing) if len(missing) else "<p>every measure was available</p>",
        "<h4>Every run</h4>",
        _html_table(table[[*keys, *measures]]),
        f"<p>Thresholds (fmri.qc): {html.escape(str(vars(thresholds)))}</p></body></html>\n",
    ]  # fmt: skip
    return "".join(parts)
