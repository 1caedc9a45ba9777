"""Annotations tables (Alice, ds002322 ``code/annotations.tsv``): one row per word with its onset
and offset in seconds from the start of the story's audio; words the aligner did not time
(clitics such as ``n't``) and words whose offset precedes their onset get times from their
neighbours."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from brainshape.errors import BrainshapeError
from brainshape.io import atomic_path
from brainshape.stimuli.nonspeech import is_nonspeech
from brainshape.stimuli.tables import (
    ORDER_TOLERANCE,
    check_times,
    check_tsv_cells,
    check_writable,
    fill_untimed,
    make_table,
    require_file,
)

log = logging.getLogger("brainshape.stimuli")

#: Columns of an annotations table (Alice, ds002322 ``code/annotations.tsv``): word, onset and
#: offset in seconds from the start of the story's audio file.
ANNOTATION_COLUMNS = ("Words", "Word Onset", "Word Offset")

# Cells of an annotations table that mean "no time": such a word was not aligned.
_UNTIMED = frozenset({"", "n/a", "na", "nan", "none", "null"})
_ANNOTATIONS_FIX = "fix the annotations file"


def _read_raw(path: Path, nonspeech: Iterable[str] | None) -> pd.DataFrame:
    """The table's cells as strings, its non-speech rows dropped."""
    require_file(path, "annotations file")
    try:
        raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise BrainshapeError(
            f"{path} is not a readable tab-separated annotations file ({error}); {_ANNOTATIONS_FIX}"
        ) from None
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in ANNOTATION_COLUMNS if c not in raw.columns]
    if missing:
        raise BrainshapeError(
            f"{path} lacks the column(s) {', '.join(missing)} (columns present: "
            f"{', '.join(raw.columns)}); an annotations file needs {', '.join(ANNOTATION_COLUMNS)}"
        )
    words = raw["Words"].str.strip()
    return raw[~is_nonspeech(words, nonspeech)].reset_index(drop=True)


def _times(raw: pd.DataFrame, words: list[str], path: Path) -> dict[str, np.ndarray]:
    """Onset and offset in seconds, NaN where the cell says the word is untimed."""
    times = {}
    for col, name in (("onset", "Word Onset"), ("offset", "Word Offset")):
        cells = raw[name].str.strip()
        untimed = cells.str.lower().isin(_UNTIMED).to_numpy()
        values = pd.to_numeric(cells.where(~untimed), errors="coerce").to_numpy(
            np.float64, copy=True
        )
        bad = np.flatnonzero(~untimed & ~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            raise BrainshapeError(
                f"{path}: word {i} ({words[i]!r}) has {name} {raw[name][i]!r}, not a number of "
                f"seconds (leave the cell empty or n/a for an untimed word); {_ANNOTATIONS_FIX}"
            )
        times[col] = values
    return times


def repair_backwards(
    words: list[str], onset: np.ndarray, offset: np.ndarray, timed: np.ndarray, path: Path
) -> np.ndarray:
    """Words whose offset precedes their onset (Alice's ``suddenly``, data row 102: 53.1846 ->
    52.4036 s, the offset a copy of the word before's onset): a word whose onset fits between
    its neighbours' keeps it and ends where the next timed word starts (or, the last word, at
    its onset); any other becomes untimed. ``onset``, ``offset`` and ``timed`` are changed in
    place; returns which words were repaired. Each repair is logged as a warning."""
    repaired = np.zeros(len(words), dtype=bool)
    for i in np.flatnonzero(timed & (offset < onset)):
        before = np.flatnonzero(timed[:i])
        after = np.flatnonzero(timed & (offset >= onset) & (np.arange(len(words)) > i))
        fits = (not before.size or onset[before[-1]] <= onset[i] + ORDER_TOLERANCE) and (
            not after.size or onset[i] <= onset[after[0]] + ORDER_TOLERANCE
        )
        what = f"{path}: word {i} ({words[i]!r}) ends at {offset[i]:g} s, before it starts at "
        what += f"{onset[i]:g} s"
        if fits:
            offset[i] = onset[after[0]] if after.size else onset[i]
            where = "where the next word starts" if after.size else "its onset (the last word)"
            log.warning(
                "%s; it keeps its onset and ends at %g s, %s; marked not aligned in the words "
                "table",
                what,
                offset[i],
                where,
            )
        else:
            onset[i] = offset[i] = np.nan
            timed[i] = False
            log.warning(
                "%s, and its onset does not fit between its neighbours; its times are "
                "interpolated from them and it is marked not aligned in the words table",
                what,
            )
        repaired[i] = True
    return repaired


def read_annotations(
    path: str | os.PathLike, nonspeech: Iterable[str] | None = None
) -> pd.DataFrame:
    """Read an annotations table: a TSV with columns ``Words``, ``Word Onset``, ``Word Offset``
    (seconds from the start of the story's audio; other columns are ignored).

    A word whose onset or offset cell is empty or ``n/a`` was not aligned (Alice's clitics such
    as ``n't``): it keeps its place, gets times interpolated linearly by word position between
    its timed neighbours, and ``aligned`` False. A word whose offset precedes its onset is
    repaired (:func:`repair_backwards`) and ``aligned`` False too. Non-speech rows
    (:func:`~brainshape.stimuli.is_nonspeech`) are dropped.
    """
    path = Path(path)
    raw = _read_raw(path, nonspeech)
    words = raw["Words"].str.strip().tolist()
    if not words:
        raise BrainshapeError(f"{path} holds no words; {_ANNOTATIONS_FIX}")
    times = _times(raw, words, path)
    onset, offset = times["onset"], times["offset"]
    timed = np.isfinite(onset) & np.isfinite(offset)
    repaired = repair_backwards(words, onset, offset, timed, path)
    if not timed.any():
        raise BrainshapeError(
            f"{path}: none of its {len(words)} words has both an onset and an offset; "
            f"{_ANNOTATIONS_FIX}"
        )
    table = make_table(words, onset, offset, timed & ~repaired)
    check_times(table, path, _ANNOTATIONS_FIX, rows=np.flatnonzero(timed))
    return check_times(fill_untimed(table, timed), path, _ANNOTATIONS_FIX)


def write_annotations(words: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``words`` (word, onset, offset in seconds; optional ``aligned``) as an annotations
    table; the times of words with ``aligned`` False are left empty (untimed)."""
    path = Path(path)
    aligned = words["aligned"].to_numpy(bool) if "aligned" in words else np.ones(len(words), bool)
    if not aligned.any():
        raise BrainshapeError(f"cannot write {path}: no word of the table is aligned (timed)")
    # Untimed words are checked at the times a reader will give them.
    times = words[["onset", "offset"]].apply(pd.to_numeric, errors="coerce").astype(np.float64)
    table = check_writable(fill_untimed(words.assign(**times), aligned), path)
    check_tsv_cells(table, path)
    out = pd.DataFrame(
        {
            "Words": table["word"],
            "Word Onset": table["onset"].round(9).astype(object).where(aligned, ""),
            "Word Offset": table["offset"].round(9).astype(object).where(aligned, ""),
        }
    )
    with atomic_path(path, suffix=".tsv") as tmp:
        out.to_csv(tmp, sep="\t", index=False, quoting=csv.QUOTE_NONE, lineterminator="\n")
