"""The importers on the published layouts: trees laid out from the public snapshots' listings,
with their small files as published (tests/data/published, see its SOURCE) and tiny images or
response matrices only where an importer opens one."""

import json
import re
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainshape import cli, importers
from brainshape.errors import BrainshapeError
from brainshape.narratives import narratives

PUBLISHED = Path(__file__).parent / "data" / "published"
DOC = Path(__file__).parent.parent / "docs" / "troubleshooting.md"


def doc_message(entry: str, root: Path) -> str:
    """The message docs/troubleshooting.md quotes under ``#### entry``, with ``<root>`` filled."""
    block = DOC.read_text().split(f"#### {entry}\n", 1)[1]
    quoted = re.search(r"^```\n(.*?)\n```$", block, flags=re.M | re.S).group(1)
    return quoted.replace("<root>", str(root))


def tree(dataset: str) -> pd.DataFrame:
    return pd.read_csv(PUBLISHED / dataset / "tree.tsv", sep="\t")


def copy_files(dataset: str, root: Path) -> None:
    shutil.copytree(PUBLISHED / dataset / "files", root, dirs_exist_ok=True)


def image(path: Path, tr: float, n: int = 12, shape=(3, 3, 2)) -> None:
    """A tiny 4-D image whose header says ``tr`` (s)."""
    img = nib.Nifti1Image(np.zeros((*shape, n), dtype=np.float32), np.eye(4))
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((1.0, 1.0, 1.0, tr))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)


