"""Checks made while the workflow is planned: what headers and small files can tell is refused
before any job runs, with one line naming the file, the value and the fix."""

import copy

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, SCHEMAS

from brainshape import checks, stimuli
from brainshape.config import load_registry_dict, validate
from brainshape.errors import BrainshapeError
from brainshape.sizing import JobSizing
from brainshape.study import Study

STORIES = ("alpha", "beta", "gamma")
SPACE = "MNI152NLin2009cAsym"


def make_dataset(root, n_trs=60, tr=2.0, words_end=100.0, confounds=("csf", "white_matter")):
    """One subject, three stories: words every second up to ``words_end`` s, runs of
    ``n_trs`` volumes at ``tr`` s (header), masks, confounds and an atlas with ROIs A and B."""
    for story in STORIES:
        onsets = np.arange(0.0, words_end - 0.4, 1.0)
        words = pd.DataFrame(
            {"word": ["word"] * len(onsets), "onset": onsets, "offset": onsets + 0.4}
        )
        stimuli.write_gentle(words, root / "stimuli" / story / "align.json")
        func = root / "derivatives" / "fmriprep" / "sub-01" / "func"
        func.mkdir(parents=True, exist_ok=True)
        stem = func / f"sub-01_task-{story}"
        img = nib.Nifti1Image(np.zeros((3, 3, 3, n_trs), dtype=np.float32), np.eye(4))
        img.header.set_zooms((1.0, 1.0, 1.0, tr))
        img.header.set_xyzt_units("mm", "sec")
        nib.save(img, f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz")
        nib.save(
            nib.Nifti1Image(np.ones((3, 3, 3), np.uint8), np.eye(4)),
            f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz",
        )
        pd.DataFrame({c: np.zeros(n_trs) for c in confounds}).to_csv(
            f"{stem}_desc-confounds_timeseries.tsv", sep="\t", index=False
        )
    labels = np.zeros((3, 3, 3), np.int16)
    labels[0], labels[2] = 1, 2
    nib.save(nib.Nifti1Image(labels, np.eye(4)), root / "atlas.nii.gz")
    pd.DataFrame({"index": [1, 2], "name": ["A", "B"]}).to_csv(
        root / "atlas.tsv", sep="\t", index=False
    )


def study(root, dataset=None, **sections):
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["registry"] = str(REPO / "config" / "models.demo.yaml")
    cfg["datasets"] = {
        "real": {
            "bids_root": str(root),
            "subjects": ["01"],
            "stories": list(STORIES),
            "atlas": {"image": "atlas.nii.gz", "labels": "atlas.tsv"},
            "fmriprep_dir": "derivatives/fmriprep",
            **(dataset or {}),
        }
    }
    for name, values in sections.items():
        cfg[name].update(values)
    cfg = validate(copy.deepcopy(cfg), SCHEMAS / "config.schema.yaml", "study.yaml")
    registry = load_registry_dict(cfg["registry"], SCHEMAS / "models.schema.yaml")
    return Study(cfg, registry, source="study.yaml")


def check(s):
    checks.check_study(s, JobSizing(s))


def test_a_consistent_dataset_passes(tmp_path):
    make_dataset(tmp_path)
    check(study(tmp_path, fmri={"confounds": ["csf"], "rois": ["A"]}))


def test_words_longer_than_the_run_are_refused_before_any_job(tmp_path):
    make_dataset(tmp_path, n_trs=40, words_end=100.0)  # 80 s of scan, 100 s of words
    bold = tmp_path / "derivatives/fmriprep/sub-01/func"
    with pytest.raises(BrainshapeError) as error:
        check(study(tmp_path, fmri={"confounds": []}))
    assert str(error.value) == (
        f"story alpha, sub-01: the words run to 99.4 s but "
        f"{bold / f'sub-01_task-alpha_space-{SPACE}_desc-preproc_bold.nii.gz'} covers word time "
        "up to 80.0 s (40 volumes at TR 2 s from offset 0 s); check that this is the right "
        "response file, TR and offset for the story"
    )


def test_a_configured_tr_must_agree_with_the_header(tmp_path):
    make_dataset(tmp_path, n_trs=60, tr=2.0)
    expected = (
        r"its header says TR 2 s but the config \(or runs sheet\) says 2.2 s; remove the "
        r"configured tr to use the header's, or, if the header is wrong, set "
        r"datasets.real.tr_overrides_header: true"
    )
    with pytest.raises(BrainshapeError, match=expected):
        check(study(tmp_path, dataset={"tr": 2.2}, fmri={"confounds": []}))
    # The documented override: the header is wrong, the configured TR is used.
    check(study(tmp_path, dataset={"tr": 2.2, "tr_overrides_header": True}, fmri={"confounds": []}))


def test_confound_and_roi_names_are_checked_in_the_files(tmp_path):
    make_dataset(tmp_path, confounds=("csf",))
    conf = (
        tmp_path
        / "derivatives/fmriprep/sub-01/func/sub-01_task-alpha_desc-confounds_timeseries.tsv"
    )
    with pytest.raises(BrainshapeError) as error:
        check(study(tmp_path, fmri={"confounds": ["csf", "white_matter"]}))
    assert str(error.value) == (
        f"confounds table {conf} lacks column(s) white_matter that fmri.confounds asks for (it "
        "has: csf); fix fmri.confounds in study.yaml"
    )
    with pytest.raises(BrainshapeError) as error:
        check(study(tmp_path, fmri={"confounds": ["csf"], "rois": ["A", "STG"]}))
    assert str(error.value) == (
        f"study.yaml: fmri.rois lists STG, which no label of datasets.real has "
        f"({tmp_path / 'atlas.tsv'}: A, B); fix the names or set fmri.rois to null for every label"
    )


def test_delays_out_of_order_and_placeholders(tmp_path):
    make_dataset(tmp_path)
    with pytest.raises(BrainshapeError, match=r"encoding.delays \[2, 1, 3\] must be in increasing"):
        check(study(tmp_path, encoding={"delays": [2, 1, 3]}, fmri={"confounds": ["csf"]}))
    # Empty files stand in for data not there yet: planning reads none of them.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            path.write_bytes(b"")
    check(study(tmp_path, fmri={"confounds": ["csf"], "rois": ["A"]}))


def test_story_folds_refuse_subjects_with_too_few_stories_while_planning(tmp_path):
    """Leave-one-story-out needs 3 stories per subject (2 beside a test story): a subject with
    fewer is refused while planning, not by its encode job after the GPU jobs ran."""
    heard = {"01": "abc", "02": "ab", "03": "aT", "04": "abT"}  # T: the test story
    lines = ["subject\tstory\tresponse\tformat\twords\twords_format\ttr\tsplit"]
    for sub, stories in heard.items():
        for x in stories:
            split = "test" if x == "T" else "train"
            row = [sub, f"story{x}", f"{sub}/{x}.hf5", "hdf5", f"g/{x}.TextGrid", "textgrid", "2"]
            lines.append("\t".join([*row, split]))
    (tmp_path / "runs.tsv").write_text("\n".join(lines) + "\n")
    stories = ["storya", "storyb", "storyc", "storyT"]
    sheet = {"runs": str(tmp_path / "runs.tsv"), "subjects": list(heard), "stories": stories}
    with pytest.raises(BrainshapeError) as error:
        check(study(tmp_path, dataset=sheet))
    assert str(error.value) == (
        "study.yaml: encoding.folds: stories needs 3 stories per subject (or 2 beside a test "
        "story), and datasets.real has 2 subject(s) with fewer: 02 (storya, storyb); 03 (storya, "
        "storyT (test)); set encoding.folds: blocks, or leave them out (datasets.real.subjects, "
        "or exclude their rows in the runs sheet)"
    )
    # Blocks cut folds within a subject's runs: one story is enough. (The check that follows
    # finds the response files missing: planning went past the folds.)
    with pytest.raises(BrainshapeError, match="input file"):
        check(study(tmp_path, dataset=sheet, encoding={"folds": "blocks"}))


def test_a_configured_tr_outside_seconds_is_refused(tmp_path):
    make_dataset(tmp_path)
    with pytest.raises(BrainshapeError) as error:
        check(study(tmp_path, dataset={"tr": 1500}, fmri={"confounds": []}))
    assert str(error.value) == (
        "study.yaml: datasets.real: tr is 1500 s, outside the 0.3-5 s a repetition time can be; "
        "write it in seconds"
    )


def test_transcripts_are_inputs_of_the_words_job_and_checked_while_planning(tmp_path):
    from brainshape import params

    make_dataset(tmp_path)
    for story in STORIES[:2]:
        (tmp_path / "text" / f"{story}.txt").parent.mkdir(exist_ok=True)
        (tmp_path / "text" / f"{story}.txt").write_text("word " * 99)
    words = {"transcript": "text/{story}.txt", "case": "lower"}
    s = study(tmp_path, {"words": words}, fmri={"confounds": []})
    settings = params.words(s, "real")
    assert settings["case"] == "lower"
    assert settings["sources"]["alpha"]["transcript"] == str(tmp_path / "text" / "alpha.txt")
    assert s.word_inputs("real", "beta") == [
        tmp_path / "stimuli" / "beta" / "align.json",
        tmp_path / "text" / "beta.txt",
    ]
    with pytest.raises(BrainshapeError) as error:
        check(s)
    assert str(error.value) == (
        f"datasets.real: 1 input file(s) missing: {tmp_path / 'text' / 'gamma.txt'}. Check "
        "bids_root, fmriprep_dir, space, subjects and stories in study.yaml"
    )
    plain = study(tmp_path, fmri={"confounds": []})
    assert "transcript" not in params.words(plain, "real")["sources"]["alpha"]
    assert params.words(plain, "real")["case"] == "auto"  # the schema's default
