"""Importers: the runs sheet of a published dataset, read from its folder as published.

One function per dataset returns a :class:`Import`: the runs table (the columns of
:func:`brainshape.sheet.columns`, validated by :func:`brainshape.sheet.rows_from_table`) and a
report of what it found, what it excluded and why, and where the dataset disagrees with itself.
Paths in the table are relative to the dataset root (the config's ``bids_root``).

The clocks (``offset`` is the word time at the start of the response file's first row; row j
is centred at ``offset + (j + 0.5) * tr``; see docs/datasets.md):

- :func:`ds003020` (LeBel et al. 2023): preprocessed HDF5 responses with the first and last 10
  volumes removed; the TextGrid clock starts at the audio, 10 s into the scan; offset
  ``10 * 2.0 - 10 = 10`` s.
- :func:`narratives` (Nastase et al. 2021, ds002345): fMRIPrep BOLD; the Gentle clock starts
  at the audio, the first row's onset of the run's ``events.tsv``; offset ``-onset``.
- :func:`alice` (ds002322): SPM-preprocessed BOLD with the first 10 volumes discarded; the
  annotations' clock starts at the audio (``events.tsv``); offset ``10 * tr - onset``.
- :func:`fmriprep`: any BIDS dataset with fMRIPrep derivatives (offset ``0``, or ``-onset`` of
  the events file).

Bad input stops with one line naming the file and the fix; nothing is written by an import.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from brainshape import sheet
from brainshape.errors import BrainshapeError

DATASETS = ("ds003020", "narratives", "alice", "fmriprep")

#: ds003020: volumes removed at each end of every run, the TR, and the audio onset in the scan.
LEBEL_TRIM = 10
LEBEL_TR = 2.0
LEBEL_AUDIO_ONSET = 10.0
LEBEL_TEST_STORY = "wheretheressmoke"

#: Alice (ds002322): volumes discarded at the start of the SPM derivatives.
ALICE_DISCARDED = 10

#: Narratives tasks whose run holds several stimuli: no single transcript can be aligned.
NARRATIVES_UNSUPPORTED = {"schema": "the run holds several stories and movie clips"}

#: Narratives: where the per-task brain masks live when fMRIPrep's own is absent.
NARRATIVES_TASK_MASKS = (
    "derivatives/afni-nosmooth/tpl-{space}/tpl-{space}_res-{task}_desc-brain_mask.nii.gz",
    "derivatives/afni-smooth/tpl-{space}/tpl-{space}_res-{task}_desc-brain_mask.nii.gz",
)

#: Two TRs differing by less than this (s) agree.
TR_TOL = 1e-3


@dataclass
class Import:
    """The runs sheet of a dataset and what its importer saw.

    ``runs``: the validated table (one row per subject, story and run; excluded rows kept with
    their reason). ``found``: one line per subject. ``notes``: disagreements within the dataset
    and decisions taken about them.
    """

    dataset: str
    root: Path
    runs: pd.DataFrame
    found: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        """What was found, what was excluded and why, and the notes, as printable lines."""
        runs = self.runs
        kept = runs[~runs.exclude]
        lines = [
            f"{self.dataset} at {self.root}: {kept.subject.nunique()} subjects, "
            f"{kept.story.nunique()} stories, {len(kept)} runs kept "
            f"({int((kept.split == 'test').sum())} test), {int(runs.exclude.sum())} excluded"
        ]
        lines += ["found:"] + [f"  {line}" for line in self.found]
        excluded = runs[runs.exclude]
        if len(excluded):
            lines.append("excluded:")
            for row in excluded.itertuples():
                lines.append(f"  {row.subject} {row.story} run {row.run}: {row.reason}")
        if self.notes:
            lines += ["notes:"] + [f"  {line}" for line in self.notes]
        return "\n".join(lines) + "\n"


# --- shared -------------------------------------------------------------------------------------


def _rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (POSIX separators), as the sheet stores it."""
    return Path(os.path.relpath(path, root)).as_posix()


