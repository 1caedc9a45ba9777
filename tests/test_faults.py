"""Faults injected into a finished run: each is refused with one line that names the file or
config key and the fix, at the stage it belongs to, and nothing already computed is lost.

One base run (an ordinary dataset made by the demo generator: two subjects, three stories,
tiny-gpt2 at fp32) is copied for every fault. ``FAULTS`` is the catalog: what is wrong, how to
fix it, how to inject it into the copy, the message it must produce and the target to ask for.
Planning faults are refused before any job starts; job faults fail the one job that reads the
faulty file. docs/troubleshooting.md quotes every message, with the paths of the run replaced
by ``<workdir>`` and ``<bids_root>``; the tests below compare it with what the runs print.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, as_ordinary_dataset, small_demo_config, snakemake, write_config

from brainshape import runner, stimuli

pytestmark = pytest.mark.workflow

DOC = REPO / "docs" / "troubleshooting.md"
SCHEMAS = REPO / "workflow" / "schemas"

#: The dataset's root, relative to the work directory: messages name files under it this way,
#: and a copy of the work directory plans exactly as the base run did.
DATA = "bids"
TR = 2.0
SPACE = "MNI152NLin2009cAsym"
SUBJECTS = ["01", "02"]
STORIES = ["lighthouse", "orchard", "ferry"]
ATLAS = f"derivatives/atlas/atlas-demo_space-{SPACE}_dseg.nii.gz"
ATLAS_LABELS = "derivatives/atlas/atlas-demo_dseg.tsv"

BRAINSCORES = "results/study/brainscores.parquet"
WORDS = "results/study/words.parquet"
FEATURES = "results/study/features/tiny-gpt2/fp32"
ENCODE = "results/study/encoding/tiny-gpt2/fp32/g1.parquet"


def fmri_dir(sub: str) -> str:
    return f"results/study/fmri/sub-{sub}"


# --- the dataset's files, relative to its root --------------------------------------------------


def _func(sub: str, story: str) -> str:
    return f"derivatives/fmriprep/sub-{sub}/func/sub-{sub}_task-{story}"


def bold(sub: str, story: str) -> str:
    return f"{_func(sub, story)}_space-{SPACE}_desc-preproc_bold.nii.gz"


def brain_mask(sub: str, story: str) -> str:
    return f"{_func(sub, story)}_space-{SPACE}_desc-brain_mask.nii.gz"


def confounds(sub: str, story: str) -> str:
    return f"{_func(sub, story)}_desc-confounds_timeseries.tsv"


def align(story: str) -> str:
    return f"stimuli/{story}/align.json"


def textgrid(story: str) -> str:
    return f"stimuli/{story}/{story}.TextGrid"


def d(path: str) -> str:
    """A file of the dataset as messages name it (relative to the work directory)."""
    return f"{DATA}/{path}"


# --- injections ---------------------------------------------------------------------------------


def edit_yaml(path: Path, change: Callable[[dict], None]) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def edit_config(change: Callable[[dict], None]) -> Callable[[Path, Path], None]:
    return lambda work, data: edit_yaml(work / "config.yaml", change)


def study(cfg: dict) -> dict:
    return cfg["datasets"]["study"]


def set_na(path: Path, column: str, rows) -> None:
    """Write n/a into ``column`` of the data ``rows`` (counted from 1) of a confounds table."""
    lines = path.read_text().splitlines()
    j = lines[0].split("\t").index(column)
    for row in rows:
        cells = lines[row].split("\t")
        cells[j] = "n/a"
        lines[row] = "\t".join(cells)
    path.write_text("\n".join(lines) + "\n")


def n_volumes(path: Path) -> int:
    return int(nib.load(path).shape[-1])


def drop_last_row(path: Path) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")


def flip_bytes(path: Path) -> None:
    """Invert 16 bytes in the middle of a file (its size stays)."""
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 16] = bytes(b ^ 0xFF for b in raw[middle : middle + 16])
    path.write_bytes(bytes(raw))


def flip_gzip_checksum(path: Path) -> None:
    """Invert the CRC-32 a gzip file stores for its data (bytes -8 to -4): the check fails the
    same way whatever the compressed bytes are (damage inside the deflate stream fails in ways
    that depend on those bytes, which differ between machines)."""
    raw = bytearray(path.read_bytes())
    raw[-8:-4] = bytes(b ^ 0xFF for b in raw[-8:-4])
    path.write_bytes(bytes(raw))


def truncate(path: Path, keep: float = 0.6) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def json_error(path: Path) -> str:
    try:
        json.loads(path.read_text())
    except json.JSONDecodeError as error:
        return str(error)
    raise AssertionError(f"{path} is valid JSON")


def shift_atlas(work: Path, data: Path) -> None:
    """Move the atlas 6 cm along every axis (its labels stay, its affine moves)."""
    img = nib.load(data / ATLAS)
    affine = img.affine.copy()
    affine[:3, 3] += 60.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine, img.header), data / ATLAS)


def cut_run(work: Path, data: Path, sub: str = "02", story: str = "lighthouse") -> None:
    """Drop the last 20 volumes of a run (BOLD and confounds alike): the story outlasts it."""
    img = nib.load(data / bold(sub, story))
    keep = img.shape[-1] - 20
    nib.save(
        nib.Nifti1Image(np.asarray(img.dataobj)[..., :keep], img.affine, img.header),
        data / bold(sub, story),
    )
    table = pd.read_csv(data / confounds(sub, story), sep="\t")
    table.iloc[:keep].to_csv(data / confounds(sub, story), sep="\t", index=False, na_rep="n/a")


def lost_tr_unit(work: Path, data: Path) -> None:
    """A header that says TR 2000 in seconds (its msec unit lost), and no TR in the config nor
    in fMRIPrep's sidecar beside the image (a copy without the sidecars)."""
    edit_yaml(work / "config.yaml", lambda c: study(c).pop("tr"))
    (data / bold("01", "lighthouse").replace(".nii.gz", ".json")).unlink()
    img = nib.load(data / bold("01", "lighthouse"))
    img.header.set_zooms(img.header.get_zooms()[:3] + (2000.0,))
    img.header.set_xyzt_units("mm", "sec")
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header),
             data / bold("01", "lighthouse"))  # fmt: skip


