"""Trivial-feature baselines and the inter-subject noise ceiling of a dataset.

A brainscore means little on its own: a layer that only tracks when words are heard scores
well in auditory cortex without knowing any language. Baselines go through the same engine,
delays and folds as the models (``encoding.encode_variant``) with features made from the
words table alone:

- ``word_rate``: one feature per word equal to 1; after Lanczos resampling it is the number of
  words heard around each volume.
- ``word_length_position``: the word-rate feature plus the word's length in letters and its
  position in its sentence (words since the last ``.``, ``!`` or ``?``, starting at 0).

The noise ceiling (``inter_subject_ceiling``) predicts each subject from the mean of the other
subjects who heard the same stories (``isc``). The mean of k - 1 others is itself noisy, so
``isc`` understates what a model of the shared signal could reach; under the usual model
(one shared signal plus independent noise of equal variance in every subject) that reachable
correlation is ``ceiling = sqrt(a)`` with ``a`` the positive root of
``(k - 1) a^2 - isc^2 (k - 2) a - isc^2 = 0`` (for k = 2: ``sqrt(isc)``, the classic
split-half correction).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

from brainshape import scoring
from brainshape.encoding import check_subject, encode_variant
from brainshape.errors import BrainshapeError
from brainshape.subjects import RUN_KEYS, SubjectData, subject_label

BASELINES = ("word_rate", "word_length_position")

_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")


def baseline_features(words: pd.DataFrame, name: str) -> dict[str, np.ndarray]:
    """Word-rate features of baseline ``name``: per story (1, n_words, d) float64.

    Shaped like one model layer (index 0), so ``encode_variant`` treats a baseline like a
    model with a single layer.
    """
    if name not in BASELINES:
        raise BrainshapeError(
            f"encoding.baselines lists unknown baseline {name!r}; known: {list(BASELINES)}."
        )
    out = {}
    for story, table in words.groupby("story", sort=False):
        table = table.sort_values("word_index")
        ones = np.ones(len(table))
        if name == "word_rate":
            columns = [ones]
        else:
            text = table["word"].astype(str).tolist()
            length = np.array([len(re.sub(r"\W", "", w)) for w in text], dtype=np.float64)
            position = np.zeros(len(text))
            count = 0
            for i, word in enumerate(text):
                position[i] = count
                count = 0 if _SENTENCE_END.search(word) else count + 1
            columns = [ones, length, position]
        out[str(story)] = np.column_stack(columns)[None]
    return out


def encode_baseline(
    words: pd.DataFrame, subjects: Mapping[str, SubjectData], name: str, **options
) -> pd.DataFrame:
    """The encoding table of baseline ``name`` (one row per subject and target).

    ``options`` are those of ``encode_variant`` (delays, alphas, folds, ...), so a baseline is
    scored exactly like the models it is compared with. Returns the ``encode_variant``
    columns with ``layer`` dropped and ``baseline`` first.
    """
    table = encode_variant(words, baseline_features(words, name), subjects, **options)
    table = table.drop(columns="layer")
    table.insert(0, "baseline", name)
    return table


def inter_subject_ceiling(subjects: Mapping[str, SubjectData]) -> pd.DataFrame:
    """Per subject and target, r between the subject and the mean of the others, and the
    ceiling it implies for a model of one subject (``single_subject_ceiling``).

    Subjects are pooled when they heard the same stories with the same runs and have the same
    targets (same ``roi`` and ``hemisphere`` per column, and the same voxels where the targets
    table lists ``i, j, k``). The kept volumes of all stories are concatenated in story order.
    A subject with nobody to compare with gets NaN. Returns columns ``subject``, ``target``,
    ``roi``, ``hemisphere``, ``isc``, ``ceiling`` (float64) and ``n_others`` (int64).
    """
    if not subjects:
        raise BrainshapeError("No subjects for the noise ceiling; check the fMRI inputs.")
    groups: dict[tuple, list[str]] = {}
    for sub, data in subjects.items():
        check_subject(sub, data)
        columns = [c for c in ("roi", "hemisphere", "i", "j", "k") if c in data.targets]
        runs = tuple((s, *(data.runs[s][k] for k in RUN_KEYS)) for s in sorted(data.runs))
        key = (runs, tuple(map(tuple, data.targets[columns].astype(str).to_numpy())))
        groups.setdefault(key, []).append(sub)
    tables = []
    for subs in groups.values():
        stories = sorted(subjects[subs[0]].runs)
        stacked = np.stack(
            [
                np.concatenate([subjects[s].data[story] for story in stories]).astype(np.float64)
                for s in subs
            ]
        )  # (n_subjects, n_trs, n_targets)
        total = stacked.sum(axis=0)
        for k, sub in enumerate(subs):
            if len(subs) < 2:
                isc = np.full(stacked.shape[2], np.nan)
            else:
                others = (total - stacked[k]) / (len(subs) - 1)
                isc = scoring.pearson(stacked[k], others)
            targets = subjects[sub].targets
            tables.append(
                pd.DataFrame(
                    {
                        "subject": str(sub),
                        "target": targets["target"].to_numpy(dtype=np.int64),
                        "roi": targets["roi"].to_numpy(),
                        "hemisphere": targets["hemisphere"].to_numpy(),
                        "isc": isc,
                        "ceiling": single_subject_ceiling(isc, len(subs)),
                        "n_others": np.int64(len(subs) - 1),
                    }
                )
            )
    lonely = [subject_label(s) for subs in groups.values() if len(subs) == 1 for s in subs]
    table = pd.concat(tables, ignore_index=True)
    table.attrs["without_ceiling"] = lonely
    return table.sort_values(["subject", "target"], ignore_index=True)


def single_subject_ceiling(isc: np.ndarray, n_subjects: int) -> np.ndarray:
    """The r a perfect model of the shared signal reaches in one subject, from ``isc``.

    ``isc`` is the r of a subject with the mean of the other ``n_subjects - 1``; NaN where it
    is not positive (no shared signal to speak of) or there are fewer than 2 subjects.
    """
    isc = np.asarray(isc, dtype=np.float64)
    k = n_subjects
    if k < 2:
        return np.full(isc.shape, np.nan)
    c2 = isc**2
    a = (c2 * (k - 2) + np.sqrt(c2**2 * (k - 2) ** 2 + 4 * (k - 1) * c2)) / (2 * (k - 1))
    with np.errstate(invalid="ignore"):
        return np.where(isc > 0, np.sqrt(a), np.nan)
