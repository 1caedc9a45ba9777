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
