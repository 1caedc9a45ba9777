"""The fMRI subject folder: one writer, one reader, the z-score of its arrays."""

import json

import numpy as np
import pandas as pd
import pytest

from brainshape import subjects
from brainshape.errors import BrainshapeError

TR = 2.0


def subject_data(seed=0, stories=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    targets = pd.DataFrame(
        {
            "target": np.arange(3, dtype=np.int64),
            "roi": ["A", "A", "B"],
            "hemisphere": ["L", "R", "L"],
            "n_voxels": np.array([10, 12, 8], dtype=np.int64),
        }
    )
    runs = {
        s: {"n_trs": 30 + k, "trim_start": 2, "trim_end": 1, "tr": TR}
        for k, s in enumerate(stories)
    }
    data = {s: rng.standard_normal((r["n_trs"] - 3, 3)).astype(np.float32) for s, r in runs.items()}
    return subjects.SubjectData(data=data, targets=targets, runs=runs)


def test_subject_folder_round_trip_and_errors(tmp_path):
    sub = subject_data()
    directory = tmp_path / "fmri" / "sub-01"
    subjects.write_subject(directory, sub.targets, sub)
    assert sorted(p.name for p in directory.iterdir()) == [
        ".manifest.json", "a.npy", "b.npy", "c.npy", "runs.json", "targets.parquet",
    ]  # fmt: skip
    loaded = subjects.read_subject(directory)
    # The reader gives every run its clock: the defaults where the writer was given none.
    assert loaded.runs == {s: {**r, **subjects.RUN_DEFAULTS} for s, r in sub.runs.items()}
    pd.testing.assert_frame_equal(loaded.targets, sub.targets)
    for story in sub.runs:
        np.testing.assert_array_equal(loaded.data[story], sub.data[story])
    # Subjects may hold different stories; read_subjects keys them by label.
    other = subject_data(1, stories=("b", "d"))
    subjects.write_subject(tmp_path / "fmri" / "sub-02", other.targets, other)
    both = subjects.read_subjects(sorted((tmp_path / "fmri").iterdir()))
    assert sorted(both) == ["01", "02"] and sorted(both["02"].runs) == ["b", "d"]

    (directory / "c.npy").unlink()
    with pytest.raises(BrainshapeError, match=r"c\.npy is missing but .*runs\.json lists story"):
        subjects.read_subject(directory)
    with pytest.raises(BrainshapeError, match=r"runs\.json is missing; run the fmri stage"):
        subjects.read_subject(tmp_path / "fmri" / "sub-99")
    np.save(directory / "c.npy", sub.data["c"][:-1])
    short = r"c\.npy: BOLD has 28 volumes after trimming but the run should keep .* = 29"
    with pytest.raises(BrainshapeError, match=short):
        subjects.read_subject(directory)
    runs = json.loads((directory / "runs.json").read_text())
    runs["a"]["trim_start"] = -1
    (directory / "runs.json").write_text(json.dumps(runs))
    with pytest.raises(BrainshapeError, match=r"story 'a'.*trim_start must be a non-negative"):
        subjects.read_subject(directory)


def test_write_subject_writes_all_or_nothing(tmp_path):
    sub = subject_data()
    directory = tmp_path / "sub-01"

    def failing():
        yield "a", sub.runs["a"], sub.data["a"]
        raise BrainshapeError("story b: preprocessing failed")

    with pytest.raises(BrainshapeError, match="story b: preprocessing failed"):
        subjects.write_subject(directory, sub.targets, failing())
    assert not directory.exists()
    bad = [("a", sub.runs["a"], sub.data["a"][:, :2])]
    with pytest.raises(BrainshapeError, match=r"story a, .*: BOLD has 2 targets but the targets"):
        subjects.write_subject(directory, sub.targets, bad)
    nan = sub.data["b"].copy()
    nan[0, 0] = np.nan
    with pytest.raises(BrainshapeError, match=r"story b, .*: BOLD contains NaN"):
        subjects.write_subject(directory, sub.targets, [("b", sub.runs["b"], nan)])
    assert not directory.exists()


def test_zscore_gives_unit_columns_and_zero_for_constant_ones():
    x = np.column_stack([np.arange(5.0), np.full(5, 3.0)])
    z = subjects.zscore(x)
    np.testing.assert_allclose(z[:, 0], (np.arange(5.0) - 2) / np.sqrt(2))
    np.testing.assert_array_equal(z[:, 1], 0.0)
