"""Runs the quality control excludes from the stages after fmri (``fmri.qc.exclude``).

The QC table (``brainshape.qc``) flags runs; the checks named in ``fmri.qc.exclude`` (none by
default: flags only) turn a flag into an exclusion. An exclusion acts where the subject folders
are read, not in the fmri stage, so that the fmri jobs and the QC job that reads them never
depend on it (the QC table always describes every run of the runs sheet, and an exclusion
cannot undo itself). The encode, baseline and ceiling jobs drop the excluded stories of each
subject; the shape stage leaves a subject with an excluded run out of its group brain clouds,
which are made of subjects with the same runs. A module of its own, apart from ``brainshape.qc``,
so that a change to how runs are measured does not rerun every job that applies exclusions.

How an exclusion reaches those jobs (``workflow/rules/common.smk``): with ``fmri.qc.exclude``
set, each of them takes the QC table as an input marked ``ancient`` (it waits for the QC job of
its dataset, but a rewritten table does not rerun it by itself) and reads the exclusions from it
when it runs; its params hold the exclusions of its own subjects as the table said when the
workflow was planned, so that a changed decision reruns exactly the jobs it touches, and the dry
run shows them (``Params have changed``). Every exclusion is logged by the job that applies it
and listed in the report's QC page.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from brainshape.errors import BrainshapeError
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


def read_exclusions(path: str | os.PathLike, checks: Sequence[str]) -> Exclusions:
    """:func:`excluded_runs` of the QC table at ``path``."""
    path = Path(path)
    try:
        table = pd.read_parquet(path, columns=["subject", "story", "failed", "reason"])
    except (OSError, ValueError) as error:
        raise BrainshapeError(
            f"cannot read the QC table {path} ({error}); rerun rule qc for its dataset"
        ) from None
    return excluded_runs(table, checks)


def for_subjects(exclusions: Mapping, subjects: Iterable[str]) -> dict[str, dict[str, str]]:
    """The exclusions of ``subjects`` only (a job's params: what its output depends on)."""
    return {s: dict(exclusions[s]) for s in subjects if s in exclusions}


def job_exclusions(
    path: str | os.PathLike | None, params: Mapping, subjects: Iterable[str]
) -> Exclusions:
    """The exclusions a job applies to ``subjects``: from the QC table at ``path`` as it is when
    the job runs, with the checks of ``params`` (a job's ``qc`` params: ``exclude`` and the
    ``runs`` excluded when the workflow was planned; empty: nothing is excluded). Where the
    table changed since (its QC job ran in this same run), that is logged: the job applies the
    table it reads, and the next run reruns it once so that its params record what it used."""
    if not params:
        return {}
    current = for_subjects(read_exclusions(path, params["exclude"]), subjects)
    if current != params["runs"]:
        log.warning(
            "the QC table %s changed since the workflow was planned: this job applies its "
            "exclusions as they are now; the next snakemake run reruns it once to record them",
            path,
        )
    return current


def apply(subjects: Mapping[str, SubjectData], exclusions: Mapping) -> dict[str, SubjectData]:
    """``subjects`` (label -> :class:`SubjectData`) without their excluded stories, each logged;
    a subject left with no story is dropped (logged); none left is an error."""
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
    """The subject folders (``.../sub-<label>``) of subjects without an excluded run, the
    others logged: the shape stage's group clouds are made of subjects with the same runs."""
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
