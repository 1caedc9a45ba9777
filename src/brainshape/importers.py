"""Importers: the runs sheet of a published dataset, read from its folder as published.

One function per dataset returns a :class:`Import`: the runs table (the columns of
:func:`brainshape.sheet.columns`, validated by :func:`brainshape.sheet.rows_from_table`) and a
report of what it found, what it excluded or left out and why, and where the dataset disagrees
with itself. Paths in the table are relative to the dataset root (the config's ``bids_root``).
Every layout fact they rely on, with its public source, is in docs/datasets.md.

The clocks (``offset`` is the word time at the start of the response file's first row; row j
is centred at ``offset + (j + 0.5) * tr``; see docs/datasets.md):

- :func:`ds003020` (LeBel et al. 2023): preprocessed HDF5 responses with the first and last 10
  volumes removed; the TextGrid clock starts at the audio, 10 s into the scan; offset
  ``10 * tr - 10`` s with the reference code's TR of 2.0 s.
- :func:`brainshape.narratives.narratives` (Nastase et al. 2021, ds002345): fMRIPrep BOLD; the
  Gentle clock starts at the audio, the first row's onset of the run's ``events.tsv``.
- :func:`alice` (ds002322): SPM-preprocessed BOLD with the first 10 volumes discarded; the
  annotations' clock starts at the audio (``events.tsv``); offset ``10 * tr - onset``.
- :func:`fmriprep`: any BIDS dataset with fMRIPrep derivatives (offset ``0``, or ``-onset`` of
  the events file).

Bad input stops with one line naming the file and the fix; nothing is written by an import.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from brainshape import responses, sheet
from brainshape.errors import BrainshapeError

DATASETS = ("ds003020", "narratives", "alice", "fmriprep")

#: ds003020: volumes removed at each end of every run, the reference code's TR, and the audio
#: onset in the scan (HuthLab/deep-fMRI-dataset: load_simulated_trfiles(respdict, tr=2.0,
#: start_time=10.0), apply_zscore_and_hrf's [5 + trim : -trim] with trim 5).
LEBEL_TRIM = 10
LEBEL_TR = 2.0
LEBEL_AUDIO_ONSET = 10.0
LEBEL_TEST_STORY = "wheretheressmoke"

#: Alice (ds002322): volumes discarded at the start of the SPM derivatives.
ALICE_DISCARDED = 10

#: Two TRs differing by less than this (s) are the same; more, and the report says so.
TR_TOL = 1e-3


@dataclass
class Import:
    """The runs sheet of a dataset and what its importer saw.

    ``runs``: the validated table (one row per subject, story and run; excluded rows kept with
    their reason). ``found``: one line per subject. ``left_out``: subjects (or runs) the dataset
    has that the sheet cannot hold, and why (no response file). ``notes``: disagreements within
    the dataset and decisions taken about them.
    """

    dataset: str
    root: Path
    runs: pd.DataFrame
    found: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    def report(self) -> str:
        """What was found, what was excluded or left out and why, and the notes."""
        runs = self.runs
        kept = runs[~runs.exclude]
        lines = [
            f"{self.dataset} at {self.root}: {kept.subject.nunique()} subjects, "
            f"{kept.story.nunique()} stories, {len(kept)} runs kept "
            f"({int((kept.split == 'test').sum())} test), {int(runs.exclude.sum())} excluded"
            + (f", {len(self.left_out)} left out" if self.left_out else "")
        ]
        lines += ["found:"] + [f"  {line}" for line in self.found]
        excluded = runs[runs.exclude]
        if len(excluded):
            lines.append("excluded:")
            for row in excluded.itertuples():
                lines.append(f"  {row.subject} {row.story} run {row.run}: {row.reason}")
        if self.left_out:
            lines += ["left out (not in the sheet):"] + [f"  {line}" for line in self.left_out]
        if self.notes:
            lines += ["notes:"] + [f"  {line}" for line in self.notes]
        return "\n".join(lines) + "\n"


# --- shared -------------------------------------------------------------------------------------


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (POSIX separators), as the sheet stores it."""
    return Path(os.path.relpath(path, root)).as_posix()