def _number(value: float) -> str:
    """A float as the sheet stores it: the shortest text that reads back as the same value."""
    return repr(float(value))


def _require_dir(path: Path, what: str, fix: str) -> None:
    if not path.is_dir():
        raise BrainshapeError(f"{path} does not exist; {what} is missing: {fix}")


def _table(rows: Sequence[Mapping[str, Any]], source: str) -> pd.DataFrame:
    """Rows (dicts; None for no value) validated as a runs sheet, sorted by subject, story, run."""
    if not rows:
        raise BrainshapeError(f"{source}: no runs found; check that the folder is the dataset")
    table = pd.DataFrame(list(rows)).astype(object)
    table = table.where(table.notna(), "")
    table = table.map(lambda v: "" if v is None else str(v))
    table = table.sort_values(["subject", "story", "run"], kind="stable").reset_index(drop=True)
    runs = sheet.rows_from_table(table, source)
    if runs.exclude.all():
        raise BrainshapeError(
            f"{source}: every run is excluded ({runs.reason.iloc[0]}, ...); nothing is left to "
            "analyse: fix the first reason, or check the options"
        )
    return runs


def check_files(runs: pd.DataFrame, root: str | os.PathLike, source: str) -> None:
    """Raise unless every file a kept row of ``runs`` names exists (paths relative to ``root``).

    A git-annex link whose content was never fetched counts as missing; the message names the
    ``datalad get`` that fetches it.
    """
    root = Path(root)
    for i, row in runs.iterrows():
        if row.exclude:
            continue
        for column in sheet.PATH_COLUMNS:
            value = row[column]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            path = Path(value) if Path(value).is_absolute() else root / value
            if not path.is_file():
                raise BrainshapeError(
                    f"{source}, row {i + 1} (subject {row.subject}, story {row.story}): "
                    f"{column} {path} does not exist; fetch it (datalad get {value}) or fix "
                    "the row"
                )


def _first_onset(events: Path) -> float | None:
    """Onset (s) of the first row of a BIDS events file; None where it is n/a."""
    if not events.is_file():
        raise BrainshapeError(
            f"{events} does not exist; the audio onset of the run is the onset of its first "
            "row: fetch the file (datalad get) or restore it"
        )
    table = pd.read_csv(events, sep="\t", dtype=str, keep_default_na=False)
    if "onset" not in table.columns or table.empty:
        raise BrainshapeError(
            f"{events} has no onset column or no row; the audio onset of the run is the onset "
            "of its first row: fix the file"
        )
    text = table["onset"].iloc[0].strip()
    if text.lower() in ("n/a", "", "nan"):
        return None
    try:
        onset = float(text)
    except ValueError:
        raise BrainshapeError(
            f"{events}: the first row's onset is {text!r}, not a number of seconds; fix the file"
        ) from None
    if not math.isfinite(onset):
        raise BrainshapeError(f"{events}: the first row's onset is {text!r}; fix the file")
    return onset


def _header(path: Path) -> tuple[tuple[int, ...], tuple[float, ...], float]:
    """(shape, rounded affine, TR in s; 0 when unknown) of a NIfTI image, from its header."""
    import nibabel as nib

    try:
        img = nib.load(path)
    except Exception as error:  # nibabel raises many kinds for a broken or missing file
        raise BrainshapeError(
            f"cannot read {path} as NIfTI ({error}); fetch it (datalad get) or re-download it"
        ) from None
    zooms = img.header.get_zooms()
    tr = float(zooms[3]) if len(zooms) > 3 else 0.0
    unit = img.header.get_xyzt_units()[1]
    tr = tr / 1000.0 if unit == "msec" else tr / 1e6 if unit == "usec" else tr
    affine = tuple(round(float(v), 3) for v in img.affine[:3].ravel())
    return tuple(int(n) for n in img.shape), affine, tr


def _sidecar_tr(candidates: Iterable[Path]) -> tuple[float | None, Path | None]:
    """RepetitionTime of the first of ``candidates`` (JSON sidecars) that gives one."""
    for path in candidates:
        if path.is_file():
            try:
                value = json.loads(path.read_text()).get("RepetitionTime")
            except (json.JSONDecodeError, AttributeError):
                raise BrainshapeError(f"{path} is not a JSON object; fix the sidecar") from None
            if isinstance(value, int | float):
                return float(value), path
    return None, None


