"""Importers on the stand-ins of ds003020, Narratives and Alice: the right rows, clocks and
exclusions; bad input stops with one line and writes nothing; the planted signal is found at
the sheet's offset and not one TR later."""

import csv
import functools
import json
import re
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from threadpoolctl import threadpool_limits

from brainshape import cli, demo, importers, sheet, standins, stimuli
from brainshape.encoding import lanczos_downsample
from brainshape.errors import BrainshapeError

REGISTRY = REPO / "config" / "models.demo.yaml"
LABELS = "standin/labels/{subject}.tsv"


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


@pytest.fixture(scope="session")
def model_root(standin):
    return standin.model_root


@pytest.fixture(scope="session")
def lebel(standin):
    return standin("ds003020")


@pytest.fixture(scope="session")
def narratives(standin):
    return standin("narratives")


@pytest.fixture(scope="session")
def alice(standin):
    return standin("alice")


def truth_runs(truth) -> pd.DataFrame:
    return pd.DataFrame(truth["runs"]).astype({"subject": str})


def kept(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[~runs.exclude].reset_index(drop=True)


# --- the sheets ---------------------------------------------------------------------------------


def test_ds003020_sheet(lebel):
    root, truth = lebel
    imported = importers.ds003020(root, labels=LABELS)
    runs = imported.runs
    assert list(runs.columns) == sheet.columns()
    expected = truth_runs(truth).sort_values(["subject", "story"]).reset_index(drop=True)
    assert runs[["subject", "story", "run"]].values.tolist() == (
        expected[["subject", "story", "run"]].values.tolist()
    )
    # Subjects heard different stories: 4, 3, 4 and 2 of the six, and the test story.
    assert runs.groupby("subject").size().to_dict() == {
        "UTS01": 5, "UTS02": 4, "UTS03": 5, "UTS04": 3,
    }  # fmt: skip
    assert (runs.offset == 10.0).all() and (runs.tr == 2.0).all()
    assert (runs.removed_start == 10).all() and (runs.removed_end == 10).all()
    assert runs.offset.tolist() == expected.offset.tolist()
    assert set(runs.format) == {"hdf5"} and set(runs.key) == {"data"}
    assert set(runs.tier) == {"2"} and set(runs.words_format) == {"textgrid"}
    test = runs[runs.split == "test"]
    assert sorted(test.subject) == ["UTS01", "UTS02", "UTS03", "UTS04"]
    assert set(test.story) == {"wheretheressmoke"}
    # As published, every subject's test story holds its individual repeats.
    assert set(test.repeats_key) == {standins.LEBEL_REPEATS_KEY}
    assert runs[runs.split == "train"].repeats_key.isna().all()
    assert runs.labels.tolist() == [f"standin/labels/{s}.tsv" for s in runs.subject]
    assert not runs.exclude.any()
    for row in runs.itertuples():
        with h5py.File(root / row.response) as f:
            assert f["data"].dtype == np.float64
            assert (
                f["data"].shape[0]
                == json.loads((root / "derivative" / "respdict.json").read_text())[row.story] - 20
            )
    report = imported.report()
    assert report.startswith(
        f"ds003020 at {root}: 4 subjects, 7 stories, 17 runs kept (4 test), 0 excluded\nfound:\n"
        "  UTS01: 5 stories (alternateithicatom, avatar, legacy, souls, wheretheressmoke "
        "[test, repeats in 'individual_repeats'])\n"
    )
    assert (
        "2 stories of respdict.json have no response file here (not fetched, or not heard by "
        "these subjects): haveyoumethimyet, inamoment" in report
    )
    # The published root files come along: the task sidecars say 2 s, as the sheet does.
    sidecar = json.loads((root / "task-wheretheressmoke_bold.json").read_text())
    assert sidecar["RepetitionTime"] == 2 and (root / "participants.tsv").is_file()


def test_ds003020_without_labels_or_test_story(lebel):
    root, _ = lebel
    runs = importers.ds003020(root, test_story=None).runs
    assert runs.labels.isna().all() and (runs.split == "train").all()


def test_narratives_sheet(narratives):
    root, truth = narratives
    imported = importers.run("narratives", root)
    runs = imported.runs
    expected = truth_runs(truth).set_index(["subject", "story", "run"])
    assert len(runs) == len(expected) == 16
    for row in runs.itertuples():
        truth_row = expected.loc[(row.subject, row.story, row.run)]
        task = "milkyway" if row.story.startswith("milkyway") else row.story
        if not row.exclude:
            assert row.offset == truth_row.offset == -truth_row.audio_onset
            assert row.words == f"stimuli/gentle/{row.story}/align.json"
            assert row.mask == (
                "derivatives/afni-nosmooth/tpl-MNI152NLin2009cAsym/"
                f"tpl-MNI152NLin2009cAsym_res-{task}_desc-brain_mask.nii.gz"
            )
        assert bool(row.exclude) == isinstance(truth_row.excluded, str)
        assert row.tr == 1.5 and row.format == "fmriprep" and row.words_format == "gentle"
        assert row.confounds.endswith("_desc-confounds_regressors.tsv")
        assert "_res-native_desc-preproc_bold.nii.gz" in row.response
    # The audio the story row names is the story: milkyway's condition picks its transcript.
    milky = runs[runs.story.str.startswith("milkyway")]
    assert dict(zip(milky.subject, milky.story, strict=True)) == {
        "038": "milkywayvodka", "116": "milkywaysynonyms", "127": "milkywaysynonyms",
    }  # fmt: skip
    pieman = runs[(runs.subject == "002") & (runs.story == "pieman")]
    assert pieman.run.tolist() == [1, 2] and not pieman.exclude.any()
    assert pieman.response.str.contains("_run-1_|_run-2_").all()
    excluded = runs[runs.exclude]
    assert excluded[["subject", "story", "run", "reason"]].values.tolist() == [
        ["001", "pieman", 1, "listed in code/scan_exclude.json (sub-001_task-pieman_run-1)"],
        ["001", "pieman", 2, "listed in code/scan_exclude.json (sub-001_task-pieman_run-2)"],
        ["038", "milkywayvodka", 1, "listed in code/scan_exclude.json (sub-038_task-milkyway)"],
        ["038", "pieman", 1, "listed in code/scan_exclude.json (sub-038_task-pieman)"],
        ["038", "prettymouth", 1, "listed in code/scan_exclude.json (sub-038_task-prettymouth)"],
        ["049", "schema", 1, "the run holds several stories and movie clips (task schema)"],
        ["053", "lucy", 1, "listed in code/scan_exclude.json (sub-053_task-lucy)"],
    ]
    assert imported.notes == [
        "sub-038_task-milkyway: the story row is 15 s after the first row of its events.tsv, "
        "where 2 of the 3 milkyway runs have 21 s (listed in code/scan_exclude.json)",
        "2 run(s) whose image headers say TR 1.5 s where their sidecars say RepetitionTime "
        "1.52 s (sub-116_task-milkyway, sub-127_task-milkyway): the sheet takes the headers' "
        "1.5 s",
        "lucy: the audio starts at 3 s, as ds002345 corrected it in version 1.1.3 (copies "
        "fetched before say 2 s)",
    ]
    report = imported.report()
    assert "excluded:\n  001 pieman run 1: listed in code/scan_exclude.json" in report
    assert "  002: 2 runs (pieman, pieman run 2)\n" in report
    assert "  146: 1 run (merlin)\n" in report
    # The raw runs' sidecars and events, and the scans tables, are the published files.
    published = standins.PUBLISHED / "ds002345"
    for rel in ("sub-116/func/sub-116_task-milkyway_bold.json", "sub-038/sub-038_scans.tsv",
                "code/scan_exclude.json"):  # fmt: skip
        assert (root / rel).read_bytes() == (published / rel).read_bytes()
    assert not list(root.glob("task-*_bold.json"))  # no dataset-level sidecar, as published


def test_narratives_tasks_filter(narratives):
    root, _ = narratives
    runs = importers.run("narratives", root, tasks=["milkyway", "black"]).runs
    assert sorted(set(runs.story)) == ["black", "milkywaysynonyms", "milkywayvodka"]


def test_alice_sheet(alice):
    root, truth = alice
    imported = importers.alice(root, tr_overrides_header=True)
    runs = imported.runs
    onsets = {r["subject"]: r["audio_onset"] for r in truth["runs"]}
    assert runs.subject.tolist() == ["18", "22", "23", "39", "41", "42"]
    assert set(runs.story) == {"alice"} and set(runs.format) == {"nifti"}
    assert (runs.removed_start == 10).all() and (runs.removed_end == 0).all()
    assert set(runs.words) == {"code/annotations.tsv"} and set(runs.words_format) == {"annotations"}
    for row in runs.itertuples():
        assert row.offset == 10 * 2.0 - onsets[row.subject] and row.tr == 2.0
    assert onsets["18"] == 0.657  # the published onsets
    assert runs["mask"].isna().all() and runs.confounds.isna().all() and not runs.exclude.any()
    assert imported.left_out == [f"sub-{s}: raw data, " + why for s, why in [
        ("38", "derivatives/sub-38 holds no preprocessed image (only sub-38_preprocess.mat)"),
        ("46", "no preprocessed image (no derivatives/sub-46); its events onset is n/a too "
               "(sub-46/sub-46_task-alice_events.tsv)"),
        ("52", "no preprocessed image (no derivatives/sub-52); its events onset is n/a too "
               "(sub-52/sub-52_task-alice_events.tsv)"),
    ]]  # fmt: skip
    assert imported.notes == [
        "2 run(s) whose image headers state no TR where their sidecars say RepetitionTime 2 s "
        "(sub-23, sub-39): the sheet takes the sidecars' 2 s",
        "2 run(s) whose image headers say TR 1 s where their sidecars say RepetitionTime 2 s "
        "(sub-41, sub-42): the sheet takes the sidecars' 2 s (--tr-overrides-header: set "
        "datasets.alice.tr_overrides_header: true in the config too)",
        "voxel grids differ between subjects (5 grids: 10x8x6: 18, 42; 11x9x6: 22; 12x9x7: 23; "
        "13x8x7: 39; 12x10x6: 41)",
    ]
    # The layout as published: events and sidecars in sub-XX/, no func/, no root sidecar.
    assert not list(root.glob("sub-*/func")) and not (root / "task-alice_bold.json").exists()
    # An onset given on the command line replaces the events' (and is said so).
    given = importers.alice(root, onsets={"23": 1.5}, tr_overrides_header=True)
    assert given.runs.set_index("subject").offset["23"] == 18.5
    assert "sub-23: --onset 1.5 s replaces the events' 0.282 s" in given.notes


def test_fmriprep_generic(narratives, tmp_path):
    """Any BIDS + fMRIPrep layout: sessions, runs, res-, both confounds names, own masks."""
    root, _ = narratives
    data = tmp_path / "bids"
    shutil.copytree(root, data)
    func = data / "derivatives" / "fmriprep" / "sub-053" / "func"
    # sub-053 heard pieman in two sessions: runs 1 and 2 of the sheet.
    for ses in ("1", "2"):
        folder = data / "derivatives" / "fmriprep" / "sub-053" / f"ses-{ses}" / "func"
        folder.mkdir(parents=True)
        for path in func.glob("sub-053_task-pieman_*"):
            name = path.name.replace("sub-053_task-pieman", f"sub-053_ses-{ses}_task-pieman")
            shutil.copy(path, folder / name)
    for path in func.glob("sub-053_task-pieman_*"):
        path.unlink()
    for bold in (data / "derivatives" / "fmriprep").rglob("*_desc-preproc_bold.nii.gz"):
        mask = bold.name.replace("_desc-preproc_bold", "_desc-brain_mask")
        shutil.copy(
            data / "derivatives/afni-nosmooth/tpl-MNI152NLin2009cAsym/"
            "tpl-MNI152NLin2009cAsym_res-pieman_desc-brain_mask.nii.gz",
            bold.parent / mask,
        )
    (func / "sub-053_task-tunnel_desc-confounds_regressors.tsv").rename(
        func / "sub-053_task-tunnel_desc-confounds_timeseries.tsv"
    )
    imported = importers.fmriprep(
        data, tasks=["pieman", "tunnel"], words="stimuli/gentle/{story}/align.json"
    )
    runs = imported.runs
    sub = runs[runs.subject == "053"]
    assert sub[["story", "run"]].values.tolist() == [["pieman", 1], ["pieman", 2], ["tunnel", 1]]
    assert sub.response.str.contains("ses-1").tolist() == [True, False, False]
    assert sub.confounds.iloc[2].endswith("_desc-confounds_timeseries.tsv")
    assert sub["mask"].str.endswith("_res-native_desc-brain_mask.nii.gz").all()
    assert (runs.offset == 0.0).all() and not runs.exclude.any()
    from_events = importers.fmriprep(
        data, tasks=["tunnel"], words="stimuli/gentle/{story}/align.json", onset_from_events=True
    ).runs
    assert (from_events.offset == -3.0).all()
    with pytest.raises(
        BrainshapeError,
        match=exactly(
            f"runs sheet of {data}: every run is excluded (no word timings "
            "stimuli/tunnel/align.json, ...); nothing is left to analyse: fix the first reason, "
            "or check the options"
        ),
    ):
        importers.fmriprep(data, tasks=["tunnel"])


# --- the stand-ins' word timings ----------------------------------------------------------------


def test_lebel_textgrids_hold_markers_that_never_reach_the_words(lebel):
    root, _ = lebel
    runs = importers.ds003020(root).runs
    formats = set()
    for row in runs.drop_duplicates("story").itertuples():
        path = root / row.words
        text = path.read_text()
        formats.add("item [" in text)
        tiers = [(t.name, t.kind, t.items) for t in stimuli.textgrid_tiers(path)]
        assert [name for name, _, _ in tiers] == ["phone", "word"]
        labels = [label for _, _, label in tiers[1][2]]
        assert {"sentence_start", "sentence_end"} <= {label.lower() for label in labels}
        assert any(label.startswith("{") for label in labels)
        words = stimuli.read_words(path, "textgrid", tier=row.tier)
        assert not stimuli.is_nonspeech(words.word).any()
        assert len(words) == len(labels) - stimuli.is_nonspeech(labels).sum()
    assert formats == {True, False}  # long and short TextGrids in one dataset


def test_alice_annotations_as_published(alice):
    """code/annotations.tsv with the published columns and CRLF line ends; clitics untimed and
    written as the published file writes them (``would`` ``nt``, ``what`` ``’s``)."""
    root, truth = alice
    path = root / "code" / "annotations.tsv"
    assert path.read_bytes().count(b"\r\n") == len(path.read_bytes().splitlines())
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    header = (standins.PUBLISHED / "ds002322/code/annotations_header.tsv").read_text()
    assert list(table.columns) == header.strip().split("\t")
    assert list(table.columns[:3]) == ["Words", "Word Onset", "Word Offset"]
    untimed = table[table["Word Onset"] == ""]
    assert len(untimed) == truth["untimed_words"] > 5
    assert not untimed.Words.str.contains("'").any()
    assert untimed.Words.str.startswith("’").any() and untimed.Words.isin(["nt", "s"]).any()
    words = stimuli.read_words(path, "annotations")
    assert (~words.aligned).sum() == len(untimed)
    assert words.onset.iloc[0] >= 20.0  # 20 s of silence lead the audio


# --- bad input ----------------------------------------------------------------------------------


def run_cli(args, tmp_path, capsys):
    out = tmp_path / "runs.tsv"
    code = cli.main(["sheet", *map(str, args), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and not out.exists(), "a failed import must write nothing"
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0].removeprefix("brainshape: ")


def test_missing_hdf5_key(lebel, tmp_path, capsys):
    root, _ = lebel
    data = tmp_path / "ds003020"
    shutil.copytree(root, data)
    path = data / "derivative/preprocessed_data/UTS02/souls.hf5"
    with h5py.File(path, "r+") as f:
        f.move("data", "resp")
    assert run_cli(["ds003020", data], tmp_path, capsys) == (
        f"{path} has no dataset 'data' (it holds: resp); ds003020's responses are in 'data': "
        "re-fetch the file (datalad get derivative/preprocessed_data/UTS02/souls.hf5)"
    )


def test_rows_not_matching_respdict(lebel, tmp_path, capsys):
    root, _ = lebel
    data = tmp_path / "ds003020"
    shutil.copytree(root, data)
    respdict = json.loads((data / "derivative/respdict.json").read_text())
    respdict["avatar"] += 1
    (data / "derivative/respdict.json").write_text(json.dumps(respdict))
    n = respdict["avatar"]
    assert run_cli(["ds003020", data], tmp_path, capsys) == (
        f"{data / 'derivative/preprocessed_data/UTS01/avatar.hf5'}: dataset 'data' has {n - 21} "
        f"rows, but derivative/respdict.json gives avatar {n} volumes, so {n - 20} rows are "
        "expected (the first and last 10 removed); re-fetch the file (datalad get "
        "derivative/preprocessed_data/UTS01/avatar.hf5) or respdict.json"
    )


def test_row_whose_file_is_missing(lebel, tmp_path, capsys):
    root, _ = lebel
    data = tmp_path / "ds003020"
    shutil.copytree(root, data)
    (data / "derivative/TextGrids/legacy.TextGrid").unlink()
    runs = importers.ds003020(root).runs
    row = int(np.flatnonzero(runs.story == "legacy")[0]) + 1
    assert run_cli(["ds003020", data], tmp_path, capsys) == (
        f"runs sheet of {data}, row {row} (subject UTS01, story legacy): words "
        f"{data / 'derivative/TextGrids/legacy.TextGrid'} does not exist; fetch it (datalad get "
        "derivative/TextGrids/legacy.TextGrid) or fix the row"
    )


def test_unknown_task(narratives, tmp_path, capsys):
    root, _ = narratives
    assert run_cli(["narratives", root, "--task", "sherlock"], tmp_path, capsys) == (
        f"{root / 'derivatives/fmriprep'} has no run of task(s) sherlock; its tasks are black, "
        "lucy, merlin, milkyway, pieman, prettymouth, schema, tunnel: fix --task"
    )


def test_onset_na_that_cannot_be_excluded(narratives, alice, tmp_path, capsys):
    root, _ = narratives
    data = tmp_path / "narratives"
    shutil.copytree(root, data)
    events = data / "sub-001/func/sub-001_task-tunnel_events.tsv"
    events.write_text(events.read_text().replace("\n3.0\t", "\nn/a\t", 1))
    assert run_cli(["narratives", data], tmp_path, capsys) == (
        f"{events}: the first row's onset is n/a, so the audio onset of the run is unknown; "
        "write it into the file"
    )
    root, _ = alice
    data = tmp_path / "alice"
    shutil.copytree(root, data)
    for sub in standins.ALICE_HEADER_TR:
        path = data / f"sub-{sub}/sub-{sub}_task-alice_events.tsv"
        lines = path.read_text().splitlines()
        lines[1] = "n/a\t" + lines[1].split("\t", 1)[1]
        path.write_text("\n".join(lines) + "\n")
    message = run_cli(["alice", data, "--tr-overrides-header"], tmp_path, capsys)
    assert message == (
        f"runs sheet of {data}: every run is excluded (the audio onset is n/a in "
        "sub-18/sub-18_task-alice_events.tsv; give it with --onset 18=SECONDS to keep the "
        "subject, ...); nothing is left to analyse: fix the first reason, or check the options"
    )
    assert run_cli(
        ["alice", data, "--onset", "99=1", "--tr-overrides-header"], tmp_path, capsys
    ) == (f"--onset names subject(s) 99, which {data / 'derivatives'} does not hold; fix --onset")


def test_duplicate_runs(narratives, tmp_path, capsys):
    root, _ = narratives
    data = tmp_path / "narratives"
    shutil.copytree(root, data)
    func = data / "derivatives/fmriprep/sub-146/func"
    bold = next(func.glob("*_desc-preproc_bold.nii.gz"))
    shutil.copy(bold, func / bold.name.replace("res-native", "res-2"))
    assert run_cli(["fmriprep", data], tmp_path, capsys) == (
        f"{func}: one run has several preprocessed images (sub-146_task-merlin_space-"
        "MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz, sub-146_task-merlin_space-"
        "MNI152NLin2009cAsym_res-native_desc-preproc_bold.nii.gz); choose one with --space and "
        "--res"
    )
    # A written sheet with a run twice stops with the rows (brainshape.sheet).
    runs = importers.run("narratives", root).runs
    path = tmp_path / "twice.tsv"
    sheet.write_sheet(path, pd.concat([runs, runs.iloc[[3]]], ignore_index=True))
    with pytest.raises(BrainshapeError, match=rf"rows 4, {len(runs) + 1} are the same run \(subj"):
        sheet.read_sheet(path)


def test_cli_writes_the_sheet_and_prints_the_report(alice, tmp_path, capsys):
    root, _ = alice
    out = tmp_path / "sheets" / "alice.tsv"
    args = ["sheet", "alice", str(root), "-o", str(out), "--tr-overrides-header"]
    assert cli.main([*args, "--onset", "sub-23=1.5"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(
        f"alice at {root}: 6 subjects, 1 stories, 6 runs kept (0 test), 0 excluded, 3 left out\n"
    )
    assert printed.endswith(f"runs sheet written to {out} (paths relative to {root}: bids_root)\n")
    runs = sheet.read_sheet(out)
    assert runs.set_index("subject").loc["23", "offset"] == 18.5
    assert cli.main(["sheet", "alice", str(root), "--onset", "23=soon"]) == 1
    assert capsys.readouterr().err == (
        "brainshape: --onset '23=soon' is not SUBJECT=SECONDS (e.g. --onset 23=1.5)\n"
    )


# --- planted signal at the sheet's offset ------------------------------------------------------


def _fir(x: np.ndarray, delays=(1, 2, 3, 4)) -> np.ndarray:
    out = []
    for d in delays:
        shifted = np.zeros_like(x)
        shifted[d:] = x[:-d]
        out.append(shifted)
    return np.hstack(out)


def _z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / x.std(0)


def _residual(y: np.ndarray, *columns: np.ndarray) -> np.ndarray:
    design = np.column_stack([np.ones(len(y)), np.linspace(-1, 1, len(y)), *columns])
    return y - design @ np.linalg.lstsq(design, y, rcond=None)[0]


@functools.cache
def _roi_mean(root: Path, row: tuple, roi: str, hemi: str) -> np.ndarray:
    """The ROI x hemisphere mean of one run (``row``: format, response, key, labels,
    confounds): HDF5 columns from the subject's table; NIfTI voxels from the atlas mapped
    through world coordinates (each subject's grid is its own), cleaned of a linear trend (and
    of the confounds an fMRIPrep run has)."""
    fmt, response, key, labels, confounds = row
    if fmt == "hdf5":
        table = pd.read_csv(root / labels, sep="\t")
        columns = table[(table.roi == roi) & (table.hemisphere == hemi)].column
        with h5py.File(root / response) as f:
            return f[key][:][:, columns.to_numpy()].mean(axis=1)
    img = nib.load(root / response)
    data = np.asarray(img.dataobj, dtype=np.float64).reshape(-1, img.shape[3])
    atlas = nib.load(root / standins.ATLAS_IMAGE)
    ijk = np.indices(img.shape[:3]).reshape(3, -1).T
    world = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
    a = np.round((world - atlas.affine[:3, 3]) / standins.VOXEL_MM).astype(int)
    inside = np.all((a >= 0) & (a < atlas.shape), axis=1)
    label = np.zeros(len(ijk), dtype=int)
    label[inside] = np.asarray(atlas.dataobj)[tuple(a[inside].T)]
    side = world[:, 0] < 0 if hemi == "L" else world[:, 0] > 0
    chosen = (label == standins.Grid.rois.index(roi) + 1) & side & (data.std(axis=1) > 0)
    y = data[chosen].mean(axis=0)
    if fmt == "fmriprep":
        motion = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
        table = pd.read_csv(root / confounds, sep="\t")[[*motion, "csf", "white_matter"]]
        return _residual(y, _z(table.to_numpy()))
    return _residual(y)


def cv_scores(root, runs, words, feats, roi, hemi, shift=0.0, alpha=10.0) -> np.ndarray:
    """Per subject: r of a ridge model of the ROI mean from the FIR-delayed features at the
    sheet's clock (``offset + shift + (j + 0.5) * tr``), leaving one run out (4 contiguous
    blocks for a subject with one run)."""
    scores = []
    with threadpool_limits(1):  # small solves: threads only contend on a shared machine
        for _, rows in kept(runs).groupby("subject"):
            scores.append(_cv_subject(root, rows, words, feats, roi, hemi, shift, alpha))
    return np.array(scores)


def _cv_subject(root, rows, words, feats, roi, hemi, shift, alpha) -> float:
    """r of the held-out predictions of one subject's runs (``rows``)."""
    xs, ys, groups = [], [], []
    for k, row in enumerate(rows.itertuples()):
        files = (row.format, row.response, row.key, row.labels, row.confounds)
        y = _roi_mean(root, files, roi, hemi)
        times = row.offset + shift + (np.arange(len(y)) + 0.5) * row.tr
        midpoints = stimuli.word_times(stimuli.stack_words({row.story: words[row.story]}))
        x = lanczos_downsample(feats[row.story], midpoints[row.story], times, window=3)
        xs.append(_fir(_z(x)))
        ys.append(_z(y))
        groups.append(np.full(len(y), k))
    x, y, g = np.vstack(xs), np.concatenate(ys), np.concatenate(groups)
    if len(rows) == 1:
        g = np.arange(len(y)) * 4 // len(y)
    pred = np.zeros_like(y)
    for fold in np.unique(g):
        train = g != fold
        mean, std = x[train].mean(0), x[train].std(0) + 1e-9
        a = (x[train] - mean) / std
        beta = np.linalg.solve(a.T @ a + alpha * len(a) * np.eye(a.shape[1]), a.T @ y[train])
        pred[~train] = ((x[~train] - mean) / std) @ beta
    return float(np.corrcoef(pred, y)[0, 1])


@pytest.mark.parametrize("name", ["ds003020", "narratives", "alice"])
def test_planted_signal_sits_at_the_sheets_offset(name, request, model_root):
    root, truth = request.getfixturevalue({"ds003020": "lebel"}.get(name, name))
    kw = {"ds003020": {"labels": LABELS}, "alice": {"tr_overrides_header": True}}.get(name, {})
    runs = importers.run(name, root, **kw).runs
    first = kept(runs).drop_duplicates("story")
    words = {
        r.story: stimuli.read_words(root / r.words, r.words_format,
                                    **({"tier": r.tier} if r.words_format == "textgrid" else {}))
        for r in first.itertuples()
    }  # fmt: skip
    planted = truth["planted"][0]
    # One entry per layer (planted_features_for wants distinct ROIs; only the layers count).
    rois = ["STG", "IFG", "PREC", "MTG", "AG"]
    entries = [{**planted, "layer": k, "roi": rois[k]} for k in range(5)]
    feats = demo.planted_features_for(entries, words, REGISTRY, model_root, **truth["features"])
    layer = {k[2]: v for k, v in feats.items()}
    roi, hemi = planted["roi"], planted["hemisphere"]
    at_offset = cv_scores(root, runs, words, layer[2], roi, hemi)
    later = cv_scores(root, runs, words, layer[2], roi, hemi, shift=float(runs.tr.iloc[0]))
    # The planted layer drives the planted ROI at the sheet's clock ...
    assert at_offset.min() > 0.25 and at_offset.mean() > 0.55, at_offset
    # ... and features one TR late lose the part of the response past the last delay.
    assert (later < at_offset).all() and (at_offset - later).mean() > 0.04, (at_offset, later)
    others = [cv_scores(root, runs, words, layer[k], roi, hemi).mean() for k in (0, 1, 3, 4)]
    assert at_offset.mean() > max(others), (at_offset.mean(), others)
    for null_roi in truth["null"]:
        null = cv_scores(root, runs, words, layer[2], null_roi["roi"], null_roi["hemisphere"])
        assert abs(null.mean()) < 0.1 and np.abs(null).max() < 0.3, (null_roi, null)


def test_standins_are_deterministic(alice, model_root, tmp_path, capsys):
    root, truth = alice
    again = tmp_path / "alice"
    args = ["standin", "alice", str(again), "--registry", str(REGISTRY)]
    assert cli.main([*args, "--model-root", str(model_root)]) == 0
    assert capsys.readouterr().out.endswith(
        f"alice stand-in written to {again} (ground truth: {again}/standin/ground_truth.json)\n"
    )
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (root / rel).read_bytes() == (again / rel).read_bytes(), rel
    with pytest.raises(BrainshapeError, match="is not empty; give a new folder for the stand-in"):
        standins.generate("alice", again, registry_path=REGISTRY, model_root=model_root)


def test_milkyway_condition_from_participants_or_excluded(narratives, tmp_path):
    """Where the events name no audio file, milkyway's condition selects the transcript: the
    subject's scans.tsv, else participants.tsv; with neither the run is excluded."""
    root, _ = narratives
    data = tmp_path / "narratives"
    shutil.copytree(root, data)
    for sub in ("116", "127"):
        events = data / f"sub-{sub}/func/sub-{sub}_task-milkyway_events.tsv"
        table = pd.read_csv(events, sep="\t", dtype=str)
        table.drop(columns="stim_file").to_csv(events, sep="\t", index=False)
        (data / f"sub-{sub}" / f"sub-{sub}_scans.tsv").unlink()
    participants = data / "participants.tsv"
    table = pd.read_csv(participants, sep="\t", dtype=str, keep_default_na=False)
    row = table.participant_id == "sub-127"
    table.loc[row, "condition"] = table.loc[row, "condition"].str.replace("synonyms", "n/a")
    table.to_csv(participants, sep="\t", index=False)
    runs = importers.run("narratives", data, tasks=["milkyway"]).runs.set_index("subject")
    assert runs.loc["116", "story"] == "milkywaysynonyms" and not runs.loc["116", "exclude"]
    assert runs.loc["127", "exclude"] and runs.loc["127", "reason"] == (
        "no condition for milkyway in the subject's _scans.tsv or participants.tsv; the "
        "condition (original, vodka, synonyms) selects the transcript"
    )
