"""Word timings of the stories: Gentle, Praat TextGrid, BIDS events or annotations tables into one
words table.

Every reader returns a table with one row per word, in story order:

- ``word`` (str): the word as the language model should read it, attached punctuation kept
  (``said,``, ``"Hello``);
- ``onset``, ``offset`` (float64): seconds from the start of the story's fMRI run;
- ``aligned`` (bool): False where the aligner gave the word no time and its times were
  interpolated from its neighbours.

:func:`words_table` stacks the tables of many stories into the words table of a dataset
(columns ``story``, ``word_index``, ``word``, ``onset``, ``offset``, ``aligned``);
:func:`word_times` gives the time every later stage stamps a word with, its midpoint. The writers
(:func:`write_gentle`, :func:`write_textgrid`, :func:`write_events`) produce files that the
readers give back word for word and time for time; the demo dataset is written with them.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainshape.errors import BrainshapeError
from brainshape.io import atomic_path, save_json, save_parquet, save_text

FORMATS = ("gentle", "textgrid", "events", "annotations")

#: Interval labels of a TextGrid that mark silence rather than a word.
SILENCE_LABELS = frozenset({"", "sp", "sil", "<sil>", "SIL", "{SL}"})

# Onsets may step back by this much (seconds) before the order counts as broken: aligners
# round times, and a float sum such as onset + duration may land a hair before its neighbour.
_ORDER_TOLERANCE = 1e-6

_TABLE_COLUMNS = ("word", "onset", "offset", "aligned")
#: Columns of the words table, in order (``words.parquet``: docs/outputs.md).
WORDS_TABLE_COLUMNS = ("story", "word_index", *_TABLE_COLUMNS)


# --- shared checks -----------------------------------------------------------------------------


def _require_file(path: Path, what: str) -> None:
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


def _table(words: list[str], onset, offset, aligned) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "word": pd.Series(words, dtype=str),
            "onset": np.asarray(onset, dtype=np.float64),
            "offset": np.asarray(offset, dtype=np.float64),
            "aligned": np.asarray(aligned, dtype=bool),
        }
    )


def _check_times(
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
    bad = np.flatnonzero(np.diff(onset) < -_ORDER_TOLERANCE)
    if bad.size:
        i = int(bad[0]) + 1
        raise BrainshapeError(
            f"{path}: {name(i)} starts at {onset[i]:g} s, before {name(i - 1)} at "
            f"{onset[i - 1]:g} s; words must be in time order, {fix}"
        )
    return table


def _check_writable(words: pd.DataFrame, path: Path) -> pd.DataFrame:
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
    return _check_times(table, Path(path), "fix the times of the words table")


# --- stories -----------------------------------------------------------------------------------


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


# --- Gentle ------------------------------------------------------------------------------------

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
    _require_file(path, "Gentle alignment")
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
    table = _table(words, onset, offset, aligned_arr)
    # Check the aligner's own times before they are spread over the words it missed.
    _check_times(table, path, _GENTLE_FIX, rows=np.flatnonzero(aligned_arr))
    if not aligned_arr.all():
        position = np.arange(len(table))
        for col in ("onset", "offset"):
            known = table[col].to_numpy()[aligned_arr]
            table[col] = np.interp(position, position[aligned_arr], known)
    return _check_times(table, path, _GENTLE_FIX)


def write_gentle(words: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``words`` (columns word, onset, offset in seconds) as a Gentle ``align.json``.

    The transcript is the words joined by single spaces; each Gentle word is the table word
    without leading/trailing punctuation (``alignedWord`` lower-cased), with its character
    offsets in the transcript, case ``success`` and its times.
    """
    path = Path(path)
    table = _check_writable(words, path)
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


# --- Praat TextGrid ----------------------------------------------------------------------------

_TEXTGRID_FIX = "save it from Praat as a text TextGrid or fix the file"