def _pick_tr(
    header_tr: float,
    sidecar: tuple[float | None, Path | None],
    what: str,
    root: Path,
    notes: list[str],
    bold: Path,
) -> float:
    """The TR the data say (the image header), the sidecar's where the header has none; a
    disagreement goes into ``notes``."""
    side, side_path = sidecar
    if header_tr > 0:
        if side is not None and abs(side - header_tr) > TR_TOL:
            notes.append(
                f"{what}: {_rel(side_path, root)} says RepetitionTime {side:g} s, the image "
                f"header {header_tr:g} s; the sheet takes the data's {header_tr:g} s"
            )
        return header_tr
    if side is None:
        raise BrainshapeError(
            f"{bold}: neither the image header nor a BIDS sidecar (RepetitionTime) gives the "
            "TR; add RepetitionTime to the run's _bold.json"
        )
    return side


# --- ds003020 -----------------------------------------------------------------------------------


def _hdf5_shape(path: Path, key: str, repeats_key: str, rel: str) -> tuple[tuple, int | None]:
    """(shape of ``key``, number of repeats in ``repeats_key`` or None) of an HDF5 file."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise BrainshapeError(
            f"cannot open {path} as HDF5 ({error}); if it is a git-annex link, fetch it "
            f"(datalad get {rel})"
        ) from None
    with handle:
        if key not in handle or not isinstance(handle[key], h5py.Dataset):
            held = ", ".join(sorted(handle.keys())) or "nothing"
            raise BrainshapeError(
                f"{path} has no dataset '{key}' (it holds: {held}); ds003020's responses are "
                f"in '{key}': re-fetch the file (datalad get {rel})"
            )
        shape = handle[key].shape
        if len(shape) != 2:
            raise BrainshapeError(
                f"{path}: dataset '{key}' has shape {shape}, not rows x voxels; re-fetch the "
                f"file (datalad get {rel})"
            )
        repeats = None
        if repeats_key in handle:
            rshape = handle[repeats_key].shape
            if len(rshape) != 3 or rshape[1:] != shape:
                raise BrainshapeError(
                    f"{path}: dataset '{repeats_key}' has shape {rshape}, not repeats x "
                    f"{shape[0]} x {shape[1]} like '{key}'; re-fetch the file (datalad get {rel})"
                )
            repeats = int(rshape[0])
    return shape, repeats


def _respdict(derivative: Path) -> dict[str, int]:
    path = derivative / "respdict.json"
    if not path.is_file():
        raise BrainshapeError(
            f"{path} does not exist; it gives each story's volume count: fetch it (datalad get "
            "derivative/respdict.json)"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BrainshapeError(f"{path} is not valid JSON ({error}); re-fetch it") from None
    if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
        raise BrainshapeError(f"{path} must map each story to its number of volumes; re-fetch it")
    return data


def _lebel_row(
    hf5: Path,
    root: Path,
    subject: str,
    respdict: Mapping[str, int],
    test_story: str | None,
    labels: str | None,
) -> tuple[dict, int | None]:
    story, rel = hf5.stem, _rel(hf5, root)
    if story not in respdict:
        raise BrainshapeError(
            f"{hf5}: story {story} is not in derivative/respdict.json, so its rows cannot be "
            "checked; re-fetch respdict.json (datalad get derivative/respdict.json)"
        )
    shape, repeats = _hdf5_shape(hf5, "data", "individual_repeats", rel)
    expected = respdict[story] - 2 * LEBEL_TRIM
    if shape[0] != expected:
        raise BrainshapeError(
            f"{hf5}: dataset 'data' has {shape[0]} rows, but derivative/respdict.json gives "
            f"{story} {respdict[story]} volumes, so {expected} rows are expected (the first and "
            f"last {LEBEL_TRIM} removed); re-fetch the file (datalad get {rel}) or respdict.json"
        )
    row = {
        "subject": subject,
        "story": story,
        "run": 1,
        "response": rel,
        "format": "hdf5",
        "key": "data",
        "repeats_key": "individual_repeats" if repeats else None,
        "labels": labels.format(subject=subject) if labels else None,
        "words": f"derivative/TextGrids/{story}.TextGrid",
        "words_format": "textgrid",
        "tier": "2",  # the reference code takes the second tier (index 1)
        "offset": _number(LEBEL_TRIM * LEBEL_TR - LEBEL_AUDIO_ONSET),
        "tr": _number(LEBEL_TR),
        "removed_start": LEBEL_TRIM,
        "removed_end": LEBEL_TRIM,
        "split": "test" if story == test_story else "train",
    }
    return row, repeats


def ds003020(
    root: str | os.PathLike,
    *,
    test_story: str | None = LEBEL_TEST_STORY,
    labels: str | None = None,
) -> Import:
    """The runs sheet of ds003020 (LeBel et al. 2023) as published.

    Reads ``derivative/preprocessed_data/<subject>/<story>.hf5`` (dataset ``data``, rows =
    ``derivative/respdict.json[story] - 20``), word timings ``derivative/TextGrids/<story>
    .TextGrid`` (words tier: the second), ``test_story`` as the fixed test set (its ``data`` is
    the average over repeats; ``individual_repeats``, where a copy holds it, goes into
    ``repeats_key``). ``labels``: a per-subject column table, a path relative to the root
    with ``{subject}`` (columns column, roi, hemisphere); none makes each response one target
    set. Subjects keep their own story sets.
    """
    root = Path(root)
    derivative = root / "derivative"
    _require_dir(
        derivative,
        "ds003020's derivative folder (singular)",
        "fetch it with datalad get derivative, or give the dataset root",
    )
    respdict = _respdict(derivative)
    data_dir = derivative / "preprocessed_data"
    _require_dir(
        data_dir,
        "the preprocessed responses",
        "fetch them with datalad get derivative/preprocessed_data",
    )
    rows, found = [], []
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        stories = []
        for hf5 in sorted(folder.glob("*.hf5")):
            row, repeats = _lebel_row(hf5, root, folder.name, respdict, test_story, labels)
            rows.append(row)
            tag = f" [test, {repeats} repeats]" if repeats else " [test]"
            stories.append(hf5.stem + (tag if row["split"] == "test" else ""))
        if stories:
            found.append(f"{folder.name}: {len(stories)} stories ({', '.join(stories)})")
    source = f"runs sheet of {root}"
    runs = _table(rows, source)
    check_files(runs, root, source)
    notes = []
    if test_story and not (runs.split == "test").any():
        notes.append(f"no subject has the test story {test_story}: every story is train")
    unheard = sorted(set(respdict) - set(runs.story))
    if unheard:
        notes.append(
            f"{len(unheard)} stories of respdict.json have no response file here (not fetched, "
            f"or not heard by these subjects): {', '.join(unheard)}"
        )
    return Import("ds003020", root, runs, found, notes)


# --- BIDS + fMRIPrep ----------------------------------------------------------------------------

_ENTITY = re.compile(r"^([a-zA-Z]+)-([a-zA-Z0-9.+]+)$")


@dataclass(frozen=True)
class _Bold:
    """One preprocessed BOLD image of an fMRIPrep derivatives folder."""

    path: Path
    entities: dict[str, str]

    @property
    def stem(self) -> str:
        """The run's name without derivative entities: ``sub-01_task-x_run-1``."""
        return self.path.name.split("_space-")[0]

    @property
    def source_dir(self) -> Path:
        """The run's folder in the raw dataset, relative to the root: ``sub-01[/ses-1]/func``."""
        parts = [f"sub-{self.entities['sub']}"]
        if "ses" in self.entities:
            parts.append(f"ses-{self.entities['ses']}")
        return Path(*parts, "func")

    def key(self) -> tuple[str, str, str, str]:
        e = self.entities
        return e["sub"], e["task"], e.get("ses", ""), e.get("run", "")


