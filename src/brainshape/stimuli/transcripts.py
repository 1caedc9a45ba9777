"""The text a language model reads: the case of timed words, and a story's transcript aligned to
them.

Word-timing files from forced aligners carry neither case nor punctuation, and aligners built
on the CMU dictionary (P2FA and its descendants) write words in capitals, so a model would read
``THE FERRY LEFT THE NORTH LANDING`` rather than the story. Two remedies:

- ``words.case`` (:func:`apply_case`): ``lower`` lower-cases every word; ``auto`` lower-cases a
  story whose words hold no lower-case letter at all (an aligner's capitals) and leaves any
  other as it is; ``as-is`` changes nothing.
- a transcript per story (:func:`align_transcript`): plain text with the story's case and
  punctuation. Its words (whitespace-separated tokens) are matched to the timed words, so the
  model reads the transcript while the times come from the aligner.

Matching compares words by their letters and digits only (case, accents, apostrophes, hyphens
and punctuation ignored: ``don't`` = ``DONT``), first word by word (:mod:`difflib`'s longest
matching blocks), then, inside a short stretch where the two disagree (up to 32 words), letter
by letter, so that a transcript word the aligner split (``don't`` -> ``do`` + ``n't``,
``well-known`` -> ``well`` + ``known``) or two words it merged still find their times (a word
matched to part of a timed word gets that part of its time, in proportion to its letters).
A transcript word with fewer
than half of its letters matched (``20`` against the aligner's ``TWENTY``, a word the aligner
dropped) is *unmatched*: it keeps its place and gets times interpolated by position between its
matched neighbours, and ``aligned`` False. Timed words no transcript word matched (a filler the
aligner added) are left out. Both are reported (:class:`Alignment`).
"""

from __future__ import annotations

import difflib
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainshape.errors import BrainshapeError
from brainshape.stimuli.tables import check_times, fill_untimed, make_table

#: Values of ``words.case``.
CASES = ("auto", "as-is", "lower")

# Stretches where the two disagree over more words than this (on either side) are not matched
# letter by letter: an aligner splits, merges or respells a few words at a time, and letters
# matched across a long stretch of different text would be matched by chance.
_MAX_WORDS = 32
# Below this share of transcript words matched, the transcript is not the story's.
_MIN_MATCHED = 0.5


def all_capitals(words: Sequence[str]) -> bool:
    """Whether ``words`` hold upper-case letters and no lower-case one (an aligner's capitals)."""
    text = "".join(words)
    return any(ch.isupper() for ch in text) and not any(ch.islower() for ch in text)


def apply_case(words: Sequence[str], case: str) -> list[str]:
    """``words`` as ``words.case`` asks: ``lower`` lower-cases them, ``auto`` lower-cases them
    only when they are all capitals (:func:`all_capitals`), ``as-is`` keeps them."""
    if case not in CASES:
        raise BrainshapeError(f"words.case is {case!r}; choose one of: {', '.join(CASES)}")
    if case == "lower" or (case == "auto" and all_capitals(words)):
        return [w.lower() for w in words]
    return list(words)


def match_key(word: str) -> str:
    """What two spellings of a word share: its letters and digits, case-folded, accents
    removed (``Don't`` and ``DONT`` -> ``dont``; ``Café`` -> ``cafe``)."""
    decomposed = unicodedata.normalize("NFKD", str(word).casefold())
    return "".join(ch for ch in decomposed if ch.isalnum())


def read_transcript(path: str | os.PathLike) -> list[str]:
    """The words of a transcript: its whitespace-separated tokens, in order (UTF-8, with or
    without a byte-order mark). A token without letters or digits (a dash, an ellipsis) cannot
    be matched to a timed word; it joins the word before it (``said —``), or the first word
    when it opens the text, as Gentle's transcripts attach punctuation."""
    path = Path(path)
    if not path.is_file():
        raise BrainshapeError(
            f"transcript {path} does not exist; check words.transcript in the config (a path "
            "relative to bids_root, {story} filled in) or remove the key"
        )
    try:
        tokens = path.read_text(encoding="utf-8-sig").split()
    except UnicodeDecodeError:
        raise BrainshapeError(f"transcript {path} is not UTF-8 text; save it as UTF-8") from None
    words: list[str] = []
    leading: list[str] = []
    for token in tokens:
        if match_key(token):
            words.append(" ".join([*leading, token]))
            leading = []
        elif words:
            words[-1] = f"{words[-1]} {token}"
        else:
            leading.append(token)
    if not words:
        raise BrainshapeError(
            f"transcript {path} holds no words (no token has a letter or digit); write the "
            "story's text into it"
        )
    return words


