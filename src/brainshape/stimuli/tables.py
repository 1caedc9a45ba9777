"""One story's words table (word, onset, offset, aligned) and the checks every reader and
writer shares: files that must exist, times that must be finite and in order, untimed words
that get times from their neighbours."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainshape.errors import BrainshapeError

# Onsets may step back by this much (seconds) before the order counts as broken: aligners
# round times, and a float sum such as onset + duration may land a hair before its neighbour.
ORDER_TOLERANCE = 1e-6

#: Columns of one story's words table, in order.
TABLE_COLUMNS = ("word", "onset", "offset", "aligned")


def config_default(key: str) -> Any:
    """The default of ``datasets.<name>.words.<key>`` in the config schema (the schema holds
    the defaults; the library does not restate them)."""
    from brainshape.config import CONFIG_SCHEMA, load_schema

    schema = load_schema(CONFIG_SCHEMA)
    return schema["$defs"]["dataset"]["properties"]["words"]["properties"][key]["default"]


def require_file(path: Path, what: str) -> None:
    """Raise unless ``path`` is a non-empty file; ``what`` names it in the message."""
    if not path.is_file():
        raise BrainshapeError(
            f"{what} {path} does not exist; check the dataset's words.path in the config "
            "(relative to bids_root) or create the file"
        )
    if path.stat().st_size == 0:
        raise BrainshapeError(
            f"{what} {path} is empty; an empty file stands in for data only while a study is "
            "planned: put the story's word timings in it"
        )


def make_table(words: list[str], onset, offset, aligned) -> pd.DataFrame:
    """One story's words table from its columns (times in seconds)."""
    return pd.DataFrame(
        {
            "word": pd.Series(words, dtype=str),
            "onset": np.asarray(onset, dtype=np.float64),
            "offset": np.asarray(offset, dtype=np.float64),
            "aligned": np.asarray(aligned, dtype=bool),
        }
    )


def check_times(
    table: pd.DataFrame, path: Path, fix: str, rows: np.ndarray | None = None
) -> pd.DataFrame:
    """Raise unless ``table`` has words with finite, well-ordered times; return it unchanged.

    ``fix`` ends each message: what the user should do about a bad file of this format.
    ``rows`` (positions) checks only those rows; messages still number words by their place
    in the whole table.
    """
    if len(table) == 0:
        raise BrainshapeError(f"{path} holds no words; {fix}")
    number = np.arange(len(table)) if rows is None else np.asarray(rows)
    words = table["word"].to_numpy()[number]
    onset = table["onset"].to_numpy(dtype=np.float64)[number]
    offset = table["offset"].to_numpy(dtype=np.float64)[number]

    def name(i: int) -> str:
        return f"word {number[i]} ({words[i]!r})"

    bad = np.flatnonzero(~(np.isfinite(onset) & np.isfinite(offset)))
    if bad.size:
        i = int(bad[0])
        raise BrainshapeError(
            f"{path}: {name(i)} has no valid time (onset {onset[i]}, offset {offset[i]}); {fix}"
        )
    bad = np.flatnonzero(offset < onset)
    if bad.size:
        i = int(bad[0])
        raise BrainshapeError(
            f"{path}: {name(i)} ends at {offset[i]:g} s, before it starts at {onset[i]:g} s; {fix}"
        )
    bad = np.flatnonzero(np.diff(onset) < -ORDER_TOLERANCE)
    if bad.size:
        i = int(bad[0]) + 1
        raise BrainshapeError(
            f"{path}: {name(i)} starts at {onset[i]:g} s, before {name(i - 1)} at "
            f"{onset[i - 1]:g} s; words must be in time order, {fix}"
        )
    return table


def check_writable(words: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The ``word``, ``onset``, ``offset`` columns of ``words`` after checks for writing."""
    missing = [c for c in ("word", "onset", "offset") if c not in words.columns]
    if missing:
        raise BrainshapeError(
            f"cannot write {path}: the words table lacks column(s) {', '.join(missing)}; "
            "it needs word, onset and offset (seconds)"
        )
    table = pd.DataFrame(
        {
            "word": [str(w) for w in words["word"]],
            "onset": pd.to_numeric(words["onset"], errors="coerce").to_numpy(np.float64),
            "offset": pd.to_numeric(words["offset"], errors="coerce").to_numpy(np.float64),
        }
    )
    if table.empty:
        raise BrainshapeError(f"cannot write {path}: the words table is empty")
    for i, word in enumerate(table["word"]):
        if not word.strip() or word != word.strip():
            raise BrainshapeError(
                f"cannot write {path}: word {i} ({word!r}) is empty or has leading/trailing "
                "whitespace; strip the words of the table"
            )
    return check_times(table, Path(path), "fix the times of the words table")


def check_tsv_cells(table: pd.DataFrame, path: Path) -> None:
    """Raise if a word holds a tab or line break, which a TSV cell cannot."""
    for i, word in enumerate(table["word"]):
        if "\t" in word or "\n" in word or "\r" in word:
            raise BrainshapeError(
                f"cannot write {path}: word {i} ({word!r}) holds a tab or line break, which "
                "a TSV cell cannot; clean the words table"
            )


def fill_untimed(table: pd.DataFrame, timed: np.ndarray) -> pd.DataFrame:
    """Onset and offset of the words not ``timed``, interpolated linearly by word position
    between the nearest timed words (before the first or after the last timed word: that
    word's times). ``table`` is changed in place and returned."""
    if not timed.all():
        position = np.arange(len(table))
        for col in ("onset", "offset"):
            known = table[col].to_numpy()[timed]
            table[col] = np.interp(position, position[timed], known)
    return table


def story_words(path: str | os.PathLike) -> list[str]:
    """The words of a story text file: its whitespace-separated tokens, in order."""
    path = Path(path)
    if not path.is_file():
        raise BrainshapeError(
            f"story text {path} does not exist; give the path of a UTF-8 text file of the story"
        )
    words = path.read_text(encoding="utf-8").split()
    if not words:
        raise BrainshapeError(f"story text {path} holds no words; write the story into it")
    return words