def _entities(name: str) -> dict[str, str] | None:
    """BIDS entities of a file name ending in ``_bold.nii[.gz]``; None for other names."""
    match = re.match(r"^(.*)_bold\.nii(?:\.gz)?$", name)
    if not match:
        return None
    out = {}
    for part in match.group(1).split("_"):
        entity = _ENTITY.match(part)
        if entity is None:
            return None
        out[entity.group(1)] = entity.group(2)
    return out if "sub" in out and "task" in out else None


def _scan_fmriprep(
    fmriprep: Path, space: str | None, res: str | None, desc: str = "preproc"
) -> list[_Bold]:
    """Every preprocessed BOLD image (``desc-<desc>``) of an fMRIPrep folder, in ``space`` and
    ``res`` when given; one per run, else an error asking which."""
    found = []
    for path in sorted(fmriprep.glob("sub-*/**/func/*_bold.nii*")):
        entities = _entities(path.name)
        if not entities or entities.get("desc") != desc or "space" not in entities:
            continue
        if space is not None and entities["space"] != space:
            continue
        if res is not None and entities.get("res") != res:
            continue
        found.append(_Bold(path, entities))
    runs: dict[tuple, list[_Bold]] = {}
    for bold in found:
        runs.setdefault(bold.key(), []).append(bold)
    for same in runs.values():
        if len(same) > 1:
            names = ", ".join(b.path.name for b in same)
            raise BrainshapeError(
                f"{same[0].path.parent}: one run has several preprocessed images ({names}); "
                "choose one with --space and --res"
            )
    return found