def number(value: float) -> str:
    """A float as the sheet stores it: the shortest text that reads back as the same value."""
    return repr(float(value))


def require_dir(path: Path, what: str, fix: str) -> None:
    if not path.is_dir():
        raise BrainshapeError(f"{path} does not exist; {what} is missing: {fix}")


def table(rows: Sequence[Mapping[str, Any]], source: str) -> pd.DataFrame:
    """Rows (dicts; None for no value) validated as a runs sheet, sorted by subject, story, run."""
    if not rows:
        raise BrainshapeError(f"{source}: no runs found; check that the folder is the dataset")
    out = pd.DataFrame(list(rows)).astype(object)
    out = out.where(out.notna(), "")
    out = out.map(lambda v: "" if v is None else str(v))
    out = out.sort_values(["subject", "story", "run"], kind="stable").reset_index(drop=True)
    runs = sheet.rows_from_table(out, source)
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


def read_events(events: Path) -> pd.DataFrame:
    """A BIDS events file (strings; ``n/a`` kept as text), with at least an onset column and a
    row."""
    if not events.is_file():
        raise BrainshapeError(
            f"{events} does not exist; the audio onset of the run is the onset of its first "
            "row: fetch the file (datalad get) or restore it"
        )
    out = pd.read_csv(events, sep="\t", dtype=str, keep_default_na=False)
    if "onset" not in out.columns or out.empty:
        raise BrainshapeError(
            f"{events} has no onset column or no row; the audio onset of the run is the onset "
            "of its first row: fix the file"
        )
    return out


def onset_of(events: Path, text: str) -> float | None:
    """An onset cell of ``events`` in seconds; None where it is n/a."""
    text = text.strip()
    if text.lower() in ("n/a", "", "nan"):
        return None
    try:
        onset = float(text)
    except ValueError:
        raise BrainshapeError(
            f"{events}: an onset is {text!r}, not a number of seconds; fix the file"
        ) from None
    if not math.isfinite(onset):
        raise BrainshapeError(f"{events}: an onset is {text!r}; fix the file")
    return onset


def first_onset(events: Path) -> float | None:
    """Onset (s) of the first row of a BIDS events file; None where it is n/a."""
    return onset_of(events, read_events(events)["onset"].iloc[0])


def header(path: Path) -> tuple[tuple[int, ...], tuple[float, ...], float]:
    """(shape, rounded affine, TR in s as the header says it; 0 when it says none) of a NIfTI
    image, from its header."""
    import nibabel as nib

    try:
        img = nib.load(path)
    except Exception as error:  # nibabel raises many kinds for a broken or missing file
        raise BrainshapeError(
            f"cannot read {path} as NIfTI ({error}); fetch it (datalad get) or re-download it"
        ) from None
    affine = tuple(round(float(v), 3) for v in img.affine[:3].ravel())
    return tuple(int(n) for n in img.shape), affine, responses.nifti_tr(img)


@dataclass
class TRs:
    """The TR of each run of an import, from its image header and its sidecars
    (:func:`brainshape.responses.run_tr`), and the report of where they differ."""

    root: Path
    overrides_header: bool = False
    dataset: str = "<name>"  # the config's datasets.<name> the notes and errors point to
    seen: dict[tuple, list[str]] = field(default_factory=dict)

    def pick(self, name: str, bold: Path, header_tr: float, sidecars: Iterable[Path]) -> float:
        """The TR of run ``name`` (image ``bold``): the first of ``sidecars`` (most specific
        first) that gives ``RepetitionTime`` is checked against the header; the header's is
        taken where both agree (the data's), the sidecar's where the header has none or
        ``overrides_header``."""
        given = None
        for path in sidecars:
            value = responses.json_tr(path)
            if value is not None:
                rel = relative(path, self.root)
                given = responses.GivenTR(
                    value, f"its sidecar {rel}", f"correct RepetitionTime in {rel}"
                )
                break
        tr = responses.run_tr(
            bold,
            header_tr,
            given,
            overrides_header=self.overrides_header,
            override=f"rerun with --tr-overrides-header (and set {self._key} in the config)",
            missing="add RepetitionTime to the run's _bold.json sidecar",
        )
        if responses.plausible_tr(header_tr) and responses.trs_agree(header_tr, tr):
            tr = header_tr
        if given is not None and abs(given.value - header_tr) > TR_TOL:
            self.seen.setdefault((header_tr, given.value, tr), []).append(name)
        return tr

    @property
    def _key(self) -> str:
        return f"datasets.{self.dataset}.tr_overrides_header: true"

    def notes(self) -> list[str]:
        """One line per kind of disagreement between headers and sidecars."""
        lines = []
        for (head, side, taken), names in sorted(self.seen.items()):
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            said = (
                f"say TR {head:g} s"
                if responses.plausible_tr(head)
                else "state no TR"
                if not head
                else f"say {head:g} s, not a TR"
            )
            whose = "headers'" if taken == head else "sidecars'"
            why = (
                f" (--tr-overrides-header: set {self._key} in the config too)"
                if responses.plausible_tr(head) and not responses.trs_agree(head, side)
                else ""
            )
            lines.append(
                f"{len(names)} run(s) whose image headers {said} where their sidecars say "
                f"RepetitionTime {side:g} s ({shown}): the sheet takes the {whose} {taken:g} "
                f"s{why}"
            )
        return lines