def words_end(data: Path, story: str) -> float:
    return float(stimuli.read_gentle(data / align(story))["offset"].max())


def rename_tier(work: Path, data: Path) -> None:
    edit_yaml(
        work / "config.yaml",
        lambda c: study(c).update(words={"format": "textgrid", "path": textgrid("{story}")}),
    )
    path = data / textgrid("orchard")
    path.write_text(path.read_text().replace('name = "words"', 'name = "Words"'))


def transcript(story: str) -> str:
    return f"stimuli/{story}/transcript.txt"


def transcript_of_another_text(work: Path, data: Path) -> None:
    """Every story read with its transcript (the demo writes them), orchard's replaced."""
    edit_yaml(
        work / "config.yaml", lambda c: study(c)["words"].update(transcript=transcript("{story}"))
    )
    (data / transcript("orchard")).write_text("Zyx qwv plonk.\n")


def own_transcript_again(work: Path) -> None:
    """orchard's own transcript back (Gentle's align.json carries it); the config keeps reading
    transcripts, so the rerun's words table must equal the base run's, read from Gentle alone."""
    text = json.loads((work / DATA / align("orchard")).read_text())["transcript"]
    (work / DATA / transcript("orchard")).write_text(text)


SHEET_COLUMNS = ["subject", "story", "response", "format", "mask", "confounds", "words"]
SHEET_COLUMNS += ["words_format", "tr"]


def sheet_rows() -> list[dict]:
    return [
        {
            "subject": sub,
            "story": story,
            "response": bold(sub, story),
            "format": "fmriprep",
            "mask": brain_mask(sub, story),
            "confounds": confounds(sub, story),
            "words": align(story),
            "words_format": "gentle",
            "tr": str(TR),
        }
        for sub in SUBJECTS
        for story in STORIES
    ]


def with_sheet(rows: list[dict], columns: list[str] = SHEET_COLUMNS) -> Callable:
    """Give the dataset a runs sheet (runs.tsv in the work directory) of ``rows``."""

    def inject(work: Path, data: Path) -> None:
        lines = ["\t".join(columns)] + ["\t".join(r[c] for c in columns) for r in rows]
        (work / "runs.tsv").write_text("\n".join(lines) + "\n")
        edit_yaml(work / "config.yaml", lambda c: study(c).update(runs="runs.tsv"))

    return inject


def misspelled_sheet() -> list[dict]:
    rows = sheet_rows()
    rows[3]["confounds"] = rows[3]["confounds"].replace("confounds", "confound")
    return rows


# --- expected messages, from the files and schemas they name ------------------------------------


def header(path: Path) -> list[str]:
    return path.read_text().splitlines()[0].split("\t")


def allowed_keys(*path: str, schema: str = "config.schema.yaml") -> str:
    node = yaml.safe_load((SCHEMAS / schema).read_text())
    for key in path:
        node = node[key]
    return ", ".join(sorted(node["properties"]))


def source_keys() -> str:
    node = yaml.safe_load((SCHEMAS / "models.schema.yaml").read_text())["$defs"]["model"]
    return ", ".join(sorted(node["properties"]["source"]["properties"]))


def registry_ids(work: Path) -> str:
    return ", ".join(yaml.safe_load((work / "models.yaml").read_text())["models"])


def atlas_names(work: Path) -> str:
    return ", ".join(sorted(pd.read_csv(work / DATA / ATLAS_LABELS, sep="\t")["name"]))


def atlas_coverage(work: Path, sub: str = "01") -> float:
    """The share of the atlas's labelled voxels (on the grid of the subject's first run) that
    fall in that run's brain mask."""
    from nilearn.image import resample_to_img

    mask = nib.load(work / d(brain_mask(sub, STORIES[0])))
    atlas = resample_to_img(
        nib.load(work / d(ATLAS)), mask, interpolation="nearest", force_resample=True,
        copy_header=True,
    )  # fmt: skip
    labelled = np.asarray(atlas.dataobj) > 0
    return float((labelled & (np.asarray(mask.dataobj) > 0)).sum() / labelled.sum())


def least_coverage() -> float:
    fmri = yaml.safe_load((SCHEMAS / "config.schema.yaml").read_text())["properties"]["fmri"]
    return fmri["properties"]["min_atlas_coverage"]["default"]


def manifest_changed(folder: str, name: str, rule: str) -> str:
    return (
        f"{folder}/{name} changed after rule {rule} wrote it (its size or checksum differs from "
        f"{folder}/.manifest.json); rerun rule {rule} for it (snakemake --forcerun {rule} ... "
        f"or delete {folder})"
    )


# --- the catalog --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One injected fault. ``inject(work, data)`` changes the copy (``data``: the dataset's root
    in it); ``message(work)`` is the one line it must produce; ``target`` what is asked for.
    Job faults name the ``rule`` whose job fails; Snakemake removes that job's earlier output
    before running it (``target`` then). ``rerun``: undo the fault (restore the inputs from the
    base run, or ``undo`` for a fault in an output) and check that the rerun gives the base
    run's results."""

    id: str
    stage: str
    cause: str
    fix: str
    inject: Callable[[Path, Path], None]
    message: Callable[[Path], str]
    target: tuple[str, ...] = (BRAINSCORES,)
    rule: str | None = None
    args: tuple[str, ...] = ()
    rerun: bool = False
    undo: Callable[[Path], None] | None = None


def planning(id, cause, fix, inject, message, rerun=False) -> Fault:
    return Fault(id, "planning", cause, fix, inject, message, rerun=rerun)