def _confounds(bold: _Bold) -> Path | None:
    for desc in ("confounds_timeseries", "confounds_regressors"):
        path = bold.path.parent / f"{bold.stem}_desc-{desc}.tsv"
        if path.is_file():
            return path
    return None


def _mask(bold: _Bold) -> Path | None:
    name = re.sub(
        r"_desc-[a-zA-Z0-9]+_bold\.nii(\.gz)?$", r"_desc-brain_mask.nii\1", bold.path.name
    )
    path = bold.path.parent / name
    return path if path.is_file() else None


def _bold_sidecars(bold: _Bold, root: Path) -> list[Path]:
    """The JSON sidecars that may give the run's RepetitionTime, most specific first."""
    e = bold.entities
    session = f"_ses-{e['ses']}" if "ses" in e else ""
    raw = root / bold.source_dir
    return [
        raw / f"{bold.stem}_bold.json",
        raw.parent / f"sub-{e['sub']}{session}_task-{e['task']}_bold.json",
        root / f"task-{e['task']}_bold.json",
        bold.path.with_name(re.sub(r"\.nii(\.gz)?$", ".json", bold.path.name)),
    ]


def _run_numbers(bolds: Sequence[_Bold]) -> dict[Path, int]:
    """Run number of each image within its subject and task: 1, 2, ... in session, run order."""
    groups: dict[tuple[str, str], list[_Bold]] = {}
    for bold in bolds:
        groups.setdefault((bold.entities["sub"], bold.entities["task"]), []).append(bold)
    out = {}
    for same in groups.values():
        same = sorted(
            same, key=lambda b: (b.entities.get("ses", ""), int(b.entities.get("run", 0)))
        )
        out.update({b.path: i for i, b in enumerate(same, start=1)})
    return out


def _fmriprep_row(bold: _Bold, root: Path, run: int, notes: list[str]) -> dict:
    """The sheet row of one fMRIPrep run, before its story, words and offset are known."""
    shape, _, header_tr = _header(bold.path)
    what = f"{bold.stem}"
    tr = _pick_tr(header_tr, _sidecar_tr(_bold_sidecars(bold, root)), what, root, notes, bold.path)
    confounds, mask = _confounds(bold), _mask(bold)
    return {
        "subject": bold.entities["sub"],
        "run": run,
        "response": _rel(bold.path, root),
        "format": "fmriprep",
        "mask": _rel(mask, root) if mask else None,
        "confounds": _rel(confounds, root) if confounds else None,
        "tr": _number(tr),
    }