# --- ds003020 -----------------------------------------------------------------------------------


def _hdf5_layout(path: Path, rel: str) -> tuple[tuple, list[str], list[str]]:
    """(shape of ``data``, the 3-D datasets shaped repeats x rows x columns of ``data``, every
    dataset of the file) of one response file, from its headers."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise BrainshapeError(
            f"cannot open {path} as HDF5 ({error}); if it is a git-annex link, fetch it "
            f"(datalad get {rel})"
        ) from None
    with handle:
        found: dict[str, tuple] = {}
        handle.visititems(
            lambda name, item: (
                found.update({name: item.shape}) if isinstance(item, h5py.Dataset) else None
            )
        )
    if "data" not in found:
        raise BrainshapeError(
            f"{path} has no dataset 'data' (it holds: {', '.join(sorted(found)) or 'nothing'}); "
            f"ds003020's responses are in 'data': re-fetch the file (datalad get {rel})"
        )
    shape = found["data"]
    if len(shape) != 2:
        raise BrainshapeError(
            f"{path}: dataset 'data' has shape {shape}, not rows x voxels; re-fetch the file "
            f"(datalad get {rel})"
        )
    repeats = sorted(k for k, v in found.items() if len(v) == 3 and v[1:] == shape and v[0] > 1)
    return shape, repeats, sorted(found)


def _respdict(derivative: Path) -> dict[str, int]:
    import json

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


@dataclass(frozen=True)
class _Lebel:
    """The options of a ds003020 import."""

    root: Path
    respdict: Mapping[str, int]
    test_story: str | None
    labels: str | None
    tr: float


def _lebel_row(hf5: Path, subject: str, opts: _Lebel) -> tuple[dict, list[str], list[str]]:
    """(sheet row, repeats datasets, every dataset) of one response file."""
    story, rel = hf5.stem, relative(hf5, opts.root)
    if story not in opts.respdict:
        raise BrainshapeError(
            f"{hf5}: story {story} is not in derivative/respdict.json, so its rows cannot be "
            "checked; re-fetch respdict.json (datalad get derivative/respdict.json)"
        )
    shape, repeats, held = _hdf5_layout(hf5, rel)
    volumes = opts.respdict[story]
    expected = volumes - 2 * LEBEL_TRIM
    if shape[0] != expected:
        raise BrainshapeError(
            f"{hf5}: dataset 'data' has {shape[0]} rows, but derivative/respdict.json gives "
            f"{story} {volumes} volumes, so {expected} rows are expected (the first and "
            f"last {LEBEL_TRIM} removed); re-fetch the file (datalad get {rel}) or respdict.json"
        )
    row = {
        "subject": subject,
        "story": story,
        "run": 1,
        "response": rel,
        "format": "hdf5",
        "key": "data",
        "repeats_key": repeats[0] if repeats else None,
        "labels": opts.labels.format(subject=subject) if opts.labels else None,
        "words": f"derivative/TextGrids/{story}.TextGrid",
        "words_format": "textgrid",
        "tier": "2",  # the reference code takes the second tier (index 1)
        "offset": number(LEBEL_TRIM * opts.tr - LEBEL_AUDIO_ONSET),
        "tr": number(opts.tr),
        "removed_start": LEBEL_TRIM,
        "removed_end": LEBEL_TRIM,
        "split": "test" if story == opts.test_story else "train",
    }
    return row, repeats, held


def _lebel_subject(folder: Path, opts: _Lebel, rows: list, notes: list) -> str | None:
    """Append one subject's rows (and notes on its repeats); return its line of the report."""
    stories = []
    for hf5 in sorted(folder.glob("*.hf5")):
        row, repeats, held = _lebel_row(hf5, folder.name, opts)
        rows.append(row)
        if repeats:
            with_repeats = f"{len(held)} datasets: {', '.join(held)}"
            tag = f" [test, repeats in '{repeats[0]}']" if row["split"] == "test" else ""
            if len(repeats) > 1:
                notes.append(
                    f"{folder.name}/{hf5.name} holds several repeats-shaped datasets "
                    f"({with_repeats}); the sheet takes '{repeats[0]}'"
                )
        else:
            tag = " [test]" if row["split"] == "test" else ""
            if row["split"] == "test":
                notes.append(
                    f"{folder.name}: {hf5.name} holds no individual repeats (no dataset of "
                    f"repeats x rows x voxels beside 'data'; it holds {', '.join(held)}), so "
                    f"its repeat ceiling is unavailable; the inter-subject ceiling remains"
                )
        stories.append(hf5.stem + tag)
    if not stories:
        return None
    return f"{folder.name}: {len(stories)} stories ({', '.join(stories)})"