def fmri_job(id, cause, fix, inject, message, rerun=False) -> Fault:
    return Fault(id, "job", cause, fix, inject, message, (fmri_dir("01"),), "fmri", rerun=rerun)


def encode_job(id, cause, fix, inject, message, **kw) -> Fault:
    forced = ("--forcerun", "encode")
    return Fault(id, "job", cause, fix, inject, message, (ENCODE,), "encode", forced, **kw)


FAULTS = [
    planning(
        "unknown-model",
        "`models` names an id the registry lacks (here a typo)",
        "use an id of the registry (the closest one is suggested) or add the model to it",
        edit_config(lambda c: c.update(models=["tiny-gtp2"])),
        lambda w: (
            f"{w}/config.yaml: models lists unknown model id 'tiny-gtp2' (did you mean "
            f"'tiny-gpt2'?); the registry models.yaml has: {registry_ids(w)}"
        ),
    ),
    planning(
        "unknown-config-key",
        "a config key the schema does not know (here `encoding.delay` for `encoding.delays`)",
        "rename the key to one of those listed (the closest one is suggested)",
        edit_config(lambda c: c["encoding"].update(delay=[1, 2])),
        lambda w: (
            f"{w}/config.yaml: unknown key 'encoding.delay' (did you mean 'delays'?); allowed "
            f"keys here: {allowed_keys('properties', 'encoding')}"
        ),
        rerun=True,
    ),
    planning(
        "unknown-registry-source-key",
        "a key under a registry entry's `source:` that the registry schema does not know",
        "rename it to one of the keys listed (workflow/schemas/models.schema.yaml)",
        lambda w, data: edit_yaml(
            w / "models.yaml", lambda r: r["models"]["tiny-gpt2"]["source"].update(seeds=3)
        ),
        lambda w: (
            "models.yaml: unknown key 'models.tiny-gpt2.source.seeds' (did you mean 'seed'?); "
            f"allowed keys here: {source_keys()}"
        ),
        rerun=True,
    ),
    planning(
        "registry-not-found",
        "`registry` points at a file that does not exist",
        "give the path of the model registry, relative to the directory snakemake runs in",
        edit_config(lambda c: c.update(registry="modelz.yaml")),
        lambda w: (
            "model registry file not found: modelz.yaml. Check the path (relative paths are "
            "taken from the directory snakemake runs in)."
        ),
    ),
    planning(
        "duplicate-story",
        "a story is listed twice under `datasets.<name>.stories`",
        "list each story once",
        edit_config(lambda c: study(c)["stories"].append("lighthouse")),
        lambda w: (
            f"{w}/config.yaml: key 'datasets.study.stories' lists 'lighthouse' more than once; "
            "give each value once"
        ),
    ),
    planning(
        "delays-negative",
        "an FIR delay below 1 TR (the response follows the stimulus)",
        "give positive delays, in TRs",
        edit_config(lambda c: c["encoding"].update(delays=[-1, 1, 2])),
        lambda w: f"{w}/config.yaml: key 'encoding.delays.0': -1 is less than the minimum of 1",
    ),
    planning(
        "delays-duplicate",
        "an FIR delay listed twice",
        "list each delay once",
        edit_config(lambda c: c["encoding"].update(delays=[1, 2, 2])),
        lambda w: (
            f"{w}/config.yaml: key 'encoding.delays' lists 2 more than once; give each value once"
        ),
    ),
    planning(
        "delays-unsorted",
        "FIR delays out of order",
        "write them in increasing order, as the message shows",
        edit_config(lambda c: c["encoding"].update(delays=[2, 1, 3])),
        lambda w: (
            f"{w}/config.yaml: encoding.delays [2, 1, 3] must be in increasing order; write "
            "[1, 2, 3]"
        ),
    ),
    planning(
        "unknown-confound",
        "`fmri.confounds` names a column the confounds tables lack",
        "use column names of the fMRIPrep confounds tables (the message lists them)",
        edit_config(lambda c: c.setdefault("fmri", {}).update(confounds=["trans_x", "csf_wm"])),
        lambda w: (
            f"confounds table {d(confounds('01', 'lighthouse'))} lacks column(s) csf_wm that "
            "fmri.confounds asks for (it has: "
            f"{', '.join(header(w / d(confounds('01', 'lighthouse'))))}); fix fmri.confounds "
            f"in {w}/config.yaml"
        ),
    ),
    planning(
        "unknown-roi",
        "`fmri.rois` names a label the atlas lacks",
        "use label names of the atlas's labels table, or null for every label",
        edit_config(lambda c: c.setdefault("fmri", {}).update(rois=["IFG", "Broca"])),
        lambda w: (
            f"{w}/config.yaml: fmri.rois lists Broca, which no label of datasets.study has "
            f"({d(ATLAS_LABELS)}: {atlas_names(w)}); fix the names or set fmri.rois to null "
            "for every label"
        ),
    ),
    planning(
        "missing-derivative",
        "a subject's fMRIPrep file for a story is not where the config says",
        "fix bids_root, fmriprep_dir, space, subjects or stories, or fetch the file",
        lambda w, data: (data / bold("02", "ferry")).unlink(),
        lambda w: (
            f"datasets.study: 1 input file(s) missing: {d(bold('02', 'ferry'))}. Check "
            f"bids_root, fmriprep_dir, space, subjects and stories in {w}/config.yaml"
        ),
    ),
    planning(
        "bids-root-missing",
        "`datasets.<name>.bids_root` does not exist",
        "point it at the BIDS dataset (relative paths are taken from the working directory)",
        edit_config(lambda c: study(c).update(bids_root="bids-v2")),
        lambda w: (
            f"{w}/config.yaml: datasets.study.bids_root bids-v2 does not exist; point it at "
            "the BIDS dataset"
        ),
    ),
    planning(
        "sheet-missing-column",
        "the runs sheet lacks a required column",
        "add the column (docs/datasets.md lists them all)",
        with_sheet(sheet_rows(), [c for c in SHEET_COLUMNS if c != "words_format"]),
        lambda w: (
            "runs.tsv lacks the column(s) words_format; a runs sheet needs the columns subject, "
            "story, response, format, words, words_format (docs/datasets.md)"
        ),
    ),
    planning(
        "sheet-missing-file",
        "a row of the runs sheet names a file that does not exist",
        "fix the path in the runs sheet (relative to bids_root unless absolute)",
        with_sheet(misspelled_sheet()),
        lambda w: (
            "datasets.study: 1 input file(s) missing: "
            f"{d(confounds('02', 'lighthouse').replace('confounds', 'confound'))}. Check the "
            "runs sheet runs.tsv"
        ),
        rerun=True,
    ),
    planning(
        "sheet-duplicate-row",
        "two rows of the runs sheet are the same run",
        "give a repeat its own run number, or remove the duplicate row",
        with_sheet(sheet_rows() + sheet_rows()[:1]),
        lambda w: (
            "runs.tsv: rows 1, 7 are the same run (subject 01, story lighthouse, run 1); give "
            "repeats their own run number or remove the duplicate"
        ),
    ),
    planning(
        "tr-disagrees-with-header",
        "the configured TR differs from the TR in the BOLD header",
        "remove `tr` to use the header's, or set `tr_overrides_header: true` if the header is "
        "wrong",
        edit_config(lambda c: study(c).update(tr=2.5)),
        lambda w: (
            f"{d(bold('01', 'lighthouse'))}: its header says TR {TR:g} s but the config (or runs "
            "sheet) says 2.5 s; remove the configured tr to use the header's, or, if the header "
            "is wrong, set datasets.study.tr_overrides_header: true"
        ),
    ),
    planning(
        "tr-header-implausible",
        "a BOLD header's TR is outside 0.3-5 s (a TR in ms whose unit was lost, or SPM's 0) and "
        "neither the config, the runs sheet nor a sidecar gives the TR",
        "give the TR (the dataset's `tr`, or the runs sheet's `tr` column); the header's is then "
        "set aside",
        lost_tr_unit,
        lambda w: (
            f"{d(bold('01', 'lighthouse'))} says TR 2000 s in its header, outside the 0.3-5 s a "
            "repetition time can be (a TR in ms whose unit was lost, or a placeholder); give it "
            "in the runs sheet's tr column (or datasets.study.tr)"
        ),
        rerun=True,
    ),
    planning(
        "too-few-stories-for-story-folds",
        "`encoding.folds: stories` with a subject who heard fewer than 3 stories (2 beside a test "
        "story)",
        "set `encoding.folds: blocks`, or leave the subject out",
        edit_config(lambda c: study(c).update(stories=STORIES[:2])),
        lambda w: (
            f"{w}/config.yaml: encoding.folds: stories needs 3 stories per subject (or 2 beside a "
            "test story), and datasets.study has 2 subject(s) with fewer: 01 (lighthouse, "
            "orchard); 02 (lighthouse, orchard); set encoding.folds: blocks, or leave them out "
            "(datasets.study.subjects, or exclude their rows in the runs sheet)"
        ),
    ),
    planning(
        "words-past-end-of-run",
        "a story's words run past the last volume of a subject's run",
        "check that the response file, TR and offset belong to the story",
        cut_run,
        lambda w: (
            f"story lighthouse, sub-02: the words run to {words_end(w / DATA, 'lighthouse'):.1f} "
            f"s but {d(bold('02', 'lighthouse'))} covers word time up to "
            f"{n_volumes(w / d(bold('02', 'lighthouse'))) * TR:.1f} s "
            f"({n_volumes(w / d(bold('02', 'lighthouse')))} volumes at TR {TR:g} s from offset "
            "0 s); check that this is the right response file, TR and offset for the story"
        ),
        rerun=True,
    ),
    planning(
        "word-timings-not-json",
        "a Gentle align.json is not valid JSON (here: cut short)",
        "give the align.json Gentle wrote, or set words.format to the file's format",
        lambda w, data: truncate(data / align("orchard"), 0.5),
        lambda w: (
            f"{d(align('orchard'))} is not valid JSON ({json_error(w / d(align('orchard')))}); "
            "give the align.json that Gentle wrote, or set words.format to the format of the file"
        ),
        rerun=True,
    ),
    planning(
        "textgrid-missing-tier",
        "a TextGrid has no tier of the name `words.tier` gives",
        "set words.tier to the name (or position) of the tier that holds the words",
        rename_tier,
        lambda w: (
            f"{d(textgrid('orchard'))} has no tier 'words' (tiers present: 'Words'); set "
            "words.tier in the config to the tier that holds the words"
        ),
    ),
    Fault(
        "transcript-not-this-story",
        "job",
        "`words.transcript` gives a story a text that is not its transcript (here orchard's is "
        "another text)",
        "give each story its own transcript (check the `{story}` pattern of words.transcript)",
        transcript_of_another_text,
        lambda w: (
            f"transcript {d(transcript('orchard'))} does not fit the word timings of story "
            "'orchard': only 0 of its 3 words match a timed word; check that it is this story's "
            "transcript (words.transcript)"
        ),
        (WORDS,),
        "words",
        rerun=True,
        undo=own_transcript_again,
    ),
    fmri_job(
        "confound-na-inside",
        "a confounds column is n/a after its first value (fMRIPrep leaves only leading rows empty)",
        "fix the table, or drop the column from fmri.confounds",
        lambda w, data: set_na(data / confounds("01", "orchard"), "csf", [50]),
        lambda w: (
            f"confounds table {d(confounds('01', 'orchard'))}: column csf is n/a in row 50 (after "
            "a value, or beyond the first 2 rows where fMRIPrep leaves derivatives empty); a "
            "gap there would be filled with a made-up value: fix the table or drop the column "
            "from fmri.confounds"
        ),
        rerun=True,
    ),
    fmri_job(
        "confound-all-na",
        "a confounds column has no value at all",
        "drop the column from fmri.confounds, or fix the table",
        lambda w, data: set_na(
            data / confounds("01", "orchard"),
            "white_matter",
            range(1, n_volumes(data / bold("01", "orchard")) + 1),
        ),
        lambda w: (
            f"confounds table {d(confounds('01', 'orchard'))}: column white_matter is n/a in "
            "every row; drop it from fmri.confounds or fix the table"
        ),
    ),
    fmri_job(
        "confounds-rows-differ",
        "a confounds table has another number of rows than its BOLD image has volumes",
        "use the confounds table fMRIPrep wrote for that BOLD image",
        lambda w, data: drop_last_row(data / confounds("01", "orchard")),
        lambda w: (
            f"confounds table {d(confounds('01', 'orchard'))} has "
            f"{n_volumes(w / d(bold('01', 'orchard'))) - 1} rows but its BOLD image has "
            f"{n_volumes(w / d(bold('01', 'orchard')))} volumes; they must match (one row per "
            "volume, before trimming)"
        ),
    ),
    fmri_job(
        "atlas-off-grid",
        "the atlas lies far off the BOLD images (another space, or a shifted affine): fewer of "
        "its labelled voxels fall in the brain mask than fmri.min_atlas_coverage asks",
        "give an atlas in the BOLD images' space (or lower fmri.min_atlas_coverage if the mask "
        "really leaves that much out)",
        shift_atlas,
        lambda w: (
            f"only {atlas_coverage(w):.1%} of the labelled voxels of atlas {d(ATLAS)} fall in "
            f"the brain mask (fmri.min_atlas_coverage is {least_coverage():.0%}): the atlas and "
            "the BOLD images are not aligned "
            "(another space, or a shifted affine); give an atlas in the BOLD's space, or lower "
            "fmri.min_atlas_coverage if the mask really leaves out that much of it"
        ),
    ),
    fmri_job(
        "bold-gzip-corrupt",
        "bytes of a compressed BOLD image are damaged (its gzip CRC fails)",
        "fetch or regenerate the file",
        lambda w, data: flip_gzip_checksum(data / bold("01", "ferry")),
        lambda w: (
            f"{d(bold('01', 'ferry'))} is corrupt or truncated (its gzip check fails: its "
            "compressed data are damaged); fetch or regenerate the file"
        ),
        rerun=True,
    ),
    fmri_job(
        "bold-truncated",
        "a compressed BOLD image is cut short (an interrupted copy)",
        "fetch or regenerate the file",
        lambda w, data: truncate(data / bold("01", "ferry"), 0.7),
        lambda w: (
            f"{d(bold('01', 'ferry'))} is corrupt or truncated (its gzip check fails: the file "
            "ends before its end-of-stream marker); fetch or regenerate the file"
        ),
    ),
    Fault(
        "word-file-empty",
        "job",
        "a word-timing file is empty (an empty file stands in for data only while planning)",
        "put the story's word timings in the file",
        lambda w, data: (data / align("ferry")).write_text(""),
        lambda w: (
            f"Gentle alignment {d(align('ferry'))} is empty; an empty file stands in for data "
            "only while a study is planned: put the story's word timings in it"
        ),
        (WORDS,),
        "words",
    ),
    encode_job(
        "features-file-truncated",
        "a file of a features folder was cut short after the features rule wrote it",
        "rerun the features rule for it (or delete the folder)",
        lambda w, data: truncate(w / FEATURES / "orchard.npy"),
        lambda w: manifest_changed(FEATURES, "orchard.npy", "features"),
    ),
    encode_job(
        "fmri-file-truncated",
        "a file of a subject's fmri folder was cut short after the fmri rule wrote it",
        "rerun the fmri rule for it (or delete the folder)",
        lambda w, data: truncate(w / fmri_dir("01") / "orchard.npy"),
        lambda w: manifest_changed(fmri_dir("01"), "orchard.npy", "fmri"),
    ),
    encode_job(
        "output-file-edited",
        "a file inside a folder output was changed (same size, other bytes) after its rule "
        "wrote it",
        "rerun the rule the message names (or delete the folder)",
        lambda w, data: flip_bytes(w / fmri_dir("01") / "orchard.npy"),
        lambda w: manifest_changed(fmri_dir("01"), "orchard.npy", "fmri"),
        rerun=True,
        undo=lambda w: shutil.rmtree(w / fmri_dir("01")),
    ),
]