def _exclude(row: dict, reason: str) -> dict:
    row.update(exclude="true", reason=reason)
    return row


def _check_tasks(tasks: Iterable[str] | None, bolds: Sequence[_Bold], where: Path) -> list[_Bold]:
    present = sorted({b.entities["task"] for b in bolds})
    if tasks is None:
        return list(bolds)
    unknown = sorted(set(tasks) - set(present))
    if unknown:
        raise BrainshapeError(
            f"{where} has no run of task(s) {', '.join(unknown)}; its tasks are "
            f"{', '.join(present) or 'none'}: fix --task"
        )
    return [b for b in bolds if b.entities["task"] in set(tasks)]


def _found_lines(runs: pd.DataFrame) -> list[str]:
    lines = []
    for subject, rows in runs[~runs.exclude].groupby("subject", sort=True):
        stories = [f"{r.story}" + (f" run {r.run}" if r.run > 1 else "") for r in rows.itertuples()]
        runs_word = "run" if len(rows) == 1 else "runs"
        lines.append(f"{subject}: {len(rows)} {runs_word} ({', '.join(stories)})")
    return lines


def fmriprep(
    root: str | os.PathLike,
    *,
    fmriprep_dir: str = "derivatives/fmriprep",
    space: str | None = None,
    res: str | None = None,
    tasks: Iterable[str] | None = None,
    words: str = "stimuli/{story}/align.json",
    words_format: str = "gentle",
    tier: str = "words",
    onset_from_events: bool = False,
) -> Import:
    """The runs sheet of any BIDS dataset with fMRIPrep derivatives.

    Every ``*_desc-preproc_bold.nii[.gz]`` under ``fmriprep_dir`` (with any ``ses-``, ``run-``,
    ``res-`` and other entities; ``space``/``res`` choose where a run has several) is a run of
    story = task; runs of one subject and task are numbered 1, 2, ... in session and run order.
    Confounds: ``desc-confounds_timeseries.tsv`` or ``desc-confounds_regressors.tsv``; mask:
    ``desc-brain_mask``; TR from the image header (the sidecar where the header has none).
    ``words`` is the word-timing file per story, relative to the root. The offset is 0 (word
    time 0 = the start of the run) or, with ``onset_from_events``, minus the first row's onset
    of the run's ``events.tsv``. Runs lacking a mask, confounds or word timings are excluded
    with the reason.
    """
    root = Path(root)
    folder = root / fmriprep_dir
    _require_dir(folder, "the fMRIPrep derivatives", "fetch them or give --fmriprep-dir")
    bolds = _check_tasks(tasks, _scan_fmriprep(folder, space, res), folder)
    numbers, rows, notes = _run_numbers(bolds), [], []
    for bold in bolds:
        row = _fmriprep_row(bold, root, numbers[bold.path], notes)
        story = bold.entities["task"]
        row.update(
            story=story,
            words=words.format(story=story, task=story),
            words_format=words_format,
            tier=tier,
        )
        if onset_from_events:
            events = root / bold.source_dir / f"{bold.stem}_events.tsv"
            onset = _first_onset(events)
            if onset is None:
                raise BrainshapeError(
                    f"{events}: the first row's onset is n/a, so the audio onset of the run is "
                    "unknown; write it into the file"
                )
            row["offset"] = _number(-onset)
        rows.append(_complete(row, root))
    source = f"runs sheet of {root}"
    runs = _table(rows, source)
    check_files(runs, root, source)
    return Import("fmriprep", root, runs, _found_lines(runs), notes)


def _complete(row: dict, root: Path) -> dict:
    """``row``, excluded with the reason where a file it needs is missing."""
    if not row.get("mask"):
        return _exclude(row, f"no brain mask beside {row['response']}")
    if row["format"] == "fmriprep" and not row.get("confounds"):
        return _exclude(
            row,
            f"no confounds table (desc-confounds_timeseries.tsv or "
            f"desc-confounds_regressors.tsv) beside {row['response']}",
        )
    if not (root / row["words"]).is_file():
        return _exclude(row, f"no word timings {row['words']}")
    return row