# Praat's text formats are free-form: values are numbers, "strings" (with "" for a quote) and
# <flags>; labels such as `xmin =`, `item [1]:` and `! comments` are decoration. One tokenizer
# therefore reads the long and the short format alike.
_TOKEN = re.compile(
    r'"(?P<string>(?:[^"]|"")*)"'
    r"|(?P<skip>\[[^\]\n]*\]|![^\n]*|[A-Za-z_][A-Za-z_?]*)"
    r"|(?P<flag><[a-z]+>)"
    r"|(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<space>\s+|[=:])"
)
_HEADER = re.compile(
    r'\A\s*File\s+type\s*=\s*"ooTextFile(?: short)?"\s*Object\s+class\s*=\s*"TextGrid"'
)


class _Tokens:
    """Values of a Praat text file in order, with typed reads that fail with a clear error."""

    def __init__(self, text: str, path: Path, start: int = 0) -> None:
        self.path = path
        self.values: list[tuple[str, Any]] = []
        pos = start
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                line = text.count("\n", 0, pos) + 1
                raise BrainshapeError(
                    f"{path} is not a valid TextGrid: unexpected {text[pos:].split()[0]!r} on "
                    f"line {line}; {_TEXTGRID_FIX}"
                )
            kind = match.lastgroup
            if kind == "string":
                self.values.append(("string", match.group("string").replace('""', '"')))
            elif kind == "number":
                self.values.append(("number", float(match.group("number"))))
            elif kind == "flag":
                self.values.append(("flag", match.group("flag")))
            pos = match.end()
        self.pos = 0

    def _next(self, kind: str, what: str) -> Any:
        if self.pos >= len(self.values):
            raise BrainshapeError(
                f"{self.path} is not a valid TextGrid: it ends where {what} was expected; "
                f"{_TEXTGRID_FIX}"
            )
        got, value = self.values[self.pos]
        if got != kind:
            raise BrainshapeError(
                f"{self.path} is not a valid TextGrid: found {value!r} where {what} was "
                f"expected; {_TEXTGRID_FIX}"
            )
        self.pos += 1
        return value

    def number(self, what: str) -> float:
        return self._next("number", what)

    def count(self, what: str) -> int:
        value = self.number(what)
        if value != int(value) or value < 0:
            raise BrainshapeError(
                f"{self.path} is not a valid TextGrid: {what} is {value:g}, not a count; "
                f"{_TEXTGRID_FIX}"
            )
        return int(value)

    def string(self, what: str) -> str:
        return self._next("string", what)


def _decode_text(path: Path) -> str:
    raw = path.read_bytes()
    # Praat writes UTF-16 (with a byte-order mark) when a label needs it, else ASCII/UTF-8.
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BrainshapeError(
            f"{path} is not a valid TextGrid: it is neither UTF-8 nor UTF-16 text (binary "
            f"TextGrids are not read); {_TEXTGRID_FIX}"
        ) from None


def _textgrid_tiers(path: Path) -> dict[str, tuple[str, list[tuple[float, float, str]]]]:
    """Tier name -> (class, items) of a TextGrid; items are (xmin, xmax, text) of intervals."""
    tiers: dict[str, tuple[str, list[tuple[float, float, str]]]] = {}
    for name, kind, items in _textgrid_tier_list(path):
        tiers.setdefault(name, (kind, items))
    return tiers


def _textgrid_tier_list(path: Path) -> list[tuple[str, str, list[tuple[float, float, str]]]]:
    """(name, class, items) of every tier of a TextGrid, in file order (names may repeat)."""
    text = _decode_text(path)
    header = _HEADER.match(text)
    if header is None:
        raise BrainshapeError(
            f'{path} is not a TextGrid: it does not start with File type = "ooTextFile" and '
            f'Object class = "TextGrid"; {_TEXTGRID_FIX}'
        )
    tokens = _Tokens(text, path, start=header.end())
    tokens.number("the grid's xmin")
    tokens.number("the grid's xmax")
    if tokens._next("flag", "<exists>") != "<exists>":
        return []
    tiers: list[tuple[str, str, list[tuple[float, float, str]]]] = []
    for t in range(tokens.count("the number of tiers")):
        kind = tokens.string(f"the class of tier {t + 1}")
        name = tokens.string(f"the name of tier {t + 1}")
        tokens.number(f"the xmin of tier {name!r}")
        tokens.number(f"the xmax of tier {name!r}")
        items = []
        for k in range(tokens.count(f"the size of tier {name!r}")):
            where = f"item {k + 1} of tier {name!r}"
            if kind == "IntervalTier":
                xmin = tokens.number(f"the xmin of {where}")
                xmax = tokens.number(f"the xmax of {where}")
                items.append((xmin, xmax, tokens.string(f"the text of {where}")))
            elif kind == "TextTier":
                time = tokens.number(f"the time of {where}")
                items.append((time, time, tokens.string(f"the mark of {where}")))
            else:
                raise BrainshapeError(
                    f"{path} is not a valid TextGrid: tier {name!r} has unknown class "
                    f"{kind!r}; {_TEXTGRID_FIX}"
                )
        tiers.append((name, kind, items))
    return tiers