def ds003020(
    root: str | os.PathLike,
    *,
    test_story: str | None = LEBEL_TEST_STORY,
    labels: str | None = None,
    tr: float = LEBEL_TR,
) -> Import:
    """The runs sheet of ds003020 (LeBel et al. 2023) as published.

    Reads ``derivative/preprocessed_data/<subject>/<story>.hf5`` (dataset ``data``, rows =
    ``derivative/respdict.json[story] - 20``), word timings ``derivative/TextGrids/<story>
    .TextGrid`` (words tier: the second), ``test_story`` as the fixed test set (its ``data`` is
    the average over repeats; a 3-D dataset of the same rows and voxels, whatever its name,
    holds the individual repeats and goes into ``repeats_key``). ``labels``: a per-subject
    column table, a path relative to the root with ``{subject}`` (columns column, roi,
    hemisphere); none makes each response one target set. Subjects keep their own story sets.
    ``tr``: seconds between rows, 2.0 as the reference code simulates them (its TR-file reader
    expects 2.0045 s; docs/datasets.md); the offset follows it (``10 * tr - 10``).
    """
    root = Path(root)
    derivative = root / "derivative"
    require_dir(
        derivative,
        "ds003020's derivative folder (singular)",
        "fetch it with datalad get derivative, or give the dataset root",
    )
    if not responses.plausible_tr(tr):
        low, high = responses.TR_RANGE
        raise BrainshapeError(f"--tr {tr:g} is outside the {low:g}-{high:g} s a TR can be")
    data_dir = derivative / "preprocessed_data"
    opts = _Lebel(root, _respdict(derivative), test_story, labels, tr)
    require_dir(
        data_dir,
        "the preprocessed responses",
        "fetch them with datalad get derivative/preprocessed_data",
    )
    rows, found, notes = [], [], []
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        line = _lebel_subject(folder, opts, rows, notes)
        if line:
            found.append(line)
    source = f"runs sheet of {root}"
    runs = table(rows, source)
    check_files(runs, root, source)
    if test_story and not (runs.split == "test").any():
        notes.append(f"no subject has the test story {test_story}: every story is train")
    unheard = sorted(set(opts.respdict) - set(runs.story))
    if unheard:
        notes.append(
            f"{len(unheard)} stories of respdict.json have no response file here (not fetched, "
            f"or not heard by these subjects): {', '.join(unheard)}"
        )
    if tr != LEBEL_TR:
        notes.append(
            f"TR {tr:g} s instead of the reference code's {LEBEL_TR:g} s (offset "
            f"{LEBEL_TRIM * tr - LEBEL_AUDIO_ONSET:g} s)"
        )
    return Import("ds003020", root, runs, found, notes)