# --- Narratives ---------------------------------------------------------------------------------


def _scan_excludes(root: Path) -> dict[str, str]:
    """Scan-name prefix -> task of ``code/scan_exclude.json`` (task -> subject -> prefixes)."""
    path = root / "code" / "scan_exclude.json"
    if not path.is_file():
        return {}
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


def _conditions(root: Path, bold: _Bold) -> str | None:
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


def _narratives_story(root: Path, bold: _Bold) -> tuple[str, str | None]:
    """(story id, reason to exclude or None): milkyway's condition picks its transcript."""
    task = bold.entities["task"]
    if task in NARRATIVES_UNSUPPORTED:
        return task, f"{NARRATIVES_UNSUPPORTED[task]} (task {task})"
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
    for pattern in NARRATIVES_TASK_MASKS:
        path = root / pattern.format(space=space, task=task)
        if path.is_file():
            return path
    return None


def narratives(
    root: str | os.PathLike,
    *,
    tasks: Iterable[str] | None = None,
    space: str = "MNI152NLin2009cAsym",
    fmriprep_dir: str = "derivatives/fmriprep",
) -> Import:
    """The runs sheet of Narratives (ds002345 with its fMRIPrep 20.0.5 derivatives).

    Runs: ``derivatives/fmriprep/sub-*/func/sub-*_task-<task>[_run-N]_space-<space>_res-native
    _desc-preproc_bold.nii.gz`` with ``..._desc-confounds_regressors.tsv``; the brain mask is
    fMRIPrep's own where present, else the task's (``derivatives/afni-nosmooth/tpl-<space>/``).
    Story = task, except milkyway, whose condition selects the transcript (``milkywayoriginal``,
    ``milkywayvodka``, ``milkywaysynonyms``). Word timings ``stimuli/gentle/<story>/align.json``;
    offset = minus the audio onset, the first row's onset of the run's ``events.tsv``. Runs in
    ``code/scan_exclude.json`` are excluded, as are tasks without one transcript (schema). TR:
    the image header's; sidecars that disagree are reported.
    """
    root = Path(root)
    folder = root / fmriprep_dir
    _require_dir(
        folder,
        "Narratives' fMRIPrep derivatives",
        "fetch them with datalad get derivatives/fmriprep",
    )
    bolds = _check_tasks(tasks, _scan_fmriprep(folder, space, None), folder)
    excludes = _scan_excludes(root)
    numbers, rows, notes = _run_numbers(bolds), [], []
    for bold in bolds:
        row = _fmriprep_row(bold, root, numbers[bold.path], notes)
        story, reason = _narratives_story(root, bold)
        if not row["mask"]:
            mask = _task_mask(root, space, bold.entities["task"])
            row["mask"] = _rel(mask, root) if mask else None
        row.update(story=story, words=f"stimuli/gentle/{story}/align.json", words_format="gentle")
        listed = [p for p in excludes if bold.stem == p or bold.stem.startswith(p + "_")]
        onset = _first_onset(root / bold.source_dir / f"{bold.stem}_events.tsv")
        if onset is None and not (listed or reason):
            raise BrainshapeError(
                f"{root / bold.source_dir / (bold.stem + '_events.tsv')}: the first row's onset "
                "is n/a, so the audio onset of the run is unknown; write it into the file"
            )
        row["offset"] = _number(-onset) if onset is not None else None
        if listed:
            _exclude(row, f"listed in code/scan_exclude.json ({listed[0]})")
        elif reason:
            _exclude(row, reason)
        else:
            row = _complete(row, root)
        rows.append(row)
    source = f"runs sheet of {root}"
    runs = _table(rows, source)
    check_files(runs, root, source)
    return Import("narratives", root, runs, _found_lines(runs), notes)


# --- Alice --------------------------------------------------------------------------------------


