"""The runs sheet of Narratives (Nastase et al. 2021: OpenNeuro ds002345 with its fMRIPrep
20.0.5 derivatives from DataLad), read from its folder as published (docs/datasets.md has every
layout fact with its source).

- Runs: ``derivatives/fmriprep/sub-*/func/sub-*_task-<task>[_run-N]_space-<space>_res-native
  _desc-preproc_bold.nii.gz``; story = the audio file the events' story row names
  (``milkywayvodka_audio.wav`` -> ``milkywayvodka``), word timings
  ``stimuli/gentle/<story>/align.json`` (Gentle, seconds from the start of that audio file).
- Clock: the audio starts at the onset of the first row of the run's ``events.tsv`` (a music
  row where the audio opens with music); offset = minus that onset.
- ``code/scan_exclude.json`` (the authors' list of scans to leave out: wrong onsets, low
  intersubject correlation) is required; a run whose story row sits at another distance from
  the first row than in the task's other runs is flagged (the authors moved the story row of
  sub-038's and sub-105's milkyway and prettymouth runs, not the music row).
- Where the dataset disagrees with itself (sidecars saying 1.52 s for 1.5 s; lucy's onset
  changed in version 1.1.3) the report says so.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from brainshape import importers as imp
from brainshape.errors import BrainshapeError

#: Tasks whose run holds several stimuli: no single transcript can be aligned.
UNSUPPORTED = {"schema": "the run holds several stories and movie clips"}

#: Where the per-task brain masks live when fMRIPrep's own is absent.
TASK_MASKS = (
    "derivatives/afni-nosmooth/tpl-{space}/tpl-{space}_res-{task}_desc-brain_mask.nii.gz",
    "derivatives/afni-smooth/tpl-{space}/tpl-{space}_res-{task}_desc-brain_mask.nii.gz",
)

SCAN_EXCLUDE = "code/scan_exclude.json"

#: Onsets a later version of the dataset corrected: task -> (old s, new s, version) (CHANGES).
ONSET_FIXES = {"lucy": (2.0, 3.0, "1.1.3")}

#: The audio file an events row names: ``<story>_audio.wav``.
AUDIO_SUFFIX = "_audio.wav"


def scan_excludes(root: Path, use: bool = True) -> dict[str, str]:
    """Scan-name prefix -> task of ``code/scan_exclude.json`` (task -> subject -> prefixes);
    ``use`` False reads none."""
    path = root / SCAN_EXCLUDE
    if not use:
        return {}
    if not path.is_file():
        raise BrainshapeError(
            f"{path} does not exist; it lists the scans the dataset's authors left out (wrong "
            "story onsets, low intersubject correlation): fetch it (datalad get "
            f"{SCAN_EXCLUDE}; it is also in github.com/snastase/narratives), or rerun with "
            "--without-scan-exclude to exclude none"
        )
    try:
        data = json.loads(path.read_text())
        return {
            prefix: task
            for task, subjects in data.items()
            for scans in subjects.values()
            for prefix in scans
        }
    except (json.JSONDecodeError, AttributeError, TypeError):
        raise BrainshapeError(
            f"{path} must map task -> subject -> list of scan names; re-fetch it"
        ) from None


def _conditions(root: Path, bold: imp.Bold) -> str | None:
    """The subject's condition for the run's task: its ``_scans.tsv`` row, else the
    comma-separated ``task`` and ``condition`` columns of ``participants.tsv``."""
    sub, task = f"sub-{bold.entities['sub']}", bold.entities["task"]
    scans = root / sub / f"{sub}_scans.tsv"
    if scans.is_file():
        table = pd.read_csv(scans, sep="\t", dtype=str, keep_default_na=False)
        if {"filename", "condition"} <= set(table.columns):
            hit = table[table.filename.str.contains(f"{bold.stem}_", regex=False)]
            if len(hit):
                return hit.condition.iloc[0]
    participants = root / "participants.tsv"
    if participants.is_file():
        table = pd.read_csv(participants, sep="\t", dtype=str, keep_default_na=False)
        if not {"participant_id", "task", "condition"} <= set(table.columns):
            return None
        hit = table[table.participant_id == sub]
        if len(hit):
            tasks = hit.task.iloc[0].split(",")
            conditions = hit.condition.iloc[0].split(",")
            if task in tasks and len(conditions) == len(tasks):
                return conditions[tasks.index(task)]
    return None


def _story_row(events: pd.DataFrame) -> pd.Series:
    """The events row where the story starts: the first ``trial_type`` story row, else the
    first row."""
    if "trial_type" in events.columns:
        story = events[events.trial_type.str.strip() == "story"]
        if len(story):
            return story.iloc[0]
    return events.iloc[0]


def _story(root: Path, bold: imp.Bold, events: pd.DataFrame) -> tuple[str, str | None]:
    """(story id, reason to exclude or None): the audio file of the story row; without one,
    the task, or for milkyway the condition that selects the transcript."""
    task = bold.entities["task"]
    if task in UNSUPPORTED:
        return task, f"{UNSUPPORTED[task]} (task {task})"
    audio = str(_story_row(events).get("stim_file", "")).strip()
    if audio.endswith(AUDIO_SUFFIX) and audio[: -len(AUDIO_SUFFIX)].isalnum():
        return audio[: -len(AUDIO_SUFFIX)], None
    if task != "milkyway":
        return task, None
    condition = _conditions(root, bold)
    if condition in (None, "", "n/a"):
        return task, (
            "no condition for milkyway in the subject's _scans.tsv or participants.tsv; the "
            "condition (original, vodka, synonyms) selects the transcript"
        )
    return f"milkyway{condition}", None


def _task_mask(root: Path, space: str, task: str) -> Path | None:
    for pattern in TASK_MASKS:
        path = root / pattern.format(space=space, task=task)
        if path.is_file():
            return path
    return None


def _story_delay(path: Path, events: pd.DataFrame) -> float | None:
    """Seconds from the events' first row to its story row; None where an onset is n/a."""
    first = imp.onset_of(path, events["onset"].iloc[0])
    story = imp.onset_of(path, _story_row(events)["onset"])
    return None if first is None or story is None else round(story - first, 6)