# --- base run, copies and checksums -------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The finished base run: demo data generated once, then read as an ordinary dataset."""
    gen = tmp_path_factory.mktemp("generate")
    cfg = small_demo_config(str(REPO / "config" / "models.demo.yaml"))
    cfg["models"], cfg["variants"] = ["tiny-gpt2"], ["fp32"]
    write_config(gen, cfg)
    snakemake(gen, "--cores", "2", "resources/demo/demo")
    work = tmp_path_factory.mktemp("base")
    as_ordinary_dataset(cfg, gen, work / DATA)
    study(cfg)["bids_root"] = DATA
    shutil.copy(REPO / "config" / "models.demo.yaml", work / "models.yaml")
    cfg["registry"] = "models.yaml"
    write_config(work, cfg)
    snakemake(work, "--cores", "2", BRAINSCORES)
    return work


@pytest.fixture()
def work(base, tmp_path) -> Path:
    copy = tmp_path / "work"
    shutil.copytree(base, copy, symlinks=True)
    return copy


def checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


#: Files that differ between two runs with the same results: a folder's manifest records
#: modification times, Snakemake stamps folders.
VOLATILE = {".manifest.json", ".snakemake_timestamp"}


def tables(work: Path, targets) -> dict[str, str]:
    """Checksums of the targets' files (a folder's, less its manifest and stamp)."""
    out = {}
    for target in targets:
        path = work / target
        if path.is_dir():
            sums = checksums(path)
            out |= {f"{target}/{k}": v for k, v in sums.items() if Path(k).name not in VOLATILE}
        else:
            out[target] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def restore(work: Path, base: Path) -> None:
    """Undo a fault in the inputs: every file outside results/, logs/ and .snakemake/ as in
    the base run (same bytes and times), and nothing more."""
    skip = ("results", "logs", ".snakemake")

    def files(root: Path) -> dict[str, Path]:
        return {
            str(p.relative_to(root)): p
            for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] not in skip
        }

    ours, theirs = files(work), files(base)
    for name in set(ours) - set(theirs):
        ours[name].unlink()
    for name, path in theirs.items():
        if name not in ours or ours[name].read_bytes() != path.read_bytes():
            shutil.copy2(path, work / name)