def read_textgrid(
    path: str | os.PathLike, tier: str | int = "words", nonspeech: Iterable[str] | None = None
) -> pd.DataFrame:
    """Read the word intervals of tier ``tier`` of a Praat TextGrid (long or short text format).

    ``tier`` is the tier's name, or its position counted from 1 (an int, or a string of digits:
    ``"2"`` is the second tier). One row per interval whose label is not empty or non-speech
    (:func:`is_nonspeech` with ``nonspeech``; by default the LeBel markers and silence
    labels of :func:`nonspeech_default`): word = label, onset/offset = interval bounds in
    seconds, aligned True.
    """
    path = Path(path)
    _require_file(path, "TextGrid")
    tier, kind, items = _pick_tier(_textgrid_tier_list(path), tier, path)
    if kind != "IntervalTier":
        raise BrainshapeError(
            f"{path}: tier {tier!r} is a {kind}, not an IntervalTier of words; set words.tier "
            "to the tier of word intervals"
        )
    skip = _nonspeech_set(nonspeech)
    kept = [(a, b, label.strip()) for a, b, label in items if _normal(label) not in skip]
    table = _table(
        [w for *_, w in kept], [a for a, *_ in kept], [b for _, b, _ in kept], [True] * len(kept)
    )
    return _check_times(table, path, _TEXTGRID_FIX)


