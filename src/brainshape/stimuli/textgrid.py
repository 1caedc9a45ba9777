"""Praat TextGrids: the long, short and chronological text formats, in UTF-8 (with or without a
byte-order mark) or UTF-16, read into tiers; the words tier into a words table.

A tier the reader is not asked for never stops it: in the long format each tier is read on its
own (between its ``item [k]:`` lines), so a phone tier with overlapping, unordered or miscounted
intervals (ds003020's ``wheretheressmoke``) leaves the words tier readable; only the tier that
is read must be sound.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainshape.errors import BrainshapeError
from brainshape.io import save_text
from brainshape.stimuli.nonspeech import nonspeech_set, normal_label
from brainshape.stimuli.tables import check_times, check_writable, make_table, require_file

_TEXTGRID_FIX = "save it from Praat as a text TextGrid or fix the file"

# Praat's text formats are free-form: values are numbers, "strings" (with "" for a quote) and
# <flags>; labels such as `xmin =`, `item [1]:` and `! comments` are decoration. One tokenizer
# therefore reads the long, the short and the chronological format alike.
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
_CHRONOLOGICAL = re.compile(r'\A\s*"Praat chronological TextGrid text file"')
# The line that opens a tier of the long format (`item []:` above them has no number).
_ITEM = re.compile(r"^[ \t]*item[ \t]*\[[ \t]*(\d+)[ \t]*\][ \t]*:", re.MULTILINE)
_NAME = re.compile(r'name\s*=\s*"((?:[^"]|"")*)"')

#: Classes of tiers a TextGrid holds.
TIER_CLASSES = ("IntervalTier", "TextTier")


@dataclass(frozen=True)
class Tier:
    """One tier of a TextGrid: its name, class (``IntervalTier`` or ``TextTier``) and items
    (xmin, xmax, label) in seconds (a TextTier's points have xmin = xmax). ``error`` says why
    a tier could not be read (then ``kind`` is empty and ``items`` too); reading it raises."""

    name: str
    kind: str
    items: list[tuple[float, float, str]] = field(default_factory=list)
    error: str | None = None


class _Tokens:
    """Values of a Praat text file in order, with typed reads that fail with a clear error."""

    def __init__(self, text: str, path: Path, start: int = 0, end: int | None = None) -> None:
        self.path = path
        self.values: list[tuple[str, Any]] = []
        pos, end = start, len(text) if end is None else end
        while pos < end:
            match = _TOKEN.match(text, pos, end)
            if match is None:
                line = text.count("\n", 0, pos) + 1
                raise BrainshapeError(
                    f"{path} is not a valid TextGrid: unexpected {text[pos:end].split()[0]!r} "
                    f"on line {line}; {_TEXTGRID_FIX}"
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

    def next(self, kind: str, what: str) -> Any:
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
        return self.next("number", what)

    def count(self, what: str) -> int:
        value = self.number(what)
        if value != int(value) or value < 0:
            raise BrainshapeError(
                f"{self.path} is not a valid TextGrid: {what} is {value:g}, not a count; "
                f"{_TEXTGRID_FIX}"
            )
        return int(value)

    def string(self, what: str) -> str:
        return self.next("string", what)

    @property
    def left(self) -> int:
        return len(self.values) - self.pos


def decode_text(path: Path) -> str:
    """The text of a Praat file: UTF-16 where it starts with a byte-order mark (Praat writes
    UTF-16 when a label needs it), else UTF-8 with or without one."""
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    if raw.lstrip().startswith(b"ooBinaryFile"):
        raise BrainshapeError(f"{path} is a binary TextGrid, which is not read; {_TEXTGRID_FIX}")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BrainshapeError(
            f"{path} is not a valid TextGrid: it is neither UTF-8 nor UTF-16 text; {_TEXTGRID_FIX}"
        ) from None


def _read_items(tokens: _Tokens, kind: str, name: str, n: int, t: int) -> list:
    """``n`` items of tier ``t`` (1-based) of class ``kind``, from the sequential formats."""
    items = []
    for k in range(n):
        where = f"item {k + 1} of tier {t} ({name!r})"
        if kind == "IntervalTier":
            xmin = tokens.number(f"the xmin of {where}")
            xmax = tokens.number(f"the xmax of {where}")
            items.append((xmin, xmax, tokens.string(f"the text of {where}")))
        else:
            time = tokens.number(f"the time of {where}")
            items.append((time, time, tokens.string(f"the mark of {where}")))
    return items


def _tier_head(tokens: _Tokens, t: int, path: Path) -> tuple[str, str]:
    """(class, name) of tier ``t``, then past its xmin and xmax."""
    kind = tokens.string(f"the class of tier {t}")
    name = tokens.string(f"the name of tier {t}")
    if kind not in TIER_CLASSES:
        raise BrainshapeError(
            f"{path} is not a valid TextGrid: tier {t} ({name!r}) has unknown class {kind!r}; "
            f"{_TEXTGRID_FIX}"
        )
    tokens.number(f"the xmin of tier {t} ({name!r})")
    tokens.number(f"the xmax of tier {t} ({name!r})")
    return kind, name


def _grid_head(tokens: _Tokens) -> int:
    """Past the grid's xmin, xmax and ``<exists>``: the number of tiers (0 without tiers)."""
    tokens.number("the grid's xmin")
    tokens.number("the grid's xmax")
    if tokens.next("flag", "<exists>") != "<exists>":
        return 0
    return tokens.count("the number of tiers")


def _sequential_tiers(text: str, start: int, path: Path) -> list[Tier]:
    """The tiers of the short format (and of a long one without ``item [k]:`` lines)."""
    tokens = _Tokens(text, path, start=start)
    tiers = []
    for t in range(1, _grid_head(tokens) + 1):
        kind, name = _tier_head(tokens, t, path)
        n = tokens.count(f"the size of tier {t} ({name!r})")
        tiers.append(Tier(name, kind, _read_items(tokens, kind, name, n, t)))
    return tiers


def _long_tier(text: str, start: int, end: int, t: int, path: Path) -> Tier:
    """Tier ``t`` of the long format, read from its own lines; an unreadable tier is returned
    with its ``error`` rather than raised."""
    try:
        tokens = _Tokens(text, path, start=start, end=end)
        kind, name = _tier_head(tokens, t, path)
        n = tokens.count(f"the size of tier {t} ({name!r})")
        items = _read_items(tokens, kind, name, n, t)
        if tokens.left:
            raise BrainshapeError(
                f"{path} is not a valid TextGrid: tier {t} ({name!r}) holds more than the "
                f"{n} items it declares; {_TEXTGRID_FIX}"
            )
        return Tier(name, kind, items)
    except BrainshapeError as error:
        named = _NAME.search(text, start, end)
        name = named.group(1).replace('""', '"') if named else f"tier {t}"
        return Tier(name, "", [], str(error))


def _long_tiers(text: str, start: int, path: Path) -> list[Tier] | None:
    """The tiers of the long format, each read on its own; None without ``item [k]:`` lines."""
    marks = list(_ITEM.finditer(text, start))
    if not marks:
        return None
    declared = _grid_head(_Tokens(text, path, start=start, end=marks[0].start()))
    if declared != len(marks):
        raise BrainshapeError(
            f"{path} is not a valid TextGrid: it declares {declared} tiers but holds "
            f"{len(marks)}; {_TEXTGRID_FIX}"
        )
    ends = [m.start() for m in marks[1:]] + [len(text)]
    return [
        _long_tier(text, m.end(), end, t, path)
        for t, (m, end) in enumerate(zip(marks, ends, strict=True), start=1)
    ]


def _chronological_tiers(text: str, start: int, path: Path) -> list[Tier]:
    """The tiers of Praat's chronological format: the tier heads, then every item, in time
    order, as ``tier xmin xmax "text"`` (intervals) or ``tier time "mark"`` (points)."""
    tokens = _Tokens(text, path, start=start)
    tokens.number("the grid's xmin")
    tokens.number("the grid's xmax")
    heads = [_tier_head(tokens, t, path) for t in range(1, tokens.count("the number of tiers") + 1)]
    items: list[list] = [[] for _ in heads]
    while tokens.left:
        t = tokens.count("the tier number of an item")
        if not 1 <= t <= len(heads):
            raise BrainshapeError(
                f"{path} is not a valid TextGrid: an item names tier {t}, but the file has "
                f"{len(heads)}; {_TEXTGRID_FIX}"
            )
        kind, name = heads[t - 1]
        items[t - 1] += _read_items(tokens, kind, name, 1, t)
    return [Tier(name, kind, found) for (kind, name), found in zip(heads, items, strict=True)]


def textgrid_tiers(path: str | os.PathLike) -> list[Tier]:
    """Every tier of a TextGrid (long, short or chronological text format), in file order
    (names may repeat). In the long format a tier that cannot be read comes back with its
    ``error`` instead of stopping the others."""
    path = Path(path)
    require_file(path, "TextGrid")
    text = decode_text(path)
    chronological = _CHRONOLOGICAL.match(text)
    if chronological is not None:
        return _chronological_tiers(text, chronological.end(), path)
    header = _HEADER.match(text)
    if header is None:
        raise BrainshapeError(
            f'{path} is not a TextGrid: it does not start with File type = "ooTextFile" and '
            'Object class = "TextGrid", nor with "Praat chronological TextGrid text file"; '
            f"{_TEXTGRID_FIX}"
        )
    tiers = _long_tiers(text, header.end(), path)
    return tiers if tiers is not None else _sequential_tiers(text, header.end(), path)


def pick_tier(tiers: Sequence[Tier], tier: str | int, path: Path) -> Tier:
    """The tier named ``tier``, or at position ``tier`` counted from 1 (an int or a string of
    digits); an unreadable tier raises its error here, and only here."""
    position = tier if isinstance(tier, int) else int(tier) if str(tier).isdigit() else None
    present = ", ".join(f"{i} {t.name!r}" for i, t in enumerate(tiers, 1)) or "none"
    if position is None:
        found = next((t for t in tiers if t.name == tier), None)
        if found is None:
            names = ", ".join(repr(t.name) for t in tiers) or "none"
            raise BrainshapeError(
                f"{path} has no tier {tier!r} (tiers present: {names}); set words.tier in the "
                "config to the tier that holds the words"
            )
    elif not 1 <= position <= len(tiers):
        raise BrainshapeError(
            f"{path} has no tier at position {position} (tiers present: {present}); tier "
            "positions count from 1: set words.tier (or the runs sheet's tier column) to the "
            "position or name of the tier that holds the words"
        )
    else:
        found = tiers[position - 1]
    if found.error is not None:
        raise BrainshapeError(found.error)
    return found


def read_textgrid(
    path: str | os.PathLike, tier: str | int = "words", nonspeech: Iterable[str] | None = None
) -> pd.DataFrame:
    """Read the word intervals of tier ``tier`` of a Praat TextGrid (long, short or
    chronological text format; UTF-8, with or without a byte-order mark, or UTF-16).

    ``tier`` is the tier's name, or its position counted from 1 (an int, or a string of digits:
    ``"2"`` is the second tier). One row per interval whose label is not empty or non-speech
    (:func:`~brainshape.stimuli.is_nonspeech` with ``nonspeech``; by default the markers and
    silence labels of :func:`~brainshape.stimuli.nonspeech_default`): word = label,
    onset/offset = interval bounds in seconds, aligned True.
    """
    path = Path(path)
    found = pick_tier(textgrid_tiers(path), tier, path)
    if found.kind != "IntervalTier":
        raise BrainshapeError(
            f"{path}: tier {found.name!r} is a {found.kind}, not an IntervalTier of words; set "
            "words.tier to the tier of word intervals"
        )
    skip = nonspeech_set(nonspeech)
    kept = [(a, b, label.strip()) for a, b, label in found.items if normal_label(label) not in skip]
    table = make_table(
        [w for *_, w in kept], [a for a, *_ in kept], [b for _, b, _ in kept], [True] * len(kept)
    )
    return check_times(table, path, _TEXTGRID_FIX)


# --- writers -------------------------------------------------------------------------------------


def _praat_string(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def write_textgrid(words: pd.DataFrame, path: str | os.PathLike, duration: float) -> None:
    """Write ``words`` (word, onset, offset in seconds) as a long-format TextGrid.

    One IntervalTier ``words`` spans 0 to ``duration`` s: an interval per word, and empty
    (silence) intervals filling every gap, since a tier must cover its whole time range.
    Words may not overlap and must last longer than 0 s (Praat needs xmin < xmax).
    """
    path = Path(path)
    table = check_writable(words, path)
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


def _chronological_lines(tiers, duration: float) -> list[str]:
    """Praat's chronological text format: tier heads, then every interval in time order (ties
    in tier order), each under a ``! name:`` comment as Praat writes it."""
    lines = [
        '"Praat chronological TextGrid text file"',
        f"0 {duration!r}   ! Time domain.",
        f"{len(tiers)}   ! Number of tiers.",
    ]
    lines += [f'"IntervalTier" {_praat_string(name)} 0 {duration!r}' for name, _ in tiers]
    items = sorted(
        (a, k, b, label) for k, (_, intervals) in enumerate(tiers, 1) for a, b, label in intervals
    )
    for a, k, b, label in items:
        lines += ["", f"! {tiers[k - 1][0]}:", f"{k} {a!r} {b!r}", _praat_string(label)]
    return lines


def write_textgrid_tiers(
    path: str | os.PathLike,
    tiers: Sequence[tuple[str, Sequence[tuple[float, float, str]]]],
    duration: float,
    short: bool = False,
    chronological: bool = False,
) -> None:
    """Write interval tiers as a TextGrid, in Praat's long text format, its short one
    (``short``) or its chronological one (``chronological``). ``tiers`` is a list of (name,
    intervals); each tier's intervals (xmin, xmax, label in seconds) must tile 0 to
    ``duration`` without gaps or overlaps, each longer than 0 s."""
    path = Path(path)
    duration = float(duration)
    if short and chronological:
        raise BrainshapeError(f"cannot write {path}: choose the short or the chronological format")
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
    if chronological:
        save_text(path, "\n".join(_chronological_lines(tiers, duration)) + "\n")
        return
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', ""]
    if short:
        lines += ["0", repr(duration), "<exists>", str(len(tiers))]
    else:
        lines += [
            "xmin = 0 ",
            f"xmax = {duration!r} ",
            "tiers? <exists> ",
            f"size = {len(tiers)} ",
            "item []: ",
        ]
    for k, (name, intervals) in enumerate(tiers, start=1):
        lines += _praat_tier_lines(name, intervals, duration, short, k)
    save_text(path, "\n".join(lines) + "\n")
