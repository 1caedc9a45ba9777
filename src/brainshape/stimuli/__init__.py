"""Word timings of the stories: Gentle, Praat TextGrid, BIDS events or annotations tables into one
words table, in the text a language model should read.

Every reader returns a table with one row per word, in story order:

- ``word`` (str): the word as the language model should read it, attached punctuation kept
  (``said,``, ``"Hello``);
- ``onset``, ``offset`` (float64): seconds from the start of the story's audio;
- ``aligned`` (bool): False where the aligner gave the word no time (or a time that had to be
  repaired) and its times were interpolated from its neighbours.

:func:`words_table` stacks the tables of many stories into the words table of a dataset
(columns ``story``, ``word_index``, ``word``, ``onset``, ``offset``, ``aligned``), each story
read by :func:`read_story`: its non-speech labels dropped, its transcript aligned where one is
given and its case set (``words.case``, ``words.transcript``). :func:`word_times` gives the
time every later stage stamps a word with, its midpoint. The writers (:func:`write_gentle`,
:func:`write_textgrid`, :func:`write_events`, :func:`write_annotations`) produce files that the
readers give back word for word and time for time; the demo dataset is written with them.

Modules: :mod:`~brainshape.stimuli.gentle`, :mod:`~brainshape.stimuli.textgrid`,
:mod:`~brainshape.stimuli.events`, :mod:`~brainshape.stimuli.annotations` (one format each),
:mod:`~brainshape.stimuli.nonspeech` (markers and silence), :mod:`~brainshape.stimuli.transcripts`
(case and transcripts), :mod:`~brainshape.stimuli.tables` (one story's table and its checks),
:mod:`~brainshape.stimuli.words` (the dataset's words table and word times).
"""

from brainshape.stimuli.annotations import ANNOTATION_COLUMNS, read_annotations, write_annotations
from brainshape.stimuli.events import read_events, write_events
from brainshape.stimuli.gentle import read_gentle, write_gentle
from brainshape.stimuli.nonspeech import drop_nonspeech, is_nonspeech, nonspeech_default
from brainshape.stimuli.tables import story_words
from brainshape.stimuli.textgrid import (
    Tier,
    read_textgrid,
    textgrid_tiers,
    write_textgrid,
    write_textgrid_tiers,
)
from brainshape.stimuli.transcripts import (
    CASES,
    Alignment,
    align_transcript,
    apply_case,
    match_key,
    read_transcript,
)
from brainshape.stimuli.words import (
    FORMATS,
    WORDS_TABLE_COLUMNS,
    read_story,
    read_words,
    read_words_table,
    stack_words,
    word_times,
    words_table,
    write_words_table,
)

__all__ = [
    "ANNOTATION_COLUMNS",
    "CASES",
    "FORMATS",
    "WORDS_TABLE_COLUMNS",
    "Alignment",
    "Tier",
    "align_transcript",
    "apply_case",
    "drop_nonspeech",
    "is_nonspeech",
    "match_key",
    "nonspeech_default",
    "read_annotations",
    "read_events",
    "read_gentle",
    "read_story",
    "read_textgrid",
    "read_transcript",
    "read_words",
    "read_words_table",
    "stack_words",
    "story_words",
    "textgrid_tiers",
    "word_times",
    "words_table",
    "write_annotations",
    "write_events",
    "write_gentle",
    "write_textgrid",
    "write_textgrid_tiers",
    "write_words_table",
]
