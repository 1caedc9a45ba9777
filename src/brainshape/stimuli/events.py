"""BIDS ``events.tsv`` word rows: onset, duration and the word."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from brainshape.errors import BrainshapeError
from brainshape.io import atomic_path
from brainshape.stimuli.tables import (
    check_times,
    check_tsv_cells,
    check_writable,
    make_table,
    require_file,
)

_EVENTS_FIX = "fix the events file"


def _read_tsv(path: Path) -> pd.DataFrame:
    """A TSV file as a table of strings, cells verbatim.

    Parsed by hand rather than with pandas: BIDS cells are never quoted (a word such as
    ``"Hello,`` keeps its quote), words like ``NA`` or ``null`` must stay words, and a row
    with a cell too many must be an error, not a silent shift into the index.
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise BrainshapeError(
            f"{path} is not a readable tab-separated events file (it is not UTF-8 text); "
            f"{_EVENTS_FIX}"
        ) from None
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise BrainshapeError(
            f"{path} is not a readable tab-separated events file (it is empty); {_EVENTS_FIX}"
        )
    header = [cell.strip() for cell in numbered[0][1].split("\t")]
    rows = []
    for n, line in numbered[1:]:
        cells = line.split("\t")
        if len(cells) != len(header):
            raise BrainshapeError(
                f"{path} is not a readable tab-separated events file (line {n} has "
                f"{len(cells)} cells, the header {len(header)}); {_EVENTS_FIX}"
            )
        rows.append(cells)
    return pd.DataFrame(rows, columns=header, dtype=str)


def read_events(
    path: str | os.PathLike, word_column: str = "word", trial_type: str = "word"
) -> pd.DataFrame:
    """Read the words of a BIDS ``events.tsv`` (columns onset, duration in seconds, and
    ``word_column``).

    If the file has a ``trial_type`` column only rows whose trial_type equals ``trial_type``
    are words. offset = onset + duration; aligned is True. Cells are read verbatim (no
    quoting), so a word such as ``"Hello,`` keeps its quote.
    """
    path = Path(path)
    require_file(path, "events file")
    raw = _read_tsv(path)
    missing = [c for c in ("onset", "duration", word_column) if c not in raw.columns]
    if missing:
        raise BrainshapeError(
            f"{path} lacks the column(s) {', '.join(missing)} (columns present: "
            f"{', '.join(raw.columns)}); a word events file needs onset, duration and "
            f"{word_column}, or set the word column to the one that holds the words"
        )
    if "trial_type" in raw.columns and not raw.empty:
        rows = raw[raw["trial_type"] == trial_type]
        if rows.empty:
            kinds = ", ".join(sorted(set(raw["trial_type"]))) or "none"
            raise BrainshapeError(
                f"{path} holds no words: no row has trial_type {trial_type!r} (trial types "
                f"present: {kinds}); set the word trial_type to the one that marks words"
            )
        raw = rows
    raw = raw.reset_index(drop=True)
    words = raw[word_column].str.strip().tolist()
    for i, word in enumerate(words):
        if word in ("", "n/a"):
            raise BrainshapeError(
                f"{path}: word {i} (onset {raw['onset'][i]}) has no text in column "
                f"{word_column!r}; {_EVENTS_FIX}"
            )
    # BIDS writes a missing value as n/a: it becomes NaN and fails the time check.
    onset = pd.to_numeric(raw["onset"], errors="coerce").to_numpy(np.float64)
    duration = pd.to_numeric(raw["duration"], errors="coerce").to_numpy(np.float64)
    table = make_table(words, onset, onset + duration, [True] * len(words))
    return check_times(table, path, _EVENTS_FIX)


def write_events(words: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``words`` (word, onset, offset in seconds) as a BIDS events.tsv (onset, duration,
    trial_type = ``word``, word)."""
    path = Path(path)
    table = check_writable(words, path)
    check_tsv_cells(table, path)
    events = pd.DataFrame(
        {
            "onset": table["onset"],
            # Rounded to 1e-9 s so 0.19 is not written as 0.18999999999999995.
            "duration": (table["offset"] - table["onset"]).round(9),
            "trial_type": "word",
            "word": table["word"],
        }
    )
    with atomic_path(path, suffix=".tsv") as tmp:
        events.to_csv(tmp, sep="\t", index=False, quoting=csv.QUOTE_NONE, lineterminator="\n")