# --- BIDS + fMRIPrep ----------------------------------------------------------------------------

_ENTITY = re.compile(r"^([a-zA-Z]+)-([a-zA-Z0-9.+]+)$")


@dataclass(frozen=True)
class Bold:
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


def scan_fmriprep(
    fmriprep: Path, space: str | None, res: str | None, desc: str = "preproc"
) -> list[Bold]:
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
        found.append(Bold(path, entities))
    runs: dict[tuple, list[Bold]] = {}
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


def _confounds(bold: Bold) -> Path | None:
    for desc in ("confounds_timeseries", "confounds_regressors"):
        path = bold.path.parent / f"{bold.stem}_desc-{desc}.tsv"
        if path.is_file():
            return path
    return None


def _mask(bold: Bold) -> Path | None:
    name = re.sub(
        r"_desc-[a-zA-Z0-9]+_bold\.nii(\.gz)?$", r"_desc-brain_mask.nii\1", bold.path.name
    )
    path = bold.path.parent / name
    return path if path.is_file() else None


def bold_sidecars(bold: Bold, root: Path) -> list[Path]:
    """The JSON sidecars that may give the run's RepetitionTime, most specific first:
    fMRIPrep's beside the image, then the raw run's, subject's and dataset's (BIDS
    inheritance)."""
    e = bold.entities
    session = f"_ses-{e['ses']}" if "ses" in e else ""
    raw = root / bold.source_dir
    return [
        responses.image_sidecar(bold.path),
        raw / f"{bold.stem}_bold.json",
        raw.parent / f"sub-{e['sub']}{session}_task-{e['task']}_bold.json",
        root / f"task-{e['task']}_bold.json",
    ]


def run_numbers(bolds: Sequence[Bold]) -> dict[Path, int]:
    """Run number of each image within its subject and task: 1, 2, ... in session, run order."""
    groups: dict[tuple[str, str], list[Bold]] = {}
    for bold in bolds:
        groups.setdefault((bold.entities["sub"], bold.entities["task"]), []).append(bold)
    out = {}
    for same in groups.values():
        same = sorted(
            same, key=lambda b: (b.entities.get("ses", ""), int(b.entities.get("run", 0)))
        )
        out.update({b.path: i for i, b in enumerate(same, start=1)})
    return out


def fmriprep_row(bold: Bold, root: Path, run: int, trs: TRs) -> dict:
    """The sheet row of one fMRIPrep run, before its story, words and offset are known."""
    _, _, header_tr = header(bold.path)
    tr = trs.pick(bold.stem, bold.path, header_tr, bold_sidecars(bold, root))
    confounds, mask = _confounds(bold), _mask(bold)
    return {
        "subject": bold.entities["sub"],
        "run": run,
        "response": relative(bold.path, root),
        "format": "fmriprep",
        "mask": relative(mask, root) if mask else None,
        "confounds": relative(confounds, root) if confounds else None,
        "tr": number(tr),
    }


def exclude(row: dict, reason: str) -> dict:
    row.update(exclude="true", reason=reason)
    return row


def check_tasks(tasks: Iterable[str] | None, bolds: Sequence[Bold], where: Path) -> list[Bold]:
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