class _Delays:
    """Per task, the distance from the first events row to the story row that more than half
    of its runs (every events file of the task in the dataset) have."""

    def __init__(self, root: Path):
        self.root, self.usual = root, {}

    def __call__(self, task: str) -> tuple[float | None, int, int]:
        """(usual delay or None, runs that have it, runs with a delay)."""
        if task not in self.usual:
            found = []
            for path in sorted(self.root.glob(f"sub-*/**/sub-*_task-{task}_*events.tsv")):
                delay = _story_delay(path, imp.read_events(path))
                if delay is not None:
                    found.append(delay)
            common = Counter(found).most_common(1)
            value, count = common[0] if common else (None, 0)
            self.usual[task] = (value if count * 2 > len(found) else None, count, len(found))
        return self.usual[task]


def _onset_fix_notes(onsets: dict[str, list[tuple[str, float]]]) -> list[str]:
    """Notes on tasks whose onset a later version of the dataset corrected."""
    notes = []
    for task, (old, new, version) in ONSET_FIXES.items():
        runs = onsets.get(task, [])
        stale = [name for name, onset in runs if onset == old]
        if stale:
            notes.append(
                f"{task}: {len(stale)} run(s) say the audio starts at {old:g} s ("
                f"{', '.join(stale[:4])}); ds002345 corrected it to {new:g} s in version "
                f"{version} (CHANGES): the sheet takes the files' {old:g} s; update the dataset "
                f"(datalad update) to use {new:g} s"
            )
        elif runs:
            notes.append(
                f"{task}: the audio starts at {new:g} s, as ds002345 corrected it in version "
                f"{version} (copies fetched before say {old:g} s)"
            )
    return notes