def _praat_string(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def write_textgrid(words: pd.DataFrame, path: str | os.PathLike, duration: float) -> None:
    """Write ``words`` (word, onset, offset in seconds) as a long-format TextGrid.

    One IntervalTier ``words`` spans 0 to ``duration`` s: an interval per word, and empty
    (silence) intervals filling every gap, since a tier must cover its whole time range.
    Words may not overlap and must last longer than 0 s (Praat needs xmin < xmax).
    """
    path = Path(path)
    table = _check_writable(words, path)
    duration = float(duration)
    onset, offset = table["onset"].to_numpy(), table["offset"].to_numpy()
    fix = "fix the times of the words table"
    bad = np.flatnonzero(offset <= onset)
    if bad.size:
        i = int(bad[0])
        raise BrainshapeError(
            f"cannot write {path}: word {i} ({table['word'][i]!r}) lasts 0 s; a TextGrid "
            f"interval needs a positive length, {fix}"
        )
    bad = np.flatnonzero(offset[:-1] > onset[1:])
    if bad.size:
        i = int(bad[0])
        raise BrainshapeError(
            f"cannot write {path}: word {i} ({table['word'][i]!r}) ends at {offset[i]:g} s, "
            f"after the next word starts at {onset[i + 1]:g} s; TextGrid intervals cannot "
            f"overlap, {fix}"
        )
    if onset[0] < 0 or not math.isfinite(duration) or duration < offset[-1]:
        raise BrainshapeError(
            f"cannot write {path}: the words span {onset[0]:g}-{offset[-1]:g} s, outside the "
            f"duration 0-{duration:g} s; pass the length of the audio as duration"
        )
    intervals: list[tuple[float, float, str]] = []
    t = 0.0
    for word, a, b in zip(table["word"], onset, offset, strict=True):
        if a > t:
            intervals.append((t, float(a), ""))
        intervals.append((float(a), float(b), word))
        t = float(b)
    if duration > t:
        intervals.append((t, duration, ""))

    write_textgrid_tiers(path, [("words", intervals)], duration)


# --- BIDS events -------------------------------------------------------------------------------

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
    _require_file(path, "events file")
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
    table = _table(words, onset, onset + duration, [True] * len(words))
    return _check_times(table, path, _EVENTS_FIX)


def write_events(words: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``words`` (word, onset, offset in seconds) as a BIDS events.tsv (onset, duration,
    trial_type = ``word``, word)."""
    path = Path(path)
    table = _check_writable(words, path)
    for i, word in enumerate(table["word"]):
        if "\t" in word or "\n" in word or "\r" in word:
            raise BrainshapeError(
                f"cannot write {path}: word {i} ({word!r}) holds a tab or line break, which "
                "a TSV cell cannot; clean the words table"
            )
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


# --- published datasets: non-speech labels, tiers by position, Alice's annotations -----------

#: Columns of an annotations table (Alice, ds002322 ``code/annotations.tsv``): word, onset and
#: offset in seconds from the start of the story's audio file.
ANNOTATION_COLUMNS = ("Words", "Word Onset", "Word Offset")

# Cells of an annotations table that mean "no time": such a word was not aligned.
_UNTIMED = frozenset({"", "n/a", "na", "nan", "none", "null"})
_ANNOTATIONS_FIX = "fix the annotations file"


def nonspeech_default() -> tuple[str, ...]:
    """The default non-speech labels: ``datasets.<name>.words.nonspeech`` of the config schema
    (the LeBel markers ``sentence_start``, ``sentence_end``, ``br``, ``lg``, ``ls``, ``ns``,
    ``sp`` and the silence labels ``sil``, ``<sil>``, ``{SL}``)."""
    from brainshape.config import CONFIG_SCHEMA, load_yaml

    schema = load_yaml(CONFIG_SCHEMA, "schema")
    words = schema["$defs"]["dataset"]["properties"]["words"]["properties"]
    return tuple(words["nonspeech"]["default"])


def _normal(label: str) -> str:
    """A label as non-speech labels are compared: stripped, lower-cased, without ``{}``."""
    return str(label).strip().lower().strip("{}").strip()


def _nonspeech_set(nonspeech: Iterable[str] | None) -> frozenset[str]:
    labels = nonspeech_default() if nonspeech is None else nonspeech
    if isinstance(labels, str):
        raise BrainshapeError(
            f"non-speech labels must be a list of labels, got the string {labels!r}; write "
            "words.nonspeech as a YAML list"
        )
    return frozenset(_normal(label) for label in labels) | {""}


def is_nonspeech(labels: Iterable[str], nonspeech: Iterable[str] | None = None) -> np.ndarray:
    """Which of ``labels`` are not words: empty, or in ``nonspeech`` (default
    :func:`nonspeech_default`) once both are stripped, lower-cased and freed of ``{}`` (so
    ``{BR}``, ``br`` and ``Br`` are one marker). Boolean array, one entry per label."""
    skip = _nonspeech_set(nonspeech)
    return np.array([_normal(label) in skip for label in labels], dtype=bool)


def drop_nonspeech(
    table: pd.DataFrame, path: str | os.PathLike, nonspeech: Iterable[str] | None = None
) -> pd.DataFrame:
    """``table`` (a words table read from ``path``) without its non-speech rows."""
    keep = ~is_nonspeech(table["word"], nonspeech)
    if not keep.any():
        raise BrainshapeError(
            f"{path} holds no words: every label is non-speech (words.nonspeech lists "
            f"{', '.join(sorted(_nonspeech_set(nonspeech) - {''}))}); check the file, the tier "
            "and words.nonspeech"
        )
    return table[keep].reset_index(drop=True)


def _pick_tier(tiers: Sequence[tuple[str, str, list]], tier: str | int, path: Path) -> tuple:
    """The (name, class, items) of ``tier``: a name, or a position counted from 1."""
    position = tier if isinstance(tier, int) else int(tier) if str(tier).isdigit() else None
    present = ", ".join(f"{i} {name!r}" for i, (name, _, _) in enumerate(tiers, 1)) or "none"
    if position is None:
        for entry in tiers:
            if entry[0] == tier:
                return entry
        names = ", ".join(repr(name) for name, _, _ in tiers) or "none"
        raise BrainshapeError(
            f"{path} has no tier {tier!r} (tiers present: {names}); set words.tier in the "
            "config to the tier that holds the words"
        )
    if not 1 <= position <= len(tiers):
        raise BrainshapeError(
            f"{path} has no tier at position {position} (tiers present: {present}); tier "
            "positions count from 1: set words.tier (or the runs sheet's tier column) to the "
            "position or name of the tier that holds the words"
        )
    return tiers[position - 1]


def _fill_untimed(table: pd.DataFrame, timed: np.ndarray) -> pd.DataFrame:
    """Onset and offset of the words not ``timed``, interpolated linearly by word position
    between the nearest timed words (before the first or after the last timed word: that
    word's times), as :func:`read_gentle` does."""
    if not timed.all():
        position = np.arange(len(table))
        for col in ("onset", "offset"):
            known = table[col].to_numpy()[timed]
            table[col] = np.interp(position, position[timed], known)
    return table


def read_annotations(
    path: str | os.PathLike, nonspeech: Iterable[str] | None = None
) -> pd.DataFrame:
    """Read an annotations table: a TSV with columns ``Words``, ``Word Onset``, ``Word Offset``
    (seconds from the start of the story's audio; other columns are ignored).

    A word whose onset or offset cell is empty or ``n/a`` was not aligned (Alice's clitics such
    as ``n't``): it keeps its place, gets times interpolated as :func:`read_gentle` does, and
    ``aligned`` False. Non-speech rows (:func:`is_nonspeech`) are dropped.
    """
    path = Path(path)
    _require_file(path, "annotations file")
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
    raw = raw[~is_nonspeech(words, nonspeech)].reset_index(drop=True)
    words = raw["Words"].str.strip().tolist()
    times = {}
    for col, name in (("onset", "Word Onset"), ("offset", "Word Offset")):
        cells = raw[name].str.strip()
        untimed = cells.str.lower().isin(_UNTIMED).to_numpy()
        values = pd.to_numeric(cells.where(~untimed), errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~untimed & ~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            raise BrainshapeError(
                f"{path}: word {i} ({words[i]!r}) has {name} {raw[name][i]!r}, not a number of "
                f"seconds (leave the cell empty or n/a for an untimed word); {_ANNOTATIONS_FIX}"
            )
        times[col] = values
    timed = np.isfinite(times["onset"]) & np.isfinite(times["offset"])
    if not len(words):
        raise BrainshapeError(f"{path} holds no words; {_ANNOTATIONS_FIX}")
    if not timed.any():
        raise BrainshapeError(
            f"{path}: none of its {len(words)} words has both an onset and an offset; "
            f"{_ANNOTATIONS_FIX}"
        )
    table = _table(words, times["onset"], times["offset"], timed)
    _check_times(table, path, _ANNOTATIONS_FIX, rows=np.flatnonzero(timed))
    return _check_times(_fill_untimed(table, timed), path, _ANNOTATIONS_FIX)


def write_annotations(words: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``words`` (word, onset, offset in seconds; optional ``aligned``) as an annotations
    table; the times of words with ``aligned`` False are left empty (untimed)."""
    path = Path(path)
    aligned = words["aligned"].to_numpy(bool) if "aligned" in words else np.ones(len(words), bool)
    if not aligned.any():
        raise BrainshapeError(f"cannot write {path}: no word of the table is aligned (timed)")
    # Untimed words are checked at the times a reader will give them.
    times = words[["onset", "offset"]].apply(pd.to_numeric, errors="coerce").astype(np.float64)
    table = _check_writable(_fill_untimed(words.assign(**times), aligned), path)
    for i, word in enumerate(table["word"]):
        if "\t" in word or "\n" in word or "\r" in word:
            raise BrainshapeError(
                f"cannot write {path}: word {i} ({word!r}) holds a tab or line break, which "
                "a TSV cell cannot; clean the words table"
            )
    out = pd.DataFrame(
        {
            "Words": table["word"],
            "Word Onset": table["onset"].round(9).astype(object).where(aligned, ""),
            "Word Offset": table["offset"].round(9).astype(object).where(aligned, ""),
        }
    )
    with atomic_path(path, suffix=".tsv") as tmp:
        out.to_csv(tmp, sep="\t", index=False, quoting=csv.QUOTE_NONE, lineterminator="\n")


def _praat_tier_lines(name: str, intervals, duration: float, short: bool, k: int) -> list[str]:
    if short:
        lines = ['"IntervalTier"', _praat_string(name), "0", repr(duration), str(len(intervals))]
        for a, b, label in intervals:
            lines += [repr(a), repr(b), _praat_string(label)]
        return lines
    lines = [
        f"    item [{k}]:",
        '        class = "IntervalTier" ',
        f"        name = {_praat_string(name)} ",
        "        xmin = 0 ",
        f"        xmax = {duration!r} ",
        f"        intervals: size = {len(intervals)} ",
    ]
    for j, (a, b, label) in enumerate(intervals, start=1):
        lines += [
            f"        intervals [{j}]:",
            f"            xmin = {a!r} ",
            f"            xmax = {b!r} ",
            f"            text = {_praat_string(label)} ",
        ]
    return lines


def write_textgrid_tiers(
    path: str | os.PathLike,
    tiers: Sequence[tuple[str, Sequence[tuple[float, float, str]]]],
    duration: float,
    short: bool = False,
) -> None:
    """Write interval tiers as a TextGrid, in Praat's long text format or (``short``) its short
    one. ``tiers`` is a list of (name, intervals); each tier's intervals (xmin, xmax, label in
    seconds) must tile 0 to ``duration`` without gaps or overlaps, each longer than 0 s."""
    path = Path(path)
    duration = float(duration)
    for name, intervals in tiers:
        bounds = [0.0] + [b for _, b, _ in intervals]
        starts = [a for a, _, _ in intervals] + [duration]
        if (
            not intervals
            or any(abs(a - b) > 1e-9 for a, b in zip(bounds, starts, strict=True))
            or any(b <= a for a, b, _ in intervals)
        ):
            raise BrainshapeError(
                f"cannot write {path}: the intervals of tier {name!r} do not tile 0-{duration:g} s "
                "with positive lengths; give contiguous intervals from 0 to the duration"
            )
    head = ['File type = "ooTextFile"', 'Object class = "TextGrid"', ""]
    if short:
        head += ["0", repr(duration), "<exists>", str(len(tiers))]
    else:
        head += [
            "xmin = 0 ",
            f"xmax = {duration!r} ",
            "tiers? <exists> ",
            f"size = {len(tiers)} ",
            "item []: ",
        ]
    lines = head
    for k, (name, intervals) in enumerate(tiers, start=1):
        lines += _praat_tier_lines(name, intervals, duration, short, k)
    save_text(path, "\n".join(lines) + "\n")


# --- dispatch ----------------------------------------------------------------------------------

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
    (:func:`is_nonspeech`; default :func:`nonspeech_default`)."""
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


def words_table(
    sources: Mapping[str, str | os.PathLike | Mapping[str, Any]], fmt: str | None = None, **kw: Any
) -> pd.DataFrame:
    """The words table of a dataset: the word-timing file of every story, stacked.

    ``sources`` maps story -> file (all of format ``fmt``; ``kw`` as in :func:`read_words`), or
    story -> ``{"path", "format", "tier"}`` where stories differ (a runs sheet's word timings;
    ``tier`` applies to TextGrids only).
    Returns columns story (str), word_index (int64, 0-based within the story), word (str),
    onset, offset (float64, seconds on the word-timing file's clock) and aligned (bool), in
    the order of ``sources`` then word order.
    """
    if not sources:
        raise BrainshapeError("no stories to read word timings for; list the dataset's stories")
    tables = {}
    for story, path in sources.items():
        if isinstance(path, Mapping):
            options = {"tier": path["tier"]} if path["format"] == "textgrid" else {}
            tables[story] = read_words(path["path"], path["format"], **options, **kw)
        else:
            tables[story] = read_words(path, fmt, **kw)
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