# --- what a refused run must look like ----------------------------------------------------------

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR brainshape: (.*)$")


def to_template(text: str, work: Path) -> str:
    """A message as docs/troubleshooting.md quotes it: the run's paths as placeholders."""
    text = text.replace(str(work), "<workdir>")
    return re.sub(rf"(?<![\w/.<>-]){DATA}/", "<bids_root>/", text)


def doc_entries() -> dict[str, dict]:
    """docs/troubleshooting.md: per ``### id`` heading, its stage (the ``## `` section above it),
    the quoted message (the first code block) and its Cause and Fix lines."""
    entries, stage = {}, None
    for block in re.split(r"^(?=##+ )", DOC.read_text(), flags=re.M):
        head = block.splitlines()[0] if block.strip() else ""
        if head.startswith("## "):
            stage = head[3:].split(":")[0].strip().lower()
        elif head.startswith("### "):
            code = re.search(r"^```\n(.*?)\n```$", block, flags=re.M | re.S)
            cause = re.search(r"^Cause: (.*)$", block, flags=re.M)
            fix = re.search(r"^Fix: (.*)$", block, flags=re.M)
            entries[head[4:].strip()] = {
                "stage": stage,
                "message": code.group(1) if code else None,
                "cause": cause.group(1) if cause else None,
                "fix": fix.group(1) if fix else None,
            }
    return entries


