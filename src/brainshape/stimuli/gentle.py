"""Gentle ``align.json``: words with the punctuation of the transcript they were aligned to."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainshape.errors import BrainshapeError
from brainshape.io import save_json
from brainshape.stimuli.tables import (
    check_times,
    check_writable,
    fill_untimed,
    make_table,
    require_file,
)

_GENTLE_FIX = "re-run Gentle on this story or fix the file"


def _strip_punctuation(word: str) -> str:
    """``word`` without leading/trailing non-alphanumeric characters ("Hello," -> Hello)."""
    start, end = 0, len(word)
    while start < end and not word[start].isalnum():
        start += 1
    while end > start and not word[end - 1].isalnum():
        end -= 1
    return word[start:end]


def _word_spans(transcript: str, starts: list[int], ends: list[int]) -> list[str]:
    """Transcript text of each word: its own characters plus the punctuation attached to it.

    A word runs from its start up to the next word's start. When whitespace separates a word
    from the one before, the word starts just after that whitespace instead, so an opening
    quote goes with the word it opens (``said, "Go`` -> ``said,`` and ``"Go``), not with
    the word before. Whitespace inside a span (a paragraph break) becomes one space.
    """
    spans = []
    for i, start in enumerate(starts):
        prev_end = ends[i - 1] if i > 0 else 0
        gap = transcript[prev_end:start]
        if i == 0 or any(ch.isspace() for ch in gap):
            cut = max((j for j, ch in enumerate(gap) if ch.isspace()), default=-1)
            start = prev_end + cut + 1
        spans.append(start)
    bounds = spans + [len(transcript)]
    return [" ".join(transcript[a:b].split()) for a, b in itertools.pairwise(bounds)]


def _gentle_int(entry: dict, key: str, i: int, path: Path, n_chars: int) -> int:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= n_chars:
        raise BrainshapeError(
            f"{path}: word {i} ({entry.get('word')!r}) has {key} {value!r}, not a character "
            f"position in the transcript (0-{n_chars}); {_GENTLE_FIX}"
        )
    return value


def _gentle_entries(path: Path) -> tuple[str, list[dict]]:
    """The transcript and the word entries (those found in the transcript) of align.json."""
    require_file(path, "Gentle alignment")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BrainshapeError(
            f"{path} is not valid JSON ({err}); give the align.json that Gentle wrote, or set "
            "words.format to the format of the file"
        ) from None
    if not isinstance(data, dict):
        raise BrainshapeError(
            f"{path} is not a Gentle alignment (a JSON object with 'transcript' and 'words'); "
            "give the align.json that Gentle wrote"
        )
    for key in ("transcript", "words"):
        if key not in data:
            raise BrainshapeError(
                f"{path} lacks the key '{key}'; a Gentle align.json needs 'transcript' and "
                f"'words', {_GENTLE_FIX}"
            )
    transcript, entries = data["transcript"], data["words"]
    if not isinstance(transcript, str) or not isinstance(entries, list):
        raise BrainshapeError(
            f"{path}: 'transcript' must be a string and 'words' a list; {_GENTLE_FIX}"
        )
    entries = [
        e
        for e in entries
        if not (isinstance(e, dict) and e.get("case") == "not-found-in-transcript")
    ]
    if not entries:
        raise BrainshapeError(f"{path} holds no words; {_GENTLE_FIX}")
    return transcript, entries


def _gentle_word(
    entry: Any, i: int, path: Path, n_chars: int
) -> tuple[int, int, tuple[float, float] | None]:
    """(start, end) transcript offsets of word ``i`` and its (onset, offset) in seconds, None
    where Gentle did not align it."""
    if not isinstance(entry, dict):
        raise BrainshapeError(f"{path}: word {i} is not a JSON object; {_GENTLE_FIX}")
    for key in ("startOffset", "endOffset", "case"):
        if key not in entry:
            raise BrainshapeError(
                f"{path}: word {i} ({entry.get('word')!r}) lacks '{key}'; every Gentle "
                f"word needs 'startOffset', 'endOffset' and 'case', {_GENTLE_FIX}"
            )
    start = _gentle_int(entry, "startOffset", i, path, n_chars)
    end = _gentle_int(entry, "endOffset", i, path, n_chars)
    if end < start:
        raise BrainshapeError(
            f"{path}: word {i} ({entry.get('word')!r}) has transcript offsets "
            f"{start}-{end} that overlap the word before or run backwards; {_GENTLE_FIX}"
        )
    if entry["case"] != "success":
        return start, end, None
    times = []
    for key in ("start", "end"):
        if key not in entry:
            raise BrainshapeError(
                f"{path}: word {i} ({entry.get('word')!r}) is aligned (case "
                f"'success') but lacks '{key}'; {_GENTLE_FIX}"
            )
        value = entry[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        times.append(float(value) if ok else math.nan)
    return start, end, (times[0], times[1])


def read_gentle(path: str | os.PathLike) -> pd.DataFrame:
    """Read a Gentle ``align.json``: one row per transcript word (columns word, onset, offset,
    aligned; times in seconds).

    ``word`` is the transcript text of the word with its attached punctuation (see
    :func:`_word_spans`). Words Gentle did not find in the audio keep their place; their
    onset and offset are interpolated linearly, by word position, between those of the
    nearest aligned words before and after (words before the first or after the last aligned
    word take that word's times), and ``aligned`` is False. Words Gentle heard but that are
    not in the transcript (``not-found-in-transcript``) are left out.
    """
    path = Path(path)
    transcript, entries = _gentle_entries(path)
    starts, ends, onset, offset, aligned = [], [], [], [], []
    for i, entry in enumerate(entries):
        start, end, times = _gentle_word(entry, i, path, len(transcript))
        if starts and start < ends[-1]:
            raise BrainshapeError(
                f"{path}: word {i} ({entry.get('word')!r}) has transcript offsets "
                f"{start}-{end} that overlap the word before or run backwards; {_GENTLE_FIX}"
            )
        starts.append(start)
        ends.append(end)
        onset.append(times[0] if times else math.nan)
        offset.append(times[1] if times else math.nan)
        aligned.append(times is not None)

    aligned_arr = np.asarray(aligned, dtype=bool)
    if not aligned_arr.any():
        raise BrainshapeError(
            f"{path}: none of its {len(entries)} words was aligned to the audio (no word has "
            "case 'success'); check that the audio and the transcript belong together and "
            "re-run Gentle"
        )
    words = _word_spans(transcript, starts, ends)
    words = [w if w else str(entries[i].get("word", "")) for i, w in enumerate(words)]
    table = make_table(words, onset, offset, aligned_arr)
    # Check the aligner's own times before they are spread over the words it missed.
    check_times(table, path, _GENTLE_FIX, rows=np.flatnonzero(aligned_arr))
    return check_times(fill_untimed(table, aligned_arr), path, _GENTLE_FIX)


def write_gentle(words: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``words`` (columns word, onset, offset in seconds) as a Gentle ``align.json``.

    The transcript is the words joined by single spaces; each Gentle word is the table word
    without leading/trailing punctuation (``alignedWord`` lower-cased), with its character
    offsets in the transcript, case ``success`` and its times.
    """
    path = Path(path)
    table = check_writable(words, path)
    entries, pieces, position = [], [], 0
    for word, onset, offset in zip(table["word"], table["onset"], table["offset"], strict=True):
        core = _strip_punctuation(word) or word  # a lone dash stays a word of its own
        start = position + word.index(core)
        entries.append(
            {
                "alignedWord": core.lower(),
                "case": "success",
                "end": float(offset),
                "endOffset": start + len(core),
                "start": float(onset),
                "startOffset": start,
                "word": core,
            }
        )
        pieces.append(word)
        position += len(word) + 1
    save_json(path, {"transcript": " ".join(pieces), "words": entries})
