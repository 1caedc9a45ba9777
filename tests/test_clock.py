"""The one clock: every stage places a run's volumes on the word clock through its ``offset``.

A dataset whose runs start ``d`` seconds after word time 0 (``offset: d``), with its word
timings given on that clock, is the same experiment as the one with offset 0 and the words ``d``
seconds earlier: every table must come out the same. Offsets +10 s (ds003020: the response
files start 10 s into the story) and -3 s (Narratives: the story starts 3 s into the scan).
"""

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest

from brainshape import clock
from brainshape import topology as T
from brainshape.baselines import encode_baseline, inter_subject_ceiling
from brainshape.encoding import encode_variant
from brainshape.errors import BrainshapeError
from brainshape.stimuli import word_times
from brainshape.subjects import SubjectData

OFFSETS = (10.0, -3.0)
TR = 2.0
STORIES = {"a": 70, "b": 64, "c": 76}  # volumes per story


def test_volume_times_on_the_word_clock():
    run = {"n_trs": 4, "tr": 2.0, "offset": 10.0, "trim_start": 1, "trim_end": 1}
    np.testing.assert_array_equal(clock.tr_times(3, 2.0), [1.0, 3.0, 5.0])
    np.testing.assert_array_equal(clock.volume_times(run), [11.0, 13.0, 15.0, 17.0])
    np.testing.assert_array_equal(clock.kept_times(run), [13.0, 15.0])
    assert clock.kept_rows(run) == slice(1, 3)
    assert clock.run_start(run) == 10.0
    assert clock.scan_end({**run, "removed_end": 3}) == 10.0 + 7 * 2.0
    # Runs without the optional keys: offset 0, nothing trimmed or removed.
    np.testing.assert_array_equal(clock.kept_times({"n_trs": 2, "tr": 1.5}), [0.75, 2.25])
    with pytest.raises(BrainshapeError, match="tr must be a positive number of seconds, got 0"):
        clock.volume_times({"n_trs": 3, "tr": 0.0})


def _dataset(seed=0):
    """Words (onsets from 0.5 s), 3 layers x 4 features (layer 2 drives the BOLD), 3 subjects
    with ROI targets on runs at offset 0."""
    rng = np.random.default_rng(seed)
    words, features = [], {}
    for story, n in STORIES.items():
        onset = np.sort(rng.uniform(0.5, n * TR - 6.0, size=int(n * 2.2)))
        words.append(
            pd.DataFrame(
                {"story": story, "word_index": np.arange(onset.size, dtype=np.int64),
                 "word": rng.choice(["the", "ferry.", "left", "north"], onset.size),
                 "onset": onset, "offset": onset + 0.3, "aligned": True}
            )
        )  # fmt: skip
        features[story] = rng.standard_normal((3, onset.size, 4)).astype(np.float32)
    words = pd.concat(words, ignore_index=True)
    runs = {s: {"n_trs": n, "trim_start": 2, "trim_end": 1, "tr": TR} for s, n in STORIES.items()}
    shared = {s: rng.standard_normal((n - 3, 1)) for s, n in STORIES.items()}
    subjects = {}
    for sub in ("01", "02", "03"):
        data = {s: (shared[s] + rng.standard_normal((n - 3, 3))) for s, n in STORIES.items()}
        targets = pd.DataFrame(
            {"target": np.arange(3, dtype=np.int64), "roi": ["A", "A", "B"],
             "hemisphere": ["L", "R", "L"], "n_voxels": np.array([4, 4, 4], dtype=np.int64)}
        )  # fmt: skip
        subjects[sub] = SubjectData(data=data, targets=targets, runs=copy.deepcopy(runs))
    return words, features, subjects


def _shifted(words: pd.DataFrame, subjects: dict, d: float):
    """The same experiment with every run at offset ``d`` and the words on that clock."""
    moved = words.assign(onset=words.onset + d, offset=words.offset + d)
    out = {}
    for sub, data in subjects.items():
        runs = {s: {**r, "offset": r.get("offset", 0.0) + d} for s, r in data.runs.items()}
        out[sub] = SubjectData(data=data.data, targets=data.targets, runs=runs)
    return moved, out


def _assert_same_table(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns) and len(got) == len(want)
    for column in want.columns:
        if pd.api.types.is_float_dtype(want[column]):
            np.testing.assert_allclose(got[column], want[column], rtol=1e-9, atol=1e-12,
                                       err_msg=column)  # fmt: skip
        else:
            assert got[column].tolist() == want[column].tolist(), column


OPTIONS = {"alphas": np.logspace(0, 4, 5), "n_permutations": 10, "folds": "stories"}


@pytest.mark.parametrize("d", OFFSETS)
def test_encoding_and_baselines_do_not_depend_on_where_the_clock_starts(d):
    words, features, subjects = _dataset()
    moved, shifted = _shifted(words, subjects, d)
    want = encode_variant(words, features, subjects, **OPTIONS)
    assert want.loc[want.layer == 2, "score"].notna().all()
    _assert_same_table(encode_variant(moved, features, shifted, **OPTIONS), want)
    for name in ("word_rate", "word_length_position"):
        _assert_same_table(
            encode_baseline(moved, shifted, name, **OPTIONS),
            encode_baseline(words, subjects, name, **OPTIONS),
        )