def found_lines(runs: pd.DataFrame) -> list[str]:
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
    tr_overrides_header: bool = False,
) -> Import:
    """The runs sheet of any BIDS dataset with fMRIPrep derivatives.

    Every ``*_desc-preproc_bold.nii[.gz]`` under ``fmriprep_dir`` (with any ``ses-``, ``run-``,
    ``res-`` and other entities; ``space``/``res`` choose where a run has several) is a run of
    story = task; runs of one subject and task are numbered 1, 2, ... in session and run order.
    Confounds: ``desc-confounds_timeseries.tsv`` or ``desc-confounds_regressors.tsv``; mask:
    ``desc-brain_mask``; TR from the image header, checked against the sidecars (fMRIPrep's,
    then the raw run's; :class:`TRs`), the sidecar's where the header has none or
    ``tr_overrides_header``.
    ``words`` is the word-timing file per story, relative to the root. The offset is 0 (word
    time 0 = the start of the run) or, with ``onset_from_events``, minus the first row's onset
    of the run's ``events.tsv``. Runs lacking a mask, confounds or word timings are excluded
    with the reason.
    """
    root = Path(root)
    folder = root / fmriprep_dir
    require_dir(folder, "the fMRIPrep derivatives", "fetch them or give --fmriprep-dir")
    bolds = check_tasks(tasks, scan_fmriprep(folder, space, res), folder)
    numbers, rows, trs = run_numbers(bolds), [], TRs(root, tr_overrides_header)
    for bold in bolds:
        row = fmriprep_row(bold, root, numbers[bold.path], trs)
        story = bold.entities["task"]
        row.update(
            story=story,
            words=words.format(story=story, task=story),
            words_format=words_format,
            tier=tier,
        )
        if onset_from_events:
            events = root / bold.source_dir / f"{bold.stem}_events.tsv"
            onset = first_onset(events)
            if onset is None:
                raise BrainshapeError(
                    f"{events}: the first row's onset is n/a, so the audio onset of the run is "
                    "unknown; write it into the file"
                )
            row["offset"] = number(-onset)
        rows.append(complete(row, root))
    source = f"runs sheet of {root}"
    runs = table(rows, source)
    check_files(runs, root, source)
    return Import("fmriprep", root, runs, found_lines(runs), trs.notes())


def complete(row: dict, root: Path) -> dict:
    """``row``, excluded with the reason where a file it needs is missing."""
    if not row.get("mask"):
        return exclude(row, f"no brain mask beside {row['response']}")
    if row["format"] == "fmriprep" and not row.get("confounds"):
        return exclude(
            row,
            f"no confounds table (desc-confounds_timeseries.tsv or "
            f"desc-confounds_regressors.tsv) beside {row['response']}",
        )
    if not (root / row["words"]).is_file():
        return exclude(row, f"no word timings {row['words']}")
    return row


# --- Alice --------------------------------------------------------------------------------------


def _alice_file(root: Path, sub: str, suffix: str) -> Path:
    """A raw-data file of an Alice subject: in ``sub-XX/`` as published, else in
    ``sub-XX/func/`` (the BIDS place; copies that moved them)."""
    name = f"{sub}_task-alice_{suffix}"
    found = root / sub / name
    return found if found.is_file() else root / sub / "func" / name


def _alice_row(bold: Path, root: Path, subject: str, onsets: Mapping[str, float], trs: TRs, notes):
    """(sheet row, (grid shape, affine)) of one subject's preprocessed image."""
    shape, affine, header_tr = header(bold)
    sub = f"sub-{subject}"
    sidecars = [responses.image_sidecar(bold), _alice_file(root, sub, "bold.json")]
    tr = trs.pick(sub, bold, header_tr, [*sidecars, root / "task-alice_bold.json"])
    row = {
        "subject": subject,
        "story": "alice",
        "run": 1,
        "response": relative(bold, root),
        "format": "nifti",
        "words": "code/annotations.tsv",
        "words_format": "annotations",
        "tr": number(tr),
        "removed_start": ALICE_DISCARDED,
    }
    events = _alice_file(root, sub, "events.tsv")
    if not events.is_file():
        raise BrainshapeError(
            f"{root / sub / events.name} does not exist (nor in {sub}/func/); the audio onset of "
            "the run is the onset of its first row: fetch it (datalad get) or restore it"
        )
    onset = first_onset(events)
    if subject in onsets:
        if onset is not None:
            notes.append(f"{sub}: --onset {onsets[subject]:g} s replaces the events' {onset:g} s")
        onset = float(onsets[subject])
    if onset is None:
        exclude(
            row,
            f"the audio onset is n/a in {relative(events, root)}; give it with "
            f"--onset {subject}=SECONDS to keep the subject",
        )
    else:
        row["offset"] = number(ALICE_DISCARDED * tr - onset)
    return row, (shape[:3], affine)


