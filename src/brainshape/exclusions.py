"""Runs the quality control excludes from the stages after fmri (``fmri.qc.exclude``).

The QC table (``brainshape.qc``) flags runs; the checks named in ``fmri.qc.exclude`` (none by
default: flags only) turn a flag into an exclusion. An exclusion acts where the subject folders
are read, not in the fmri stage, so that the fmri jobs and the QC job that reads them never
depend on it (the QC table always describes every run of the runs sheet, and an exclusion
cannot undo itself). The encode, baseline and ceiling jobs drop the excluded stories of each
subject; the shape stage leaves a subject with an excluded run out of its group brain clouds,
which are made of subjects with the same runs. A module of its own, apart from ``brainshape.qc``,
so that a change to how runs are measured does not rerun every job that applies exclusions.

How an exclusion reaches those jobs (``workflow/rules/common.smk``): while the workflow is
planned, the QC table's measures are flagged again under the current thresholds
(``qc.planned_exclusions``), and each job's params hold the exclusions of its own subjects
(``{subject: {story: reason}}``; empty, as without ``fmri.qc.exclude``, when none of its
subjects has one).
The job applies its params, so a changed threshold or ``fmri.qc.exclude`` reruns exactly the
jobs it touches, the dry run shows them (``Params have changed``), and what a job computed
always matches what its params record. The jobs do not wait for the QC job: a table that does
not exist yet (a fresh study) or that the QC job rewrites in the same run (changed data) acts
on the next run. Every exclusion is logged by the job that applies it and listed in the
report's QC page.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from brainshape.errors import BrainshapeError
from brainshape.io import save_json
from brainshape.subjects import SubjectData, subject_label

log = logging.getLogger("brainshape")

#: Subject -> story -> why the QC excludes that subject's run(s) of the story.
Exclusions = dict[str, dict[str, str]]


def excluded_runs(table: pd.DataFrame, checks: Sequence[str]) -> Exclusions:
    """The runs of a QC table flagged by one of ``checks``: subject -> story -> reason (the
    flags and reasons of every run of the story, repeats being averaged into one)."""
    chosen = set(checks)
    out: Exclusions = {}
    if not chosen:
        return out
    for row in table.itertuples(index=False):
        flags = [f for f in str(row.failed).split(";") if f]
        hit = [f for f in flags if f in chosen]
        if hit:
            text = f"{', '.join(hit)}: {row.reason}"
            story = out.setdefault(str(row.subject), {})
            story[str(row.story)] = "; ".join(filter(None, [story.get(str(row.story)), text]))
    return out


def decided(table: str | Path, record: str | Path, decide, *, main: bool) -> Exclusions:
    """The QC exclusions of one dataset as this Snakemake process must apply them.

    The process that plans the run (``main``) decides them from the QC table (``decide(table)``;
    none where the table is not written yet) and records that decision at ``record`` (JSON,
    written atomically). A job's own Snakemake process (a cluster job) reads the record rather
    than the table: when a changed threshold reruns the QC job in the same run as the jobs it
    excludes from, Snakemake removes the table before the QC job writes it again, and a job
    that read it in that moment would apply no exclusion at all.
    """
    table, record = Path(table), Path(record)
    if not main and record.is_file():
        return json.loads(record.read_text())
    found = decide(table) if table.is_file() else {}
    if main:
        record.parent.mkdir(parents=True, exist_ok=True)
        save_json(record, found)
    return found


def for_subjects(exclusions: Mapping, subjects: Iterable[str]) -> dict[str, dict[str, str]]:
    """The exclusions of ``subjects`` only (a job's params: what its output depends on)."""
    return {s: dict(exclusions[s]) for s in subjects if s in exclusions}


def apply(subjects: Mapping[str, SubjectData], exclusions: Mapping) -> dict[str, SubjectData]:
    """``subjects`` (label -> :class:`SubjectData`) without the stories ``exclusions`` (a job's
    ``qc`` params: subject -> story -> reason) names, each logged; a subject left with no story
    is dropped (logged); none left is an error."""
    out = {}
    for sub, data in subjects.items():
        gone = {s: why for s, why in exclusions.get(sub, {}).items() if s in data.runs}
        for story, why in gone.items():
            log.warning("QC excludes %s story %s (fmri.qc.exclude): %s", subject_label(sub),
                        story, why)  # fmt: skip
        if gone and len(gone) == len(data.runs):
            log.warning("%s has no run left after the QC exclusions", subject_label(sub))
            continue
        out[sub] = replace(
            data,
            data={s: a for s, a in data.data.items() if s not in gone},
            runs={s: r for s, r in data.runs.items() if s not in gone},
        )
    if not out:
        raise BrainshapeError(
            f"the QC excludes every run of {', '.join(map(subject_label, subjects))} "
            "(fmri.qc.exclude); check the QC page of the report, and remove these subjects "
            "from the study or the check from fmri.qc.exclude"
        )
    return out


def keep_dirs(fmri_dirs: Sequence, exclusions: Mapping) -> list:
    """The subject folders (``.../sub-<label>``) of subjects without a run ``exclusions`` (a
    job's ``qc`` params) names, the others logged: the shape stage's group clouds are made of
    subjects with the same runs."""
    kept = []
    for d in fmri_dirs:
        sub = Path(d).name.removeprefix("sub-")
        if exclusions.get(sub):
            log.warning("QC excludes %s from the group brain clouds (fmri.qc.exclude): %s",
                        subject_label(sub), "; ".join(exclusions[sub].values()))  # fmt: skip
        else:
            kept.append(d)
    if not kept:
        raise BrainshapeError(
            "the QC excludes a run of every subject (fmri.qc.exclude), which leaves no subject "
            "for the group brain clouds; check the QC page of the report"
        )
    return kept