def new_session_logs(work: Path, before: set[Path]) -> list[Path]:
    return [p for p in (work / ".snakemake" / "log").glob("*.log") if p not in before]


def assert_refused_while_planning(proc, fault: Fault, work: Path, logs_before) -> str:
    expected = fault.message(work)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == f"brainshape: {expected}\n"
    # No job started: Snakemake's log of this run names no rule, and no job log appeared.
    for log in new_session_logs(work, logs_before):
        assert not re.search(r"^(local)?rule \w+:", log.read_text(), flags=re.M), log
    return expected


def assert_job_failed(proc, fault: Fault, work: Path) -> str:
    expected = fault.message(work)
    assert proc.returncode == 1, proc.stderr
    lines = [m.group(1) for m in map(LOG_LINE.match, proc.stderr.splitlines()) if m]
    assert lines == [expected], proc.stderr
    block = proc.stderr.split(f"Error in rule {fault.rule}:\n", 1)[1]
    log = re.search(r"^    log: (\S+) \(check log file", block, flags=re.M).group(1)
    assert f"    output: {fault.target[0]}\n" in block
    last = (work / log).read_text().strip().splitlines()[-1]
    assert LOG_LINE.match(last).group(1) == expected, last
    return expected


def expected_results(before: dict[str, str], fault: Fault) -> dict[str, str]:
    """What results/ holds after a fault: the same files, less the failed job's output
    (Snakemake removes it before the job runs, and a failed job writes none)."""
    if fault.stage == "planning":
        return before
    return without(before, fault.target[0])


def without(sums: dict[str, str], *outputs: str) -> dict[str, str]:
    """``checksums(results)`` less the files of ``outputs`` (files or folders)."""
    gone = [output.removeprefix("results/") for output in outputs]
    return {k: v for k, v in sums.items() if not any(k == g or k.startswith(g + "/") for g in gone)}


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_fault(fault, work, base):
    results, logs = work / "results", work / ".snakemake" / "log"
    session_logs, job_logs = set(logs.glob("*.log")), checksums(work / "logs")
    fault.inject(work, work / DATA)
    before = checksums(results)  # a fault in an output is part of what must stay as it is
    proc = snakemake(work, "--cores", "2", *fault.args, "--", *fault.target, check=False)
    if fault.stage == "planning":
        message = assert_refused_while_planning(proc, fault, work, session_logs)
        assert checksums(work / "logs") == job_logs
    else:
        message = assert_job_failed(proc, fault, work)
    # Nothing finished is lost or changed; the failed job left nothing (no partial output).
    assert checksums(results) == expected_results(before, fault)
    entry = doc_entries()[fault.id]
    assert (entry["stage"], entry["message"]) == (fault.stage, to_template(message, work))
    if fault.rerun:
        (fault.undo or (lambda w: restore(w, base)))(work)
        snakemake(work, "--cores", "2", "--", *fault.target)
        assert tables(work, fault.target) == tables(base, fault.target)


# --- faults that need their own handling --------------------------------------------------------