@dataclass(frozen=True)
class Alignment:
    """A transcript aligned to timed words.

    ``table``: one row per transcript word (word, onset, offset in seconds, aligned; see the
    module docstring); ``unmatched``: positions of the transcript words no timed word matched
    (their times interpolated); ``extra``: positions, in the timed table, of the timed words no
    transcript word matched (left out)."""

    table: pd.DataFrame
    unmatched: list[int]
    extra: list[int]

    def summary(self, timed: pd.DataFrame, limit: int = 10) -> str:
        """One line: how many words matched, and the first ``limit`` of each kind that did
        not (the timed words with their onset)."""
        n = len(self.table)
        words = self.table["word"].to_numpy()
        text = f"{n - len(self.unmatched)} of {n} transcript words matched the word timings"
        if self.unmatched:
            shown = ", ".join(f"{words[i]!r} (word {i})" for i in self.unmatched[:limit])
            more = ", ..." if len(self.unmatched) > limit else ""
            text += f"; {len(self.unmatched)} not matched, times interpolated: {shown}{more}"
        if self.extra:
            shown = ", ".join(
                f"{timed['word'].iat[j]!r} ({timed['onset'].iat[j]:.2f} s)"
                for j in self.extra[:limit]
            )
            more = ", ..." if len(self.extra) > limit else ""
            text += f"; {len(self.extra)} timed words not in the transcript, left out: {shown}"
            text += more
        return text


class _Matcher:
    """The times transcript words get from timed words, filled block by block."""

    def __init__(self, keys: list[str], timed: pd.DataFrame) -> None:
        self.keys = keys
        self.timed_keys = [match_key(w) for w in timed["word"]]
        self.t_onset = timed["onset"].to_numpy(np.float64)
        self.t_offset = timed["offset"].to_numpy(np.float64)
        self.t_aligned = timed["aligned"].to_numpy(bool)
        self.onset = np.full(len(keys), np.nan)
        self.offset = np.full(len(keys), np.nan)
        self.matched = np.zeros(len(keys), dtype=bool)
        self.aligned = np.zeros(len(keys), dtype=bool)
        self.used = np.zeros(len(self.timed_keys), dtype=bool)

    def time_at(self, j: int, position: float) -> float:
        """The time ``position`` (a share of its letters) into timed word ``j``."""
        return self.t_onset[j] + position * (self.t_offset[j] - self.t_onset[j])

    def take(self, i: int, first: tuple[int, float], last: tuple[int, float], used) -> None:
        """Transcript word ``i`` runs from ``first`` to ``last`` ((timed word, share))."""
        self.onset[i] = self.time_at(*first)
        self.offset[i] = self.time_at(*last)
        self.matched[i] = True
        self.aligned[i] = bool(self.t_aligned[list(used)].all())
        self.used[list(used)] = True

    def equal(self, i1: int, i2: int, j1: int) -> None:
        for k in range(i2 - i1):
            self.take(i1 + k, (j1 + k, 0.0), (j1 + k, 1.0), [j1 + k])

    def letters(self, i1: int, i2: int, j1: int, j2: int) -> None:
        """Match the words of a disagreeing stretch letter by letter."""
        if max(i2 - i1, j2 - j1) > _MAX_WORDS:
            return
        a = "".join(self.keys[i1:i2])
        b = "".join(self.timed_keys[j1:j2])
        if not a or not b:
            return
        owner_a = np.repeat(np.arange(i1, i2), [len(k) for k in self.keys[i1:i2]])
        owner_b = [(j, p, len(self.timed_keys[j])) for j in range(j1, j2)
                   for p in range(len(self.timed_keys[j]))]  # fmt: skip
        hits: dict[int, list[tuple[int, int, int]]] = {}
        matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
        for start_a, start_b, size in matcher.get_matching_blocks():
            for k in range(size):
                hits.setdefault(int(owner_a[start_a + k]), []).append(owner_b[start_b + k])
        for i, found in hits.items():
            if 2 * len(found) < len(self.keys[i]):
                continue
            (j, p, n), (k, q, m) = found[0], found[-1]
            self.take(i, (j, p / n), (k, (q + 1) / m), sorted({h[0] for h in found}))


def align_transcript(
    timed: pd.DataFrame, words: Sequence[str], path: str | os.PathLike, story: str = ""
) -> Alignment:
    """Align the transcript ``words`` (read from ``path``) to ``timed`` (one story's words
    table: word, onset, offset, aligned; non-speech already dropped): see the module
    docstring. Raises when fewer than half of the transcript words match: the transcript is
    not this story's."""
    path = Path(path)
    keys = [match_key(w) for w in words]
    if not all(keys):
        i = keys.index("")
        raise BrainshapeError(
            f"transcript {path}: word {i} ({words[i]!r}) has no letter or digit to match; read "
            "transcripts with stimuli.read_transcript"
        )
    m = _Matcher(keys, timed)
    opcodes = difflib.SequenceMatcher(None, keys, m.timed_keys, autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in opcodes:
        if tag == "equal":
            m.equal(i1, i2, j1)
        elif tag == "replace":
            m.letters(i1, i2, j1, j2)
    if m.matched.sum() < _MIN_MATCHED * len(keys):
        raise BrainshapeError(
            f"transcript {path} does not fit the word timings of story {story!r}: only "
            f"{int(m.matched.sum())} of its {len(keys)} words match a timed word; check that "
            "it is this story's transcript (words.transcript)"
        )
    table = make_table(list(words), m.onset, m.offset, m.aligned)
    table = fill_untimed(table, m.matched)
    fix = f"check the transcript {path} and the story's word timings"
    check_times(table, path, fix)
    return Alignment(
        table=table,
        unmatched=np.flatnonzero(~m.matched).tolist(),
        extra=np.flatnonzero(~m.used).tolist(),
    )
