"""A dataset's words table: every story's word-timing file read in its format, its non-speech
labels dropped, its transcript aligned and its case set, stacked into one table; and the time
every later stage stamps a word with."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from brainshape.errors import BrainshapeError
from brainshape.io import save_parquet
from brainshape.stimuli.annotations import read_annotations
from brainshape.stimuli.events import read_events
from brainshape.stimuli.gentle import read_gentle
from brainshape.stimuli.nonspeech import drop_nonspeech
from brainshape.stimuli.tables import TABLE_COLUMNS, config_default
from brainshape.stimuli.textgrid import read_textgrid
from brainshape.stimuli.transcripts import (
    align_transcript,
    all_capitals,
    apply_case,
    read_transcript,
)

log = logging.getLogger("brainshape.stimuli")

FORMATS = ("gentle", "textgrid", "events", "annotations")

#: Columns of the words table, in order (``words.parquet``: docs/outputs.md).
WORDS_TABLE_COLUMNS = ("story", "word_index", *TABLE_COLUMNS)

_READERS = {
    "gentle": (read_gentle, ()),
    "textgrid": (read_textgrid, ("tier", "nonspeech")),
    "events": (read_events, ("word_column", "trial_type")),
    "annotations": (read_annotations, ("nonspeech",)),
}


def read_words(path: str | os.PathLike, fmt: str, **kw: Any) -> pd.DataFrame:
    """Read a word-timing file of format ``fmt`` (gentle, textgrid, events or annotations);
    ``kw`` are the options of that reader (textgrid: ``tier``; events: ``word_column``,
    ``trial_type``). Every format takes ``nonspeech``: labels dropped as not words
    (:func:`~brainshape.stimuli.is_nonspeech`; default
    :func:`~brainshape.stimuli.nonspeech_default`)."""
    if fmt not in _READERS:
        raise BrainshapeError(
            f"unknown word-timing format {fmt!r}; words.format must be one of {', '.join(FORMATS)}"
        )
    reader, options = _READERS[fmt]
    allowed = options if "nonspeech" in options else (*options, "nonspeech")
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise BrainshapeError(
            f"word-timing format {fmt!r} takes no option {', '.join(unknown)} (options: "
            f"{', '.join(allowed)}); drop it from the call"
        )
    if "nonspeech" in options:
        return reader(path, **kw)
    nonspeech = kw.pop("nonspeech", None)
    return drop_nonspeech(reader(path, **kw), path, nonspeech)


def read_story(
    source: Mapping[str, Any], *, story: str = "", case: str | None = None, **kw: Any
) -> pd.DataFrame:
    """One story's words as the model will read them: the word-timing file
    ``source["path"]`` of format ``source["format"]`` (``source["tier"]`` for a TextGrid;
    ``kw`` as in :func:`read_words`), aligned to ``source["transcript"]`` where one is given
    (:func:`~brainshape.stimuli.align_transcript`), in the case ``case`` asks for
    (:func:`~brainshape.stimuli.apply_case`; default the config schema's ``words.case``).
    What was done is logged: words not aligned, transcript words not matched, timed words
    left out, case changes."""
    case = config_default("case") if case is None else case
    path, fmt = source["path"], source["format"]
    if fmt == "textgrid" and source.get("tier") is not None:
        kw = {**kw, "tier": source["tier"]}
    table = read_words(path, fmt, **kw)
    transcript = source.get("transcript")
    if transcript:
        alignment = align_transcript(table, read_transcript(transcript), transcript, story)
        level = logging.WARNING if alignment.unmatched or alignment.extra else logging.INFO
        log.log(level, "story %s, transcript %s: %s", story, transcript, alignment.summary(table))
        table = alignment.table
    else:
        missing = int((~table["aligned"]).sum())
        if missing:
            log.info(
                "story %s: %d of %d words of %s have times interpolated from their "
                "neighbours (aligned false)",
                story,
                missing,
                len(table),
                path,
            )
    words = apply_case(table["word"].tolist(), case)
    if words != table["word"].tolist():
        log.info("story %s: words lower-cased (words.case: %s)", story, case)
    elif all_capitals(words):
        log.warning(
            "story %s: every word of %s is in capitals, and a language model reads them so; "
            "set words.case to lower or auto, or give the story's transcript "
            "(words.transcript)",
            story,
            path,
        )
    return table.assign(word=words)


def words_table(
    sources: Mapping[str, str | os.PathLike | Mapping[str, Any]],
    fmt: str | None = None,
    **kw: Any,
) -> pd.DataFrame:
    """The words table of a dataset: every story read by :func:`read_story`, stacked.

    ``sources`` maps story -> file (all of format ``fmt``), or story -> ``{"path", "format",
    "tier", "transcript"}`` where stories differ (a runs sheet's word timings; ``tier``
    applies to TextGrids only, ``transcript`` is optional). ``kw``: ``case`` and the options
    of :func:`read_words` (``nonspeech``, ...).
    Returns columns story (str), word_index (int64, 0-based within the story), word (str),
    onset, offset (float64, seconds on the word-timing file's clock) and aligned (bool), in
    the order of ``sources`` then word order.
    """
    if not sources:
        raise BrainshapeError("no stories to read word timings for; list the dataset's stories")
    tables = {}
    for story, source in sources.items():
        if not isinstance(source, Mapping):
            source = {"path": source, "format": fmt}
        tables[story] = read_story(source, story=str(story), **kw)
    return stack_words(tables)


def stack_words(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The words table of a dataset from per-story tables (``word``, ``onset``, ``offset``,
    ``aligned`` in word order), in the order of ``tables``; see :func:`words_table`."""
    parts = []
    for story, table in tables.items():
        table = table.copy()
        if "aligned" not in table.columns:
            table["aligned"] = True
        table.insert(0, "word_index", np.arange(len(table), dtype=np.int64))
        table.insert(0, "story", str(story))
        parts.append(table)
    out = pd.concat(parts, ignore_index=True)
    return out.astype(
        {
            "story": str,
            "word_index": np.int64,
            "word": str,
            "onset": np.float64,
            "offset": np.float64,
            "aligned": bool,
        }
    )[list(WORDS_TABLE_COLUMNS)]


def write_words_table(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write the words table (:func:`words_table`) to ``path`` (parquet), atomically."""
    save_parquet(path, table[list(WORDS_TABLE_COLUMNS)])


def read_words_table(path: str | os.PathLike) -> pd.DataFrame:
    """The words table at ``path``, as :func:`write_words_table` wrote it; a file without its
    columns is refused, naming the file."""
    table = pd.read_parquet(path)
    missing = [c for c in WORDS_TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise BrainshapeError(
            f"{path}: not a words table (no column(s) {', '.join(missing)}); delete it and "
            "rerun rule words"
        )
    return table


# --- times -------------------------------------------------------------------------------------

_TIME_COLUMNS = ("story", "word_index", "onset", "offset")


def word_times(words: pd.DataFrame) -> dict[str, np.ndarray]:
    """Midpoint of every word in seconds, per story, in ``word_index`` order.

    ``words`` is a words table (:func:`words_table`). The middle of the word is the time its
    features are stamped with in the encoding and shape stages (and in the demo's planted
    signal): its hidden state reflects the whole word having been heard.
    """
    missing = [c for c in _TIME_COLUMNS if c not in words.columns]
    if missing:
        raise BrainshapeError(f"The words table lacks column(s) {missing}; rerun the words stage.")
    times = {}
    for story, table in words.groupby("story", sort=False):
        table = table.sort_values("word_index")
        if not np.array_equal(table["word_index"].to_numpy(), np.arange(len(table))):
            raise BrainshapeError(
                f"Words table, story {story!r}: word_index must run 0, 1, ..., n_words - 1; "
                "rerun the words stage."
            )
        onset = table["onset"].to_numpy(dtype=np.float64)
        offset = table["offset"].to_numpy(dtype=np.float64)
        if not (np.all(np.isfinite(onset)) and np.all(np.isfinite(offset))):
            raise BrainshapeError(
                f"Words table, story {story!r}: onset or offset has NaN values; rerun the "
                "words stage (unaligned words must get interpolated times)."
            )
        times[str(story)] = (onset + offset) / 2
    return times
