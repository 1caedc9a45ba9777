"""Trivial-feature baselines and the inter-subject noise ceiling of a dataset.

A brainscore means little on its own: a layer that only tracks when words are heard scores
well in auditory cortex without knowing any language. Baselines go through the same engine,
delays and folds as the models (``encoding.encode_variant``) with features made from the
words table alone:

- ``word_rate``: one feature per word equal to 1; after Lanczos resampling it is the number of
  words heard around each volume.
- ``word_length_position``: the word-rate feature plus the word's length in letters and its
  position in its sentence (words since the last ``.``, ``!`` or ``?``, starting at 0).

The noise ceiling (``inter_subject_ceiling``) predicts each subject, story by story, from the
mean of the other subjects who heard the story (``isc``), and corrects for the noise left in
that mean (:mod:`brainshape.ceilings`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

from brainshape.ceilings import single_subject_ceiling
from brainshape.clock import kept_times
from brainshape.encoding import check_subject, encode_variant
from brainshape.errors import BrainshapeError
from brainshape.subjects import SubjectData, subject_label

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
    """Per subject and target, r between the subject and the mean of the others who heard the
    same stories, and the ceiling it implies for a model of one subject
    (:func:`ceilings.single_subject_ceiling`).

    Computed story by story over the subjects who heard it, then pooled over the stories each
    subject shares with anyone (the moments of the r are summed). Volumes are matched on the
    word clock (``offset``, trimming and TR of each run), so runs one or two volumes longer or
    shorter still line up; subjects whose TR differs are not compared. Targets are matched by
    ``roi`` and ``hemisphere`` (ROI means) or by voxel position (world ``x, y, z`` in mm where
    the targets table has them, else grid ``i, j, k``), so masks that differ at the edges leave
    the voxels they share; each voxel is compared with the mean of the others that have it.
    Responses in a subject's own column order (``column``) are not comparable across subjects.
    Where a subject has no inter-subject ceiling but its targets table carries a ceiling from
    repeats (``repeat_ceiling``), that one is used. Returns columns ``subject``, ``target``,
    ``roi``, ``hemisphere``, ``isc``, ``ceiling`` (float64), ``n_others`` (int64, others per
    volume, averaged and rounded) and ``source`` (``subjects``, ``repeats`` or empty);
    ``table.attrs["without_ceiling"]`` maps each subject without a ceiling to the reason.
    """
    if not subjects:
        raise BrainshapeError("No subjects for the noise ceiling; check the fMRI inputs.")
    for sub, data in subjects.items():
        check_subject(sub, data)
    keys = {sub: _target_keys(data.targets) for sub, data in subjects.items()}
    moments = {sub: np.zeros((7, len(data.targets))) for sub, data in subjects.items()}
    shared: dict[str, list[str]] = {sub: [] for sub in subjects}
    stories = sorted({story for data in subjects.values() for story in data.runs})
    for story in stories:
        holders = [s for s in subjects if story in subjects[s].runs and keys[s] is not None]
        for group in _same_tr(subjects, holders, story):
            _add_story(subjects, keys, moments, group, story)
            for sub in group:
                shared[sub].append(story)
    tables, reasons = [], {}
    for sub, data in subjects.items():
        frame, reason = _ceiling_rows(sub, data, moments[sub], keys[sub], shared[sub])
        tables.append(frame)
        if reason:
            reasons[subject_label(sub)] = reason
    table = pd.concat(tables, ignore_index=True)
    table.attrs["without_ceiling"] = reasons
    return table.sort_values(["subject", "target"], ignore_index=True)


def _target_keys(targets: pd.DataFrame) -> np.ndarray | None:
    """What identifies each target across subjects, as strings; None if nothing does."""
    if "x" in targets and targets["n_voxels"].eq(1).all() and "i" in targets:
        columns = ["x", "y", "z"]
        values = targets[columns].to_numpy(dtype=np.float64).round(1).astype(str)
    elif "i" in targets:
        values = targets[["i", "j", "k"]].astype(str).to_numpy()
    elif "column" in targets:
        return None
    else:
        values = targets[["roi", "hemisphere"]].astype(str).to_numpy()
    return np.array(["|".join(v) for v in values])


def _same_tr(subjects, holders: list[str], story: str) -> list[list[str]]:
    """The story's holders grouped by TR (only subjects scanned alike are compared); groups
    of one are dropped."""
    by_tr: dict[float, list[str]] = {}
    for sub in holders:
        by_tr.setdefault(round(float(subjects[sub].runs[story]["tr"]), 3), []).append(sub)
    return [group for group in by_tr.values() if len(group) > 1]


def _add_story(subjects, keys, moments, group: list[str], story: str) -> None:
    """Add one story's sums (x, y, x^2, y^2, x y, count, others) of each subject of ``group``
    against the mean of the others, volumes matched on the word clock."""
    tr = float(subjects[group[0]].runs[story]["tr"])
    starts = {sub: float(kept_times(subjects[sub].runs[story])[0]) for sub in group}
    origin = min(starts.values())
    rows = {s: int(round((starts[s] - origin) / tr)) for s in group}
    n_rows = max(rows[s] + len(subjects[s].data[story]) for s in group)
    union, index = np.unique(np.concatenate([keys[s] for s in group]), return_inverse=True)
    columns, at = {}, 0
    for sub in group:
        columns[sub] = index[at : at + len(keys[sub])]
        at += len(keys[sub])
    total = np.zeros((n_rows, len(union)))
    count = np.zeros((n_rows, len(union)), dtype=np.int32)
    for sub in group:
        x = np.asarray(subjects[sub].data[story], dtype=np.float64)
        span = slice(rows[sub], rows[sub] + len(x))
        total[span, columns[sub]] += x
        count[span, columns[sub]] += 1
    for sub in group:
        x = np.asarray(subjects[sub].data[story], dtype=np.float64)
        span = slice(rows[sub], rows[sub] + len(x))
        others = count[span][:, columns[sub]] - 1
        valid = others > 0
        y = np.where(valid, (total[span][:, columns[sub]] - x) / np.maximum(others, 1), 0.0)
        x = np.where(valid, x, 0.0)
        m = moments[sub]
        for k, value in enumerate((x, y, x * x, y * y, x * y, valid, others * valid)):
            m[k] += value.sum(axis=0)


def _ceiling_rows(sub, data: SubjectData, m: np.ndarray, keys, shared: list[str]):
    """The ceiling table's rows of one subject, and why it has no ceiling (or '')."""
    sx, sy, sxx, syy, sxy, n, others = m
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = sxy - sx * sy / n
        isc = cov / np.sqrt((sxx - sx**2 / n) * (syy - sy**2 / n))
        isc = np.where(n >= 3, np.clip(isc, -1.0, 1.0), np.nan)
        k = np.where(n > 0, others / np.maximum(n, 1), 0.0)
    ceiling = single_subject_ceiling(isc, k + 1)
    source = np.where(np.isfinite(ceiling), "subjects", "")
    repeats = data.targets.get("repeat_ceiling")
    if repeats is not None:
        use = ~np.isfinite(ceiling) & np.isfinite(repeats.to_numpy(dtype=np.float64))
        ceiling = np.where(use, repeats.to_numpy(dtype=np.float64), ceiling)
        source = np.where(use, "repeats", source)
    reason = ""
    if not np.isfinite(ceiling).any():
        if keys is None:
            reason = ("responses in the subject's own column order: no target is comparable "
                      "across subjects, and no repeats give a ceiling")  # fmt: skip
        elif not shared:
            heard = ", ".join(sorted(data.runs))
            reason = f"nobody else heard its stories ({heard}) with the same TR"
        else:
            reason = "no target in common with the others who heard its stories"
    targets = data.targets
    frame = pd.DataFrame(
        {
            "subject": str(sub),
            "target": targets["target"].to_numpy(dtype=np.int64),
            "roi": targets["roi"].to_numpy(),
            "hemisphere": targets["hemisphere"].to_numpy(),
            "isc": isc.astype(np.float64),
            "ceiling": np.asarray(ceiling, dtype=np.float64),
            "n_others": np.rint(k).astype(np.int64),
            "source": source.astype(str),
        }
    )
    return frame, reason