@pytest.mark.parametrize("d", OFFSETS)
def test_ceilings_do_not_depend_on_where_the_clock_starts(d):
    _, _, subjects = _dataset()
    _, shifted = _shifted(pd.DataFrame(columns=["onset", "offset"]), subjects, d)
    want = inter_subject_ceiling(subjects)
    assert (want["ceiling"] > 0).all()
    _assert_same_table(inter_subject_ceiling(shifted), want)


def test_ceilings_line_up_runs_whose_files_start_at_other_word_times():
    """A subject whose file starts one TR later (offset + TR, its first row dropped) is matched
    volume for volume on the word clock: the same ceiling as when nothing moved."""
    _, _, subjects = _dataset()
    want = inter_subject_ceiling(subjects).set_index(["subject", "target"])["isc"]
    late = copy.deepcopy(subjects)
    for story, run in late["02"].runs.items():
        run["offset"] = TR
        run["n_trs"] -= 1
        late["02"].data[story] = late["02"].data[story][1:]
    got = inter_subject_ceiling(late).set_index(["subject", "target"])["isc"]
    # Subject 02 loses its first kept volume of each story; the others keep theirs.
    assert np.abs(got - want).max() < 0.05
    # Read on the file's own clock (offset left at 0), it would be one volume off: the shared
    # signal (white here) would be lost.
    for run in late["02"].runs.values():
        run["offset"] = 0.0
    wrong = inter_subject_ceiling(late).set_index(["subject", "target"])["isc"]
    assert (want.loc["02"] > 0.3).all() and (wrong.loc["02"] < 0.15).all()


# --- the shape stage --------------------------------------------------------------------------

EMBEDDING = {"dimension": 3, "lag_s": 2.0}
SETTINGS = {"metric": "euclidean", "components": None, "maxdim": 1, "backend": "giotto"}


def _write_subjects(tmp_path, subjects: dict) -> list[str]:
    dirs = []
    for sub, data in subjects.items():
        d = tmp_path / f"sub-{sub}"
        d.mkdir(parents=True)
        for story, x in data.data.items():
            np.save(d / f"{story}.npy", x)
        data.targets.to_parquet(d / "targets.parquet")
        (d / "runs.json").write_text(json.dumps(data.runs))
        dirs.append(str(d))
    return dirs


def _shape_table(tmp_path, words, features, subjects) -> pd.DataFrame:
    dirs = _write_subjects(tmp_path / "fmri", subjects)
    time_base = tmp_path / "timebase.json"
    T.write_time_base(dirs, time_base, delay_s=4.0, history_s=4.0, max_points=90, seed=0)
    T.compute_brain(dirs, time_base, tmp_path / "brain", embedding=EMBEDDING, per_subject=False,
                    **SETTINGS)  # fmt: skip
    T.compute_layers(features, words, time_base, tmp_path / "layers", **SETTINGS)
    return T.pair_variant(
        tmp_path / "layers", tmp_path / "brain", features, words, time_base,
        orders=[{"q": 1, "p": math.inf}], metric="euclidean", components=None,
        measures=["rsa", "cka_debiased"], summaries=["total_persistence"],
        null=T.NullSettings(draws=8, min_story_taus=5),
    )  # fmt: skip


@pytest.mark.parametrize("d", OFFSETS)
def test_shape_tables_do_not_depend_on_where_the_clock_starts(tmp_path, d):
    words, features, subjects = _dataset()
    moved, shifted = _shifted(words, subjects, d)
    want = _shape_table(tmp_path / "zero", words, features, subjects)
    _assert_same_table(_shape_table(tmp_path / "moved", moved, features, shifted), want)


@pytest.mark.parametrize("d", (0.0, *OFFSETS))
def test_layer_clouds_pair_each_brain_volume_with_the_stimulus_delay_s_before(tmp_path, d):
    """A feature that is the word's own time: the layer cloud's point paired with a brain
    volume at word time t must hold the stimulus of time t - delay_s (up to the Lanczos
    window's smoothing), whatever the run's offset."""
    _, _, subjects = _dataset()
    onsets = {s: np.arange(0.5, n * TR - 6.0, 0.4) for s, n in STORIES.items()}
    words = pd.concat(
        [pd.DataFrame({"story": s, "word_index": np.arange(t.size), "onset": t, "offset": t + 0.3})
         for s, t in onsets.items()], ignore_index=True,
    )  # fmt: skip
    moved, shifted = _shifted(words, subjects, d)
    dirs = _write_subjects(tmp_path, shifted)
    base = T.shared_time_base(dirs, delay_s=4.0)
    times = {s: t for s, t in word_times(moved).items()}
    features = {s: np.stack([np.ones_like(t), t], axis=1)[None] for s, t in times.items()}
    resamplers = T.landmark_resamplers(moved, base, np.arange(base.n_points()), window=3)
    cloud = T.layer_cloud(features, resamplers, 0)
    paired = cloud[:, 1] / cloud[:, 0]  # the weighted mean time of the words around each point
    expected = np.concatenate([base.model_times(s) for s in base.stories()])
    inside = np.concatenate(
        [(base.model_times(s) > times[s][0] + 3) & (base.model_times(s) < times[s][-1] - 3)
         for s in base.stories()]
    )  # fmt: skip
    assert inside.sum() > 100
    assert np.abs(paired - expected)[inside].max() < 1.0
    # The brain rows that enter the clouds sit at least delay_s after the start of each run.
    for story in base.stories():
        assert base.brain_times(story)[0] - 4.0 >= clock.run_start(base.runs[story])