def _alice_row(
    bold: Path, root: Path, subject: str, onsets: Mapping[str, float], notes: list[str]
) -> tuple[dict, tuple]:
    shape, affine, header_tr = _header(bold)
    sub = f"sub-{subject}"
    sidecars = [root / sub / "func" / f"{sub}_task-alice_bold.json", root / "task-alice_bold.json"]
    tr = _pick_tr(header_tr, _sidecar_tr(sidecars), sub, root, notes, bold)
    row = {
        "subject": subject,
        "story": "alice",
        "run": 1,
        "response": _rel(bold, root),
        "format": "nifti",
        "words": "code/annotations.tsv",
        "words_format": "annotations",
        "tr": _number(tr),
        "removed_start": ALICE_DISCARDED,
    }
    events = root / sub / "func" / f"{sub}_task-alice_events.tsv"
    onset = _first_onset(events)
    if subject in onsets:
        if onset is not None:
            notes.append(f"{sub}: --onset {onsets[subject]:g} s replaces the events' {onset:g} s")
        onset = float(onsets[subject])
    if onset is None:
        _exclude(
            row,
            f"the audio onset is n/a in {_rel(events, root)}; give it with "
            f"--onset {subject}=SECONDS to keep the subject",
        )
    else:
        row["offset"] = _number(ALICE_DISCARDED * tr - onset)
    return row, (shape[:3], affine)


def alice(root: str | os.PathLike, *, onsets: Mapping[str, float] | None = None) -> Import:
    """The runs sheet of the Alice dataset (ds002322) as published.

    One story (``alice``) for every subject: SPM-preprocessed images ``derivatives/sub-<s>/
    sub-<s>_task-alice_bold_preprocessed.nii.gz`` (already cleaned, first 10 volumes
    discarded; voxel grids differ between subjects), word timings ``code/annotations.tsv``
    (relative to the audio file), the audio onset = the first row's onset of ``sub-<s>/func/
    sub-<s>_task-alice_events.tsv``; offset = ``10 * tr - onset``. A subject whose onset is
    ``n/a`` is excluded with that reason unless ``onsets`` (subject -> seconds) gives it. TR:
    the image header's (the raw sidecar's where the header has none; disagreements reported).
    """
    root = Path(root)
    onsets = dict(onsets or {})
    derivatives = root / "derivatives"
    _require_dir(
        derivatives, "Alice's preprocessed images", "fetch them with datalad get derivatives"
    )
    images = sorted(derivatives.glob("sub-*/sub-*_task-alice_bold_preprocessed.nii*"))
    if not images:
        raise BrainshapeError(
            f"{derivatives} holds no sub-*/sub-*_task-alice_bold_preprocessed.nii.gz; fetch them "
            "with datalad get derivatives"
        )
    rows, notes, grids = [], [], {}
    for image in images:
        subject = image.name.split("_")[0][len("sub-") :]
        row, grid = _alice_row(image, root, subject, onsets, notes)
        rows.append(row)
        grids.setdefault(grid, []).append(subject)
    unknown = sorted(set(onsets) - {r["subject"] for r in rows})
    if unknown:
        raise BrainshapeError(
            f"--onset names subject(s) {', '.join(unknown)}, which {derivatives} does not hold; "
            "fix --onset"
        )
    if len(grids) > 1:
        shapes = "; ".join(f"{'x'.join(map(str, g[0]))}: {', '.join(s)}" for g, s in grids.items())
        notes.append(f"voxel grids differ between subjects ({len(grids)} grids: {shapes})")
    source = f"runs sheet of {root}"
    runs = _table(rows, source)
    check_files(runs, root, source)
    return Import("alice", root, runs, _found_lines(runs), notes)


# --- the command line ---------------------------------------------------------------------------


def run(dataset: str, root: str | os.PathLike, **options: Any) -> Import:
    """Import ``dataset`` (one of :data:`DATASETS`) from ``root`` with its options."""
    importers = {
        "ds003020": ds003020,
        "narratives": narratives,
        "alice": alice,
        "fmriprep": fmriprep,
    }
    if dataset not in importers:
        raise BrainshapeError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return importers[dataset](root, **options)
