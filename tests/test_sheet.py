"""The runs sheet: one row per subject, story and run, validated against its schema."""

import pandas as pd
import pytest

from brainshape import sheet
from brainshape.errors import BrainshapeError

HEADER = "subject\tstory\trun\tresponse\tformat\twords\twords_format\ttr\toffset\n"


def write(tmp_path, *rows, header=HEADER):
    path = tmp_path / "runs.tsv"
    path.write_text(header + "".join("\t".join(r) + "\n" for r in rows))
    return path


def row(sub="01", story="souls", run="", offset="10", tr="2", fmt="hdf5"):
    return [sub, story, run, f"{sub}/{story}.hf5", fmt, f"TextGrids/{story}.TextGrid",
            "textgrid", tr, offset]  # fmt: skip


def test_rows_are_typed_and_defaults_filled(tmp_path):
    runs = sheet.read_sheet(write(tmp_path, row(), row(story="life", run="2", offset="")))
    assert list(runs.columns) == sheet.columns()
    first, second = runs.iloc[0], runs.iloc[1]
    # A TR per row: ds003020's reference code simulates 2.0 s, its TR files average 2.0045 s.
    assert sheet.read_sheet(write(tmp_path, row(tr="2.0045"))).tr.tolist() == [2.0045]
    assert (first.run, first.offset, first.tr, first.key) == (1, 10.0, 2.0, "data")
    assert (second.run, second.offset) == (2, 0.0)  # an empty cell takes the default
    assert first.split == "train" and not first.exclude and first["mask"] is None


def test_written_sheet_reads_back(tmp_path):
    runs = sheet.read_sheet(write(tmp_path, row(), row(sub="02")))
    sheet.write_sheet(tmp_path / "copy.tsv", runs)
    pd.testing.assert_frame_equal(sheet.read_sheet(tmp_path / "copy.tsv"), runs)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [row(), row(run="1")],
            "rows 1, 2 are the same run (subject 01, story souls, run 1); give repeats their "
            "own run number or remove the duplicate",
        ),
        (
            [row(offset="n/a")],
            "row 1: column offset is 'n/a'; it needs a value (leave the cell empty for the "
            "documented default, or exclude the row with exclude: true and a reason)",
        ),
        ([row(offset="ten")], "row 1: column offset is 'ten', not a number"),
        ([row(tr="")], "row 1 (subject 01, story souls): an hdf5 response needs tr"),
        (
            [row(tr="1500")],
            "row 1 (subject 01, story souls): tr is 1500 s, outside the 0.3-5 s a repetition "
            "time can be; write it in seconds",
        ),
        ([row(sub="sub-01")], "row 1: key 'subject' value 'sub-01' does not match"),
        ([row(fmt="afni")], "row 1: key 'format' is 'afni'; choose one of: fmriprep, nifti, hdf5"),
    ],
)
def test_bad_rows_stop_with_the_row_and_the_fix(tmp_path, rows, message):
    path = write(tmp_path, *rows)
    with pytest.raises(BrainshapeError) as error:
        sheet.read_sheet(path)
    assert str(error.value).startswith(f"{path}, ") or str(error.value).startswith(f"{path}:")
    assert message in str(error.value)


def test_an_excluded_row_may_lack_what_it_would_need(tmp_path):
    header = HEADER.rstrip("\n") + "\texclude\treason\n"
    path = write(tmp_path, row() + ["", ""], row(sub="02", offset="n/a") + ["true", "no onset"],
                 header=header)  # fmt: skip
    runs = sheet.read_sheet(path)
    assert list(runs.exclude) == [False, True] and runs.reason.iloc[1] == "no onset"


def test_unknown_column_and_two_transcripts_of_one_story(tmp_path):
    path = write(tmp_path, row(), header=HEADER.replace("offset", "onset"))
    with pytest.raises(BrainshapeError, match=r"unknown column\(s\) \['onset'\]"):
        sheet.read_sheet(path)
    other = row(sub="02")
    other[5] = "TextGrids/souls2.TextGrid"
    with pytest.raises(BrainshapeError, match="story souls has rows with different word timings"):
        sheet.read_sheet(write(tmp_path, row(), other))
    with pytest.raises(BrainshapeError, match="runs sheet .* does not exist"):
        sheet.read_sheet(tmp_path / "none.tsv")


def _study_with_sheet(tmp_path, rows, **dataset):
    import yaml
    from conftest import REPO, SCHEMAS

    from brainshape.config import load_registry_dict, validate
    from brainshape.study import Study

    path = write(tmp_path, *rows)
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["registry"] = str(REPO / "config" / "models.demo.yaml")
    cfg["encoding"]["group_size"] = 2
    cfg["datasets"] = {"ds": {"bids_root": str(tmp_path), "runs": str(path), **dataset}}
    cfg = validate(cfg, SCHEMAS / "config.schema.yaml", "study.yaml")
    registry = load_registry_dict(cfg["registry"], SCHEMAS / "models.schema.yaml")
    return Study(cfg, registry, source="study.yaml")


def test_subjects_who_heard_different_stories_get_their_own_groups(tmp_path):
    heard = {"01": "abc", "02": "ab", "03": "abc", "04": "ab", "05": "abc", "06": "d"}
    rows = [row(sub=s, story=f"story{x}") for s, xs in heard.items() for x in xs]
    study = _study_with_sheet(tmp_path, rows)
    assert study.subjects("ds") == list(heard)
    assert study.stories("ds") == ["storya", "storyb", "storyc", "storyd"]
    assert study.subject_stories("ds", "02") == ["storya", "storyb"]
    # Subjects share an encode job only with subjects who heard the same stories.
    assert study.subject_groups("ds") == {
        "g1": ["01", "03"],
        "g2": ["05"],
        "g3": ["02", "04"],
        "g4": ["06"],
    }
    # Responses are matrices with their own columns: no atlas is needed.
    assert not study.needs_atlas("ds")
    assert study.word_sources("ds")["storyd"] == {
        "path": str(tmp_path / "TextGrids" / "storyd.TextGrid"),
        "format": "textgrid",
        "tier": "words",
    }
    # The config's subjects and stories select among the sheet's rows.
    chosen = _study_with_sheet(tmp_path, rows, subjects=["01", "06"], stories=["storyd"])
    assert chosen.subjects("ds") == ["06"]
    with pytest.raises(BrainshapeError, match="datasets.ds.subjects lists 07, which the runs"):
        _study_with_sheet(tmp_path, rows, subjects=["07"]).subjects("ds")


def test_missing_files_of_a_sheet_are_named_at_planning(tmp_path):
    from brainshape.checks import check_dataset_inputs

    study = _study_with_sheet(tmp_path, [row(), row(sub="02")])
    (tmp_path / "01").mkdir()
    (tmp_path / "01" / "souls.hf5").write_bytes(b"")
    (tmp_path / "TextGrids").mkdir()
    (tmp_path / "TextGrids" / "souls.TextGrid").write_text("")
    with pytest.raises(BrainshapeError) as error:
        check_dataset_inputs(study, "ds")
    assert str(error.value) == (
        f"datasets.ds: 1 input file(s) missing: {tmp_path / '02' / 'souls.hf5'}. Check the runs "
        f"sheet {tmp_path / 'runs.tsv'}"
    )