def placeholder(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


# --- Alice (ds002322) ---------------------------------------------------------------------------


@pytest.fixture
def alice_root(tmp_path):
    """The Alice tree as published: every listed path (images as tiny NIfTI whose header says
    TR 0, as SPM writes it; other annexed files as empty placeholders), the small files as
    published."""
    root = tmp_path / "ds002322"
    for path in tree("ds002322").path:
        if path.endswith("_bold_preprocessed.nii.gz"):
            image(root / path, 0.0)
        else:
            placeholder(root / path)
    copy_files("ds002322", root)
    return root


def test_alice_as_published(alice_root):
    """Events and sidecars sit in sub-XX/ (no func/, no root task-alice_bold.json); 26 subjects
    have raw data, 23 a preprocessed image; sub-38 has only its .mat, sub-46 and sub-52
    nothing (and n/a onsets)."""
    listed = tree("ds002322").path
    assert not listed.str.contains(r"^sub-\d+/func/.*_events\.tsv$").any()
    assert "task-alice_bold.json" not in set(listed)
    imported = importers.alice(alice_root)
    runs = imported.runs
    assert len(runs) == 23 and not runs.exclude.any()
    assert {"38", "46", "52"}.isdisjoint(runs.subject)
    events = {
        p.parent.name[4:]: pd.read_csv(p, sep="\t").onset.iloc[0]
        for p in alice_root.glob("sub-*/sub-*_task-alice_events.tsv")
    }
    for row in runs.itertuples():  # the header says 0: the sidecar's 2 s
        assert row.tr == 2.0 and row.offset == pytest.approx(20.0 - float(events[row.subject]))
    assert imported.left_out == [
        "sub-38: raw data, derivatives/sub-38 holds no preprocessed image (only "
        "sub-38_preprocess.mat)",
        "sub-46: raw data, no preprocessed image (no derivatives/sub-46); its events onset is "
        "n/a too (sub-46/sub-46_task-alice_events.tsv)",
        "sub-52: raw data, no preprocessed image (no derivatives/sub-52); its events onset is "
        "n/a too (sub-52/sub-52_task-alice_events.tsv)",
    ]
    assert imported.notes[0].startswith(
        "23 run(s) whose image headers state no TR where their sidecars say RepetitionTime 2 s "
        "(sub-18, sub-22, sub-23, sub-24 and 19 more): the sheet takes the sidecars' 2 s"
    )
    report = imported.report()
    assert report.startswith(f"alice at {alice_root}: 23 subjects, 1 stories, 23 runs kept (0 "
                             "test), 0 excluded, 3 left out\n")  # fmt: skip
    assert "left out (not in the sheet):\n  sub-38: raw data, " in report


def test_alice_files_in_func_are_read_too(alice_root):
    """A copy that moved the events and sidecars into func/ (the BIDS place) reads the same."""
    before = importers.alice(alice_root).runs
    for sub in alice_root.glob("sub-*"):
        for path in sub.glob("sub-*_task-alice_*"):
            path.rename(sub / "func" / path.name)
    after = importers.alice(alice_root)
    pd.testing.assert_frame_equal(after.runs, before)
    assert len(after.left_out) == 3


def test_alice_spm_header_of_one_second_needs_the_override(alice_root, tmp_path, capsys):
    bold = alice_root / "derivatives/sub-41/sub-41_task-alice_bold_preprocessed.nii.gz"
    image(bold, 1.0)
    out = tmp_path / "runs.tsv"
    assert cli.main(["sheet", "alice", str(alice_root), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"brainshape: {bold}: its header says TR 1 s but its sidecar "
        "sub-41/sub-41_task-alice_bold.json says 2 s; correct RepetitionTime in "
        "sub-41/sub-41_task-alice_bold.json to use the header's, or, if the header is wrong, "
        "rerun with --tr-overrides-header (and set datasets.alice.tr_overrides_header: true in "
        "the config)\n"
    )
    assert err == f"brainshape: {doc_message('header-tr-disagrees-with-sidecar', alice_root)}\n"
    assert not out.exists()
    args = ["sheet", "alice", str(alice_root), "-o", str(out), "--tr-overrides-header"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert (
        "1 run(s) whose image headers say TR 1 s where their sidecars say RepetitionTime 2 s "
        "(sub-41): the sheet takes the sidecars' 2 s (--tr-overrides-header: set "
        "datasets.alice.tr_overrides_header: true in the config too)" in printed
    )
    assert set(pd.read_csv(out, sep="\t").tr) == {2.0}
    image(bold, 1500.0)  # a TR in ms whose unit was lost: set aside, the sidecar's taken
    assert set(importers.alice(alice_root).runs.tr) == {2.0}


# --- Narratives (ds002345) ----------------------------------------------------------------------

SPACE = "MNI152NLin2009cAsym"


@pytest.fixture
def narratives_root(tmp_path):
    """The milkyway, prettymouth and lucy runs as published (events, sidecars, scans.tsv,
    code/scan_exclude.json), with fMRIPrep 20.0.5-named derivatives at TR 1.5 (tiny images, no
    fMRIPrep sidecar), task masks and empty Gentle files."""
    root = tmp_path / "narratives"
    copy_files("ds002345", root)
    for events in root.glob("sub-*/func/*_events.tsv"):
        stem = events.name.removesuffix("_events.tsv")
        func = root / "derivatives/fmriprep" / events.parent.parent.name / "func"
        image(func / f"{stem}_space-{SPACE}_res-native_desc-preproc_bold.nii.gz", 1.5)
        placeholder(func / f"{stem}_desc-confounds_regressors.tsv")
    for task in ("milkyway", "prettymouth", "lucy"):
        mask = f"tpl-{SPACE}/tpl-{SPACE}_res-{task}_desc-brain_mask.nii.gz"
        placeholder(root / "derivatives/afni-nosmooth" / mask)
    for story in ("milkywayoriginal", "milkywayvodka", "milkywaysynonyms", "prettymouth", "lucy"):
        placeholder(root / "stimuli/gentle" / story / "align.json")
    return root


def test_narratives_story_rows_and_exclusions_as_published(narratives_root):
    imported = narratives(narratives_root)
    runs = imported.runs.set_index(["subject", "story"])
    # The story is the audio the events' story row names; it agrees with scans.tsv's condition.
    for scans in narratives_root.glob("sub-*/sub-*_scans.tsv"):
        table = pd.read_csv(scans, sep="\t", dtype=str, keep_default_na=False)
        hit = table[table.filename.str.contains("_task-milkyway_")]
        if len(hit):
            sub = scans.parent.name[4:]
            assert (sub, f"milkyway{hit.condition.iloc[0]}") in runs.index
    excluded = imported.runs[imported.runs.exclude]
    assert sorted(zip(excluded.subject, excluded.story, strict=True)) == [
        ("038", "milkywayvodka"), ("038", "prettymouth"), ("053", "lucy"), ("065", "lucy"),
        ("105", "milkywayoriginal"), ("105", "prettymouth"), ("123", "milkywaysynonyms"),
    ]  # fmt: skip
    assert set(excluded.reason.str.split(" [(]", regex=True).str[0]) == {
        "listed in code/scan_exclude.json"
    }
    # The story row the authors moved: flagged, whether or not the list excludes the run.
    flagged = [n for n in imported.notes if "the story row is" in n]
    assert flagged == [
        "sub-038_task-milkyway: the story row is 15 s after the first row of its events.tsv, "
        "where 51 of the 53 milkyway runs have 21 s (listed in code/scan_exclude.json)",
        "sub-038_task-prettymouth: the story row is 15 s after the first row of its events.tsv, "
        "where 38 of the 40 prettymouth runs have 21 s (listed in code/scan_exclude.json)",
        "sub-105_task-milkyway: the story row is 13.5 s after the first row of its events.tsv, "
        "where 51 of the 53 milkyway runs have 21 s (listed in code/scan_exclude.json)",
        "sub-105_task-prettymouth: the story row is 13.5 s after the first row of its "
        "events.tsv, where 38 of the 40 prettymouth runs have 21 s (listed in "
        "code/scan_exclude.json)",
    ]
    # 17 milkyway sidecars say 1.52 s where the images run at 1.5 s; lucy's onset is 3.0 s.
    assert (
        "17 run(s) whose image headers say TR 1.5 s where their sidecars say RepetitionTime "
        "1.52 s (sub-115_task-milkyway, sub-116_task-milkyway, sub-117_task-milkyway, "
        "sub-118_task-milkyway and 13 more): the sheet takes the headers' 1.5 s" in imported.notes
    )
    assert set(imported.runs.tr) == {1.5}
    assert (
        "lucy: the audio starts at 3 s, as ds002345 corrected it in version 1.1.3 (copies "
        "fetched before say 2 s)" in imported.notes
    )
    kept = imported.runs[~imported.runs.exclude]
    assert set(kept.offset) == {0.0, -3.0}  # music at 0 (milkyway, prettymouth); lucy at 3


def test_narratives_without_the_exclusion_list(narratives_root, tmp_path, capsys):
    (narratives_root / "code/scan_exclude.json").unlink()
    out = tmp_path / "runs.tsv"
    assert cli.main(["sheet", "narratives", str(narratives_root), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"brainshape: {narratives_root / 'code/scan_exclude.json'} does not exist; it lists the "
        "scans the dataset's authors left out (wrong story onsets, low intersubject "
        "correlation): fetch it (datalad get code/scan_exclude.json; it is also in "
        "github.com/snastase/narratives), or rerun with --without-scan-exclude to exclude none\n"
    )
    assert err == f"brainshape: {doc_message('scan-exclude-missing', narratives_root)}\n"
    imported = narratives(narratives_root, scan_exclude=False)
    excluded = imported.runs[imported.runs.exclude]
    # The runs whose story row was moved are still kept out: their first row is not the audio.
    assert sorted(excluded.subject + " " + excluded.story) == [
        "038 milkywayvodka", "038 prettymouth", "105 milkywayoriginal", "105 prettymouth",
    ]  # fmt: skip
    assert set(excluded.reason) == {
        "the story row of its events.tsv is 15 s after the first row, not 21 s as in the task's "
        "other runs: the first row's onset is not the audio onset",
        "the story row of its events.tsv is 13.5 s after the first row, not 21 s as in the "
        "task's other runs: the first row's onset is not the audio onset",
    }
    assert (
        "code/scan_exclude.json not read (--without-scan-exclude): it excludes no run"
        in imported.notes
    )


def test_narratives_lucy_onset_from_before_the_fix_is_reported(narratives_root):
    events = narratives_root / "sub-052/func/sub-052_task-lucy_events.tsv"
    events.write_text(events.read_text().replace("\n3.0\t", "\n2.0\t"))
    notes = narratives(narratives_root, tasks=["lucy"]).notes
    assert notes[-1] == (
        "lucy: 1 run(s) say the audio starts at 2 s (sub-052_task-lucy); ds002345 corrected it "
        "to 3 s in version 1.1.3 (CHANGES): the sheet takes the files' 2 s; update the dataset "
        "(datalad update) to use 3 s"
    )


# --- ds003020 -----------------------------------------------------------------------------------


def test_ds003020_rows_are_respdict_less_twenty(tmp_path):
    """The published file sizes (2,048 bytes + 8 per float64 value) give every story of every
    subject N - 20 rows of one voxel count, N from respdict.json; the test story holds 11
    (UTS01-03) or 6 (UTS04-09) such matrices: the average and 10 or 5 repeats."""
    respdict = json.loads((PUBLISHED / "ds003020/files/derivative/respdict.json").read_text())
    listed = tree("ds003020")
    hf5 = listed[listed.path.str.startswith("derivative/preprocessed_data/")]
    sub = hf5.path.str.split("/").str[2]
    story = hf5.path.str.split("/").str[3].str.removesuffix(".hf5")
    values = (hf5["size"] - 2048) / 8
    rows = story.map(respdict) - 20
    for subject in sorted(set(sub)):
        mine = (sub == subject) & (story != "wheretheressmoke")
        voxels = values[mine] / rows[mine]
        assert (voxels == voxels.iloc[0]).all() and voxels.iloc[0].is_integer(), subject
        test = (sub == subject) & (story == "wheretheressmoke")
        copies = values[test].iloc[0] / (rows[test].iloc[0] * voxels.iloc[0])
        assert round(copies, 4) == (11 if subject in ("UTS01", "UTS02", "UTS03") else 6)
    # 2.0045 s per TR instead of 2.0: the word clock drifts 0.0045 s per volume.
    assert round(0.0045 * respdict["wheretheressmoke"], 1) == 1.4
    assert 0.0045 * max(respdict.values()) > 2.0


def test_ds003020_subject_as_published_with_repeats_under_any_name(tmp_path):
    """UTS04's stories as published (tiny matrices of the published row counts); the test
    story's repeats found as a 3-D dataset whatever its name, or reported missing."""
    respdict = json.loads((PUBLISHED / "ds003020/files/derivative/respdict.json").read_text())
    root = tmp_path / "ds003020"
    copy_files("ds003020", root)
    listed = tree("ds003020").path
    for path in listed[listed.str.startswith("derivative/preprocessed_data/UTS04/")]:
        story = Path(path).stem
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(root / path, "w") as f:
            f.create_dataset("data", data=np.zeros((respdict[story] - 20, 3)))
            if story == "wheretheressmoke":
                f.create_dataset("reps", data=np.zeros((5, respdict[story] - 20, 3)))
    for path in listed[listed.str.startswith("derivative/TextGrids/")]:
        placeholder(root / path)
    imported = importers.ds003020(root)
    runs = imported.runs
    assert len(runs) == 26 and (runs.offset == 10.0).all() and (runs.tr == 2.0).all()
    test = runs[runs.split == "test"]
    assert test.story.tolist() == ["wheretheressmoke"] and test.repeats_key.tolist() == ["reps"]
    assert "UTS04: 26 stories (" in imported.found[0]
    assert "wheretheressmoke [test, repeats in 'reps']" in imported.found[0]
    with h5py.File(root / "derivative/preprocessed_data/UTS04/wheretheressmoke.hf5", "r+") as f:
        del f["reps"]
    imported = importers.ds003020(root)
    assert imported.runs.repeats_key.isna().all()
    assert (
        "UTS04: wheretheressmoke.hf5 holds no individual repeats (no dataset of repeats x rows "
        "x voxels beside 'data'; it holds data), so its repeat ceiling is unavailable; the "
        "inter-subject ceiling remains" in imported.notes
    )
    # The TR is the sheet's: the reference code's 2.0, or another; the offset follows it.
    other = importers.ds003020(root, tr=2.0045).runs
    assert set(other.tr) == {2.0045} and other.offset.tolist() == pytest.approx([10.045] * 26)
    with pytest.raises(BrainshapeError, match=r"^--tr 2004.5 is outside the 0.3-5 s a TR can be"):
        importers.ds003020(root, tr=2004.5)
