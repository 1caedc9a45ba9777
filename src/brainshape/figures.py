"""What every figure shares: a headless matplotlib, the line that says a figure's n, and the
atomic PNG writer. Plotting functions take data and return a figure; scripts save it here."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping
from pathlib import Path

from brainshape.io import atomic_path

#: Resolution of every saved figure.
DPI = 110


def pyplot():
    """matplotlib.pyplot on the Agg backend (jobs have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def counts_text(counts: Mapping | None, targets: str = "") -> str:
    """'n = S subjects, N stories (a-b per subject)[, targets]' from ``counts`` (``subjects``,
    ``stories``, ``stories_per_subject``: the figure params of the rules); '' without."""
    if not counts:
        return ""
    per = counts.get("stories_per_subject") or ""
    text = f"n = {counts['subjects']} subjects"
    if counts.get("stories"):
        text += f", {counts['stories']} stories" + (f" ({per} per subject)" if per else "")
    return text + (f", {targets}" if targets else "")


def footnote(fig, text: str, width: int = 160) -> None:
    """``text`` wrapped under the figure, small (the figure's n and what its bands are)."""
    fig.text(0.01, 0.005, textwrap.fill(text, width), fontsize=7, va="bottom", ha="left")


def save(fig, path: str | os.PathLike) -> None:
    """Write ``fig`` as a PNG atomically and close it."""
    plt = pyplot()
    with atomic_path(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)


def finish(fig, note: str = "", *, top: float = 1.0) -> None:
    """Lay ``fig`` out tightly, leaving room at the bottom for ``note`` (:func:`footnote`)."""
    lines = len(textwrap.wrap(note, 160)) if note else 0
    fig.tight_layout(rect=(0, (0.05 + 0.13 * lines) / fig.get_figheight(), 1, top))
    if note:
        footnote(fig, note)
