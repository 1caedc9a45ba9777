"""Labels of word-timing files that are not words (markers, silence, noise): dropped before a
language model reads the story.

The default list (``datasets.<name>.words.nonspeech`` in the config schema) is what the copies
of ds003020's reference code drop, together: ``sentence_start``, ``sentence_end``, ``br``,
``lg``, ``ls``, ``ns``, ``sp`` (HuthLab/deep-fMRI-dataset, ``encoding/ridge_utils/dsutils.py``),
``sl``, ``cg``, ``ig`` (HuthLab/encoding-model-scaling-laws, ``ridge_utils/dsutils.py``),
``ns_ap`` and ``sentence start`` (later copies), silence labels, and the noise and
unknown-word labels of Kaldi-style re-alignments (``[noise]``, ``<unk>``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import pandas as pd

from brainshape.errors import BrainshapeError
from brainshape.stimuli.tables import config_default


def nonspeech_default() -> tuple[str, ...]:
    """The default non-speech labels: ``datasets.<name>.words.nonspeech`` of the config schema."""
    return tuple(config_default("nonspeech"))


def normal_label(label: str) -> str:
    """A label as non-speech labels are compared: stripped, lower-cased, without the braces or
    parentheses around it (``{BR}``, ``{LS)`` and ``(br`` are ``br`` and ``ls``), as ds003020's
    reference code compares them (it strips ``{}``; its later copies list the half-parenthesised
    typos of the TextGrids)."""
    return str(label).strip().lower().strip("{}()").strip()


def nonspeech_set(nonspeech: Iterable[str] | None) -> frozenset[str]:
    """``nonspeech`` (default :func:`nonspeech_default`) as normal labels, with the empty one."""
    labels = nonspeech_default() if nonspeech is None else nonspeech
    if isinstance(labels, str):
        raise BrainshapeError(
            f"non-speech labels must be a list of labels, got the string {labels!r}; write "
            "words.nonspeech as a YAML list"
        )
    return frozenset(normal_label(label) for label in labels) | {""}


def is_nonspeech(labels: Iterable[str], nonspeech: Iterable[str] | None = None) -> np.ndarray:
    """Which of ``labels`` are not words: empty, or in ``nonspeech`` (default
    :func:`nonspeech_default`) once both are compared as :func:`normal_label` gives them (so
    ``{BR}``, ``br`` and ``Br`` are one marker). Boolean array, one entry per label."""
    skip = nonspeech_set(nonspeech)
    return np.array([normal_label(label) in skip for label in labels], dtype=bool)


def drop_nonspeech(
    table: pd.DataFrame, path: str | os.PathLike, nonspeech: Iterable[str] | None = None
) -> pd.DataFrame:
    """``table`` (a words table read from ``path``) without its non-speech rows."""
    keep = ~is_nonspeech(table["word"], nonspeech)
    if not keep.any():
        raise BrainshapeError(
            f"{path} holds no words: every label is non-speech (words.nonspeech lists "
            f"{', '.join(sorted(nonspeech_set(nonspeech) - {''}))}); check the file, the tier "
            "and words.nonspeech"
        )
    return table[keep].reset_index(drop=True)