#: Entries of docs/troubleshooting.md that the tests below check: stage, cause and fix.
SPECIAL = {
    "nan-voxels": (
        "job",
        "voxels inside a subject's brain mask are NaN or inf in a run",
        "remove them from the brain mask, or rerun that run's preprocessing; with "
        "`--keep-going` the other subjects' jobs finish meanwhile",
    ),
    "directory-locked": (
        "planning",
        "another Snakemake process is running in the same directory, or one was killed and "
        "left its lock",
        "wait for the other run to end; if none runs, `snakemake --unlock`, then rerun",
    ),
    "incomplete-after-kill": (
        "planning",
        "a run was killed (SIGKILL, a node failure, a wall-time limit) while a job was writing",
        "`snakemake --unlock` (the killed run left its lock), then rerun with "
        "`--rerun-incomplete`: the killed jobs start again from scratch",
    ),
    "disk-full": (
        "job",
        "the file system of the results ran out of space (or quota) while a job wrote",
        "free space, or point the results elsewhere, then rerun: the failed job starts again",
    ),
    # The cluster's events: the chaos run of tests/test_slurm.py meets each of them (a
    # cancelled, a killed and a requeued job, a restarted controller, a drained node, and a
    # restart of Snakemake with --rerun-incomplete where a job failed on every attempt).
    "job-cancelled": (
        "cluster",
        "the job was cancelled (`scancel` by you or an administrator), or it ran past its "
        "wall time (`TIMEOUT`) or its memory (`OUT_OF_MEMORY`)",
        "nothing while Snakemake answers `Trying to restart job`: the profile retries each "
        "job twice, with more memory and time; if the last attempt fails too, read the SLURM "
        "log the message names, fix the cause, and run the same command again: only the "
        "failed job and what depends on it run",
    ),
    "job-killed": (
        "cluster",
        "a process of the job was killed (SIGKILL from the out-of-memory killer, a node "
        "health check or an administrator), so the job ended with an error",
        "the same as job-cancelled: Snakemake retries it; if every attempt is killed, look "
        "for `Killed` or `oom-kill` in the SLURM log and give the rule more memory "
        "(`--set-resources <rule>:mem_mb=...`)",
    ),
    "job-preempted": (
        "cluster",
        "a job of higher priority took the job's resources (a preemptible partition); with "
        "the profile's `slurm-requeue: true` SLURM puts the job back in the queue under the "
        "same job id and starts it again from the beginning",
        'leave Snakemake running: it waits for the requeued job (`squeue --me -o "%i %T %r"` '
        "shows it `PENDING` again); where the partition cancels preempted jobs instead of "
        "requeueing them, put the job back with `scontrol requeue <jobid>`",
    ),
    "controller-restarted": (
        "cluster",
        "`slurmctld` was restarted (an upgrade, a configuration change, a failover), or the "
        "controller or the accounting database behind `sacct` could not be reached for a "
        "while; running jobs keep running on their nodes, but submissions and status queries "
        "fail meanwhile",
        "nothing for an outage of a few minutes: submissions wait for the controller and the "
        "profile retries the status queries for 2.5 minutes; if Snakemake then reports no "
        "progress while `squeue --me` lists none of its jobs, stop it (Ctrl-C) and run the "
        "same command again",
    ),
    "node-drained": (
        "cluster",
        "an administrator drained a node (maintenance): the jobs running there finish, new "
        "jobs wait for another node or for the node to resume",
        "leave Snakemake running: the pending jobs start when a node is free; `sinfo -R` says"
        " which nodes are drained, why and since when; if the partition has no other node, "
        "ask the administrators when it resumes",
    ),
    "snakemake-process-lost": (
        "cluster",
        "the Snakemake process on the login node ended (the SSH session closed, the login "
        "node rebooted) while its jobs ran; the jobs it submitted keep running in SLURM",
        "run Snakemake inside `tmux` or `screen`; after a loss, let the running jobs end or "
        "cancel them (`squeue --me`, `scancel <jobid>`), then `snakemake --unlock` and the "
        "same command again: the profile's `rerun-incomplete` starts the jobs that were "
        "running again",
    ),
}


def error_lines(stderr: str) -> list[str]:
    return [m.group(1) for m in map(LOG_LINE.match, stderr.splitlines()) if m]


def assert_doc_quotes(entry_id: str, text: str, work: Path) -> None:
    """The doc's entry sits under its stage, and each line it quotes is a line of ``text``."""
    entry = doc_entries()[entry_id]
    assert entry["stage"] == SPECIAL[entry_id][0]
    lines = {line.strip() for line in to_template(text, work).splitlines()}
    for quoted in entry["message"].splitlines():
        assert quoted.strip() in lines, (entry_id, quoted)