def _alice_left_out(root: Path, derived: set[str]) -> list[str]:
    """Subjects with raw data (a ``sub-XX`` folder with the run's events or sidecar) and no
    preprocessed image, each with why."""
    lines = []
    for folder in sorted(p for p in root.glob("sub-*") if p.is_dir()):
        sub = folder.name
        if sub.removeprefix("sub-") in derived:
            continue
        events = _alice_file(root, sub, "events.tsv")
        if not (events.is_file() or _alice_file(root, sub, "bold.json").is_file()):
            continue
        kept = root / "derivatives" / sub
        held = sorted(p.name for p in kept.iterdir()) if kept.is_dir() else []
        why = (
            f"derivatives/{sub} holds no preprocessed image (only {', '.join(held)})"
            if held
            else f"no preprocessed image (no derivatives/{sub})"
        )
        if events.is_file() and first_onset(events) is None:
            why += f"; its events onset is n/a too ({relative(events, root)})"
        lines.append(f"{sub}: raw data, {why}")
    return lines


def alice(
    root: str | os.PathLike,
    *,
    onsets: Mapping[str, float] | None = None,
    tr_overrides_header: bool = False,
) -> Import:
    """The runs sheet of the Alice dataset (ds002322) as published.

    One story (``alice``) for every subject with a preprocessed image: ``derivatives/sub-<s>/
    sub-<s>_task-alice_bold_preprocessed.nii.gz`` (SPM8, already cleaned, first 10 volumes
    discarded; voxel grids differ between subjects), word timings ``code/annotations.tsv``
    (relative to the audio file), the audio onset = the first row's onset of
    ``sub-<s>/sub-<s>_task-alice_events.tsv`` (in the subject folder as published, else in
    ``func/``); offset = ``10 * tr - onset``. A subject whose onset is ``n/a`` is excluded with
    that reason unless ``onsets`` (subject -> seconds) gives it. Subjects with raw data and no
    preprocessed image are listed in the report (``left_out``). TR: the image header's,
    checked against the subject's sidecar (:class:`TRs`): SPM writes 0 or 1 s into the headers
    of its 4-D images where the sidecars say 2 s; ``tr_overrides_header`` lets the sidecar win.
    """
    root = Path(root)
    onsets = dict(onsets or {})
    derivatives = root / "derivatives"
    require_dir(
        derivatives, "Alice's preprocessed images", "fetch them with datalad get derivatives"
    )
    images = sorted(derivatives.glob("sub-*/sub-*_task-alice_bold_preprocessed.nii*"))
    if not images:
        raise BrainshapeError(
            f"{derivatives} holds no sub-*/sub-*_task-alice_bold_preprocessed.nii.gz; fetch them "
            "with datalad get derivatives"
        )
    rows, grids, notes, trs = [], {}, [], TRs(root, tr_overrides_header, "alice")
    for image in images:
        subject = image.name.split("_")[0][len("sub-") :]
        row, grid = _alice_row(image, root, subject, onsets, trs, notes)
        rows.append(row)
        grids.setdefault(grid, []).append(subject)
    unknown = sorted(set(onsets) - {r["subject"] for r in rows})
    if unknown:
        raise BrainshapeError(
            f"--onset names subject(s) {', '.join(unknown)}, which {derivatives} does not hold; "
            "fix --onset"
        )
    notes += trs.notes()
    if len(grids) > 1:
        shapes = "; ".join(f"{'x'.join(map(str, g[0]))}: {', '.join(s)}" for g, s in grids.items())
        notes.append(f"voxel grids differ between subjects ({len(grids)} grids: {shapes})")
    source = f"runs sheet of {root}"
    runs = table(rows, source)
    check_files(runs, root, source)
    left_out = _alice_left_out(root, {r["subject"] for r in rows})
    return Import("alice", root, runs, found_lines(runs), notes, left_out)


# --- the command line ---------------------------------------------------------------------------


def run(dataset: str, root: str | os.PathLike, **options: Any) -> Import:
    """Import ``dataset`` (one of :data:`DATASETS`) from ``root`` with its options."""
    from brainshape.narratives import narratives

    importers = {
        "ds003020": ds003020,
        "narratives": narratives,
        "alice": alice,
        "fmriprep": fmriprep,
    }
    if dataset not in importers:
        raise BrainshapeError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return importers[dataset](root, **options)