def narratives(
    root: str | os.PathLike,
    *,
    tasks: Iterable[str] | None = None,
    space: str = "MNI152NLin2009cAsym",
    fmriprep_dir: str = "derivatives/fmriprep",
    scan_exclude: bool = True,
    tr_overrides_header: bool = False,
) -> imp.Import:
    """The runs sheet of Narratives (ds002345 with its fMRIPrep 20.0.5 derivatives).

    Runs: ``derivatives/fmriprep/sub-*/func/sub-*_task-<task>[_run-N]_space-<space>_res-native
    _desc-preproc_bold.nii.gz`` with ``..._desc-confounds_regressors.tsv``; the brain mask is
    fMRIPrep's own where present, else the task's (``derivatives/afni-nosmooth/tpl-<space>/``).
    Story: the audio file named by the story row of the run's ``events.tsv`` (milkyway's
    condition selects it: ``milkywayoriginal``, ``milkywayvodka``, ``milkywaysynonyms``); word
    timings ``stimuli/gentle/<story>/align.json``; offset = minus the audio onset, the first
    row's onset. Runs in ``code/scan_exclude.json`` are excluded (a missing file is an error
    unless ``scan_exclude`` is False), as are runs whose story row is not where the task's other
    runs have it, and tasks without one transcript (schema). TR: the image header's, checked
    against the sidecars (:class:`brainshape.importers.TRs`).
    """
    root = Path(root)
    folder = root / fmriprep_dir
    fetch = "fetch them with datalad get derivatives/fmriprep"
    imp.require_dir(folder, "Narratives' fMRIPrep derivatives", fetch)
    bolds = imp.check_tasks(tasks, imp.scan_fmriprep(folder, space, None), folder)
    excludes = scan_excludes(root, scan_exclude)
    numbers, delays = imp.run_numbers(bolds), _Delays(root)
    trs = imp.TRs(root, tr_overrides_header, "narratives")
    rows, notes, onsets = [], [], {}
    for bold in bolds:
        row = imp.fmriprep_row(bold, root, numbers[bold.path], trs)
        events_path = root / bold.source_dir / f"{bold.stem}_events.tsv"
        events = imp.read_events(events_path)
        story, reason = _story(root, bold, events)
        if not row["mask"]:
            mask = _task_mask(root, space, bold.entities["task"])
            row["mask"] = imp.relative(mask, root) if mask else None
        row.update(story=story, words=f"stimuli/gentle/{story}/align.json", words_format="gentle")
        listed = [p for p in excludes if bold.stem == p or bold.stem.startswith(p + "_")]
        onset = imp.onset_of(events_path, events["onset"].iloc[0])
        if onset is None and not (listed or reason):
            raise BrainshapeError(
                f"{events_path}: the first row's onset is n/a, so the audio onset of the run is "
                "unknown; write it into the file"
            )
        row["offset"] = imp.number(-onset) if onset is not None else None
        onsets.setdefault(bold.entities["task"], []).append((bold.stem, onset))
        moved = None if reason else _moved_story(bold, events_path, events, delays, listed, notes)
        if listed:
            imp.exclude(row, f"listed in {SCAN_EXCLUDE} ({listed[0]})")
        elif reason or moved:
            imp.exclude(row, reason or moved)
        else:
            row = imp.complete(row, root)
        rows.append(row)
    source = f"runs sheet of {root}"
    runs = imp.table(rows, source)
    imp.check_files(runs, root, source)
    if not scan_exclude:
        notes.append(f"{SCAN_EXCLUDE} not read (--without-scan-exclude): it excludes no run")
    notes += trs.notes() + _onset_fix_notes(onsets)
    return imp.Import("narratives", root, runs, imp.found_lines(runs), notes)


def _moved_story(bold, path: Path, events, delays: _Delays, listed, notes) -> str | None:
    """The reason to exclude a run whose story row is not where the task's other runs have it
    (its first row's onset is then not the audio onset), noted in ``notes``; None otherwise."""
    delay = _story_delay(path, events)
    usual, count, total = delays(bold.entities["task"])
    if delay is None or usual is None or delay == usual:
        return None
    task = bold.entities["task"]
    notes.append(
        f"{bold.stem}: the story row is {delay:g} s after the first row of its events.tsv, "
        f"where {count} of the {total} {task} runs have {usual:g} s"
        + (f" (listed in {SCAN_EXCLUDE})" if listed else " (excluded)")
    )
    return (
        f"the story row of its events.tsv is {delay:g} s after the first row, not {usual:g} s "
        f"as in the task's other runs: the first row's onset is not the audio onset"
    )