def start(work: Path, *args: str) -> subprocess.Popen:
    """Snakemake in the background, in a process group of its own (to be killed whole)."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    cmd += ["--directory", str(work), "--configfile", str(work / "config.yaml"), *args]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "snakemake ended before it was expected to"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_nan_voxels_fail_that_subject_and_keep_the_rest(work, base):
    data = work / DATA
    path = data / bold("02", "orchard")
    img = nib.load(path)
    array = np.asarray(img.dataobj).copy()
    inside = np.argwhere(np.asarray(nib.load(data / brain_mask("02", "orchard")).dataobj) > 0)
    array[tuple(inside[:3].T)] = np.nan
    nib.save(nib.Nifti1Image(array, img.affine, img.header), path)
    before = checksums(work / "results")
    # Both subjects run (the first forced): sub-02 fails, sub-01 finishes all the same.
    proc = snakemake(
        work, "--cores", "2", "--keep-going", "--forcerun", "fmri", "--", fmri_dir("01"),
        fmri_dir("02"), check=False,
    )  # fmt: skip
    expected = (
        f"3 in-mask voxels of {d(bold('02', 'orchard'))} contain NaN or inf in the kept volumes; "
        f"fix: remove them from the brain mask {d(brain_mask('02', 'orchard'))} or rerun the "
        "preprocessing of this run"
    )
    assert proc.returncode == 1
    assert error_lines(proc.stderr) == [expected]
    assert "Error in rule fmri:" in proc.stderr
    assert error_lines((work / "logs/study/fmri/sub-02.log").read_text()) == [expected]
    assert not (work / fmri_dir("02")).exists()
    assert tables(work, [fmri_dir("01")]) == tables(base, [fmri_dir("01")])
    # Besides the two subjects' folders, only sub-01's benchmark record (a job that ran) moved.
    ran = (fmri_dir("01"), fmri_dir("02"), "results/study/benchmarks/fmri/sub-01.tsv")
    assert without(checksums(work / "results"), *ran) == without(before, *ran)
    assert_doc_quotes("nan-voxels", expected, work)


def test_a_second_run_in_the_same_directory_is_refused(work, base):
    args = ("--cores", "1", "--forcerun", "fmri", "--", ENCODE)
    first = start(work, *args)
    locks = work / ".snakemake" / "locks"
    wait_for(lambda: locks.is_dir() and any(locks.iterdir()), first)
    second = snakemake(work, *args, check=False)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 1
    assert "LockException:" in second.stderr
    assert "Error: Directory cannot be locked." in second.stderr
    assert_doc_quotes("directory-locked", second.stderr, work)
    # The first run's results are those of a clean run.
    assert tables(work, [fmri_dir("01"), ENCODE]) == tables(base, [fmri_dir("01"), ENCODE])


def test_a_killed_run_resumes_with_rerun_incomplete(work, base):
    log = work / "logs" / "study" / "fmri" / "sub-01.log"
    log.unlink()
    before = checksums(work / "results")
    proc = start(work, "--cores", "1", "--forcerun", "fmri", "--", fmri_dir("01"))
    wait_for(lambda: log.is_file() and "kept TRs" in log.read_text(), proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    again = snakemake(work, "--cores", "2", "--", fmri_dir("01"), check=False)
    assert again.returncode == 1
    assert "IncompleteFilesException:" in again.stderr
    assert_doc_quotes("incomplete-after-kill", again.stderr, work)
    # The killed run also left its lock: the resumed run is refused until it is removed.
    resume = ("--cores", "2", "--rerun-incomplete", "--", fmri_dir("01"))
    locked = snakemake(work, *resume, check=False)
    assert locked.returncode == 1
    assert_doc_quotes("directory-locked", locked.stderr, work)
    snakemake(work, "--unlock")
    snakemake(work, *resume)
    assert tables(work, [fmri_dir("01")]) == tables(base, [fmri_dir("01")])
    # Nothing else changed, and the killed job left nothing behind (no staged files).
    after = checksums(work / "results")
    ran = (fmri_dir("01"), "results/study/benchmarks/fmri/sub-01.tsv")
    assert without(after, *ran) == without(before, *ran)
    assert set(after) == set(before)


def mount_tmpfs(path: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("a small file system for the disk-full case needs root (mount -t tmpfs)")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


def fill(path: Path, leave: int) -> None:
    """Write a file that leaves ``leave`` bytes free on its file system."""
    stat = os.statvfs(path.parent)
    path.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - leave))


def test_disk_full_fails_the_job_and_keeps_what_was_written(work, base):
    fmri = work / "results" / "study" / "fmri"
    saved = work / "fmri-saved"
    fmri.rename(saved)
    fmri.mkdir()
    mount_tmpfs(fmri, "512k")
    try:
        shutil.copytree(saved / "sub-02", fmri / "sub-02")  # sub-01 is to be made
        fill(fmri / ".filler", leave=4096)
        before = checksums(work / "results")
        proc = snakemake(work, "--cores", "1", "--", fmri_dir("01"), check=False)
        assert proc.returncode == 1
        [line] = error_lines(proc.stderr)
        # numpy reports a short write (bytes asked for and written), others ENOSPC.
        assert re.fullmatch(
            r"rule fmri failed: OSError: (\d+ requested and \d+ written|\[Errno 28\] No space "
            r"left on device); the disk \(or quota\) is full; free space or point the results "
            r"elsewhere, then rerun",
            line,
        ), line
        assert checksums(work / "results") == before
        assert_doc_quotes(
            "disk-full",
            re.sub(r"\d+ requested and \d+ written", "<n> requested and <m> written", line),
            work,
        )
        (fmri / ".filler").unlink()
        snakemake(work, "--cores", "1", "--", fmri_dir("01"))
        assert tables(work, [fmri_dir("01")]) == tables(base, [fmri_dir("01")])
    finally:
        subprocess.run(["umount", str(fmri)], check=True)


def test_a_full_disk_is_explained_as_such():
    fix = "the disk (or quota) is full; free space or point the results elsewhere, then rerun"
    error = OSError(errno.ENOSPC, "No space left on device")
    assert runner.explain(error, "encode", [__file__]) == (
        f"rule encode failed: OSError: [Errno {errno.ENOSPC}] No space left on device; {fix}"
    )
    short = OSError("2290 requested and 992 written")  # numpy's tofile on a full disk
    assert runner.explain(short, "fmri") == f"rule fmri failed: OSError: {short}; {fix}"


def test_tr_overrides_header_accepts_a_configured_tr(work):
    edit_yaml(work / "config.yaml", lambda c: study(c).update(tr=2.5, tr_overrides_header=True))
    proc = snakemake(work, "-n", "--", fmri_dir("01"))
    assert "brainshape:" not in proc.stderr
    assert re.search(r"^(local)?rule fmri:$", proc.stdout, flags=re.M), proc.stdout


def test_troubleshooting_covers_the_catalog_and_nothing_else():
    entries = doc_entries()
    wanted = {f.id: (f.stage, f.cause, f.fix) for f in FAULTS} | SPECIAL
    assert len(wanted) == len(FAULTS) + len(SPECIAL)  # ids are unique
    assert {k: (e["stage"], e["cause"], e["fix"]) for k, e in entries.items()} == wanted
    for fault in FAULTS:
        assert "\n" not in entries[fault.id]["message"], fault.id  # one line


def test_the_catalog_covers_both_stages():
    stages = [f.stage for f in FAULTS]
    assert len(FAULTS) >= 25 and stages.count("planning") >= 15 and stages.count("job") >= 10
