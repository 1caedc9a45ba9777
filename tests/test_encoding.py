import math

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad

from brainshape import ridge, scoring
from brainshape.clock import tr_times
from brainshape.encoding import (
    add_delays,
    encode_variant,
    lanczos_downsample,
    lanczos_matrix,
)
from brainshape.errors import BrainshapeError
from brainshape.subjects import SubjectData

# --- time axis and resampling -----------------------------------------------------------------


def by_kernel(x):
    """The Lanczos kernel (window 3) at one x = f_c * lag, written out with math.sin."""
    if x == 0:
        return 1.0
    return 3 * math.sin(math.pi * x) * math.sin(math.pi * x / 3) / (math.pi**2 * x**2)


def test_tr_times_are_volume_middles():
    np.testing.assert_array_equal(tr_times(3, 2.0), [1.0, 3.0, 5.0])
    np.testing.assert_array_equal(tr_times(2, 1.5), [0.75, 2.25])


def test_lanczos_weights_match_hand_values():
    # TR 2 s, so f_c = 0.5 Hz and x = lag / 2.
    new_times = tr_times(3, 2.0)  # 1, 3, 5 s
    word_times = np.array([1.0, 2.0, 3.6, 20.0])
    weights = lanczos_matrix(word_times, new_times, window=3)
    assert weights.shape == (3, 4)

    half_lobe = 6 / math.pi**2  # |x| = 1/2: 3 * sin(pi/2) * sin(pi/6) / (pi^2 / 4)
    negative_lobe = -4 / (3 * math.pi**2)  # x = 3/2: 3 * (-1) * 1 / (2.25 pi^2)

    expected = np.array(
        [
            [1.0, half_lobe, by_kernel(-1.3), 0.0],
            [0.0, half_lobe, by_kernel(-0.3), 0.0],
            [0.0, negative_lobe, by_kernel(0.7), 0.0],
        ]
    )
    np.testing.assert_allclose(weights, expected, atol=1e-15)
    # sin(234 deg) = -(1 + sqrt 5) / 4, sin(78 deg) = 0.978148: 3 * -0.809017 * 0.978148 / 16.6797
    assert by_kernel(-1.3) == pytest.approx(-0.142330, abs=1e-6)

    # Halving the cut-off stretches the kernel: a 2 s lag now sits at x = 1/2.
    wide = lanczos_matrix(np.array([1.0]), new_times, window=3, cutoff_mult=0.5)
    np.testing.assert_allclose(wide[1, 0], half_lobe)


def test_lanczos_downsample_of_constant_rate_impulse_train():
    # Words every TR / n: away from the run edges every volume sees the same pattern, and the
    # sum of the weights approaches n times the kernel's integral (word rate is kept).
    integral = quad(by_kernel, -3, 3, limit=200)[0]
    new_times = tr_times(40, 2.0)
    interior = {}
    for n in (4, 8):
        word_times = np.arange(0, 80, 2.0 / n) + 0.1
        features = np.column_stack([np.ones(word_times.size), -2 * np.ones(word_times.size)])
        out = lanczos_downsample(features, word_times, new_times, window=3)
        assert out.shape == (40, 2)
        np.testing.assert_allclose(out[:, 1], -2 * out[:, 0])
        middle = out[8:32, 0]
        np.testing.assert_allclose(middle, middle[0], rtol=1e-12)
        assert middle[0] == pytest.approx(n * integral, rel=1e-3)
        interior[n] = middle[0]
    assert interior[8] / interior[4] == pytest.approx(2.0, rel=1e-3)


def test_lanczos_rejects_single_volume_and_bad_shapes():
    with pytest.raises(BrainshapeError, match="at least 2 volume times"):
        lanczos_matrix(np.array([0.5]), np.array([1.0]))
    with pytest.raises(BrainshapeError, match="features have 3 rows but there are 2 word times"):
        lanczos_downsample(np.ones((3, 2)), np.array([0.0, 1.0]), tr_times(4, 2.0))


def test_add_delays_against_hand_matrix():
    X = np.array([[1, 10], [2, 20], [3, 30], [4, 40]], dtype=float)
    out = add_delays(X, delays=(0, 1, 2, -1, 5))
    expected = np.array(
        [
            [1, 10, 0, 0, 0, 0, 2, 20, 0, 0],
            [2, 20, 1, 10, 0, 0, 3, 30, 0, 0],
            [3, 30, 2, 20, 1, 10, 4, 40, 0, 0],
            [4, 40, 3, 30, 2, 20, 0, 0, 0, 0],
        ],
        dtype=float,
    )
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(BrainshapeError, match="whole numbers of TRs"):
        add_delays(X, delays=(1.5,))


# --- encode_variant ---------------------------------------------------------------------------

TR = 2.0
DELAYS = (1, 2, 3, 4)
RUNS = {"a": 60, "b": 56, "c": 64, "d": 58}  # volumes per story


def _dataset(seed=0, stories_02=("a", "b", "c", "d")):
    """Words, features (3 layers x words x 4; layer 2 drives the BOLD) and two subjects."""
    rng = np.random.default_rng(seed)
    words, features, designs = [], {}, {}
    for story, n_trs in RUNS.items():
        onset = np.sort(rng.uniform(1.0, n_trs * TR - 4.0, size=int(n_trs * 2.5)))
        words.append(
            pd.DataFrame(
                {
                    "story": story,
                    "word_index": np.arange(onset.size, dtype=np.int64),
                    "word": "w",
                    "onset": onset,
                    "offset": onset + 0.3,
                    "aligned": True,
                }
            )
        )
        feats = rng.standard_normal((3, onset.size, 4)).astype(np.float32)
        features[story] = feats
        resampled = lanczos_downsample(feats[2], onset + 0.15, tr_times(n_trs, TR))
        designs[story] = add_delays(resampled, DELAYS)[2 : n_trs - 1]
    subjects = {}
    for sub, stories in (("01", tuple(RUNS)), ("02", stories_02)):
        weights = rng.standard_normal((16, 3))
        weights[:, 2] = 0  # target 2 is pure noise
        data = {}
        for story in stories:
            signal = designs[story] @ weights
            data[story] = (signal / signal[:, :2].std() + rng.standard_normal(signal.shape)).astype(
                np.float32
            )
        targets = pd.DataFrame(
            {
                "target": np.arange(3, dtype=np.int64),
                "roi": ["A", "A", "B"],
                "hemisphere": ["L", "R", "L"],
                "n_voxels": np.array([10, 12, 8], dtype=np.int64),
            }
        )
        runs = {s: {"n_trs": RUNS[s], "trim_start": 2, "trim_end": 1, "tr": TR} for s in stories}
        subjects[sub] = SubjectData(data=data, targets=targets, runs=runs)
    return pd.concat(words, ignore_index=True), features, subjects, designs


ALPHAS = np.logspace(0, 4, 5)


def test_encode_variant_recovers_planted_layer_and_matches_manual_pipeline():
    words, features, subjects, _ = _dataset()
    table = encode_variant(words, features, subjects, alphas=ALPHAS, target_chunk=2)
    assert list(table.columns) == [
        "layer", "subject", "target", "roi", "hemisphere", "score", "alpha", "mi", "p_value",
        "q_value", "p_value_roi",
    ]  # fmt: skip
    assert len(table) == 3 * 2 * 3
    assert table["layer"].dtype == np.int64 and table["target"].dtype == np.int64
    assert table["score"].dtype == np.float64 and table["alpha"].dtype == np.float64
    assert list(table["roi"][:3]) == ["A", "A", "B"] and list(table["hemisphere"][:3]) == list(
        "LRL"
    )

    scores = table.set_index(["layer", "subject", "target"])["score"]
    for sub in ("01", "02"):
        assert scores[(2, sub, 0)] > 0.5 and scores[(2, sub, 1)] > 0.5
        assert abs(scores[(2, sub, 2)]) < 0.3
        assert abs(scores[(0, sub, 0)]) < 0.3

    # The same numbers from the public steps, one subject alone (stacking must not matter).
    word_times = {s: g["onset"].to_numpy() + 0.15 for s, g in words.groupby("story")}
    for layer in (0, 2):
        X_runs = []
        for story, n_trs in RUNS.items():
            resampled = lanczos_downsample(
                features[story][layer], word_times[story], tr_times(n_trs, TR)
            )
            X_runs.append(add_delays(resampled, DELAYS)[2 : n_trs - 1])
        Y_runs = [subjects["02"].data[s] for s in RUNS]
        manual = ridge.cross_validate(
            np.concatenate(X_runs),
            np.concatenate(Y_runs),
            ALPHAS,
            ridge.contiguous_folds([len(y) for y in Y_runs]),
        )
        rows = table[(table["layer"] == layer) & (table["subject"] == "02")]
        np.testing.assert_allclose(rows["score"], manual.scores, atol=1e-10)
        np.testing.assert_allclose(rows["alpha"], np.median(manual.alphas, axis=0))


def test_encode_variant_handles_subjects_with_different_stories():
    words, features, subjects, _ = _dataset(seed=1, stories_02=("a", "b", "c"))
    table = encode_variant(words, features, subjects, alphas=ALPHAS)
    alone = encode_variant(words, features, {"02": subjects["02"]}, alphas=ALPHAS)
    both = table[table["subject"] == "02"].reset_index(drop=True)
    pd.testing.assert_frame_equal(both, alone)
    assert set(table["subject"]) == {"01", "02"}


def test_encode_variant_mismatch_errors():
    words, features, subjects, _ = _dataset()

    def run(w=words, f=features, s=subjects):
        return encode_variant(w, f, s, alphas=ALPHAS)

    no_c = {k: v for k, v in features.items() if k != "c"}
    with pytest.raises(
        BrainshapeError,
        match=r"story c: there is fMRI for it \(sub-01, sub-02\) but no features",
    ):
        run(f=no_c)
    with pytest.raises(
        BrainshapeError,
        match=r"story d: there is fMRI for it \(sub-01, sub-02\) but the words table has no such",
    ):
        run(w=words[words["story"] != "d"])

    short = dict(features, a=features["a"][:, :-1])
    n_words = int((words["story"] == "a").sum())
    with pytest.raises(
        BrainshapeError,
        match=rf"Features of story 'a' have {n_words - 1} words but the words table has "
        rf"{n_words}",
    ):
        run(f=short)

    bad = dict(subjects)
    sub = subjects["01"]
    bad["01"] = SubjectData(dict(sub.data, b=sub.data["b"][:-1]), sub.targets, sub.runs)
    with pytest.raises(
        BrainshapeError,
        match=r"story b, sub-01: BOLD has 52 volumes after trimming but the run should keep "
        r"n_trs - trim_start - trim_end = 56 - 2 - 1 = 53",
    ):
        run(s=bad)

    nan_features = dict(features, b=features["b"].copy())
    nan_features["b"][1, 5, 0] = np.nan
    with pytest.raises(BrainshapeError, match=r"Features of story 'b', layer 1 contain NaN"):
        run(f=nan_features)

    nan_bold = dict(subjects)
    sub = subjects["02"]
    bold_c = sub.data["c"].copy()
    bold_c[3, 1] = np.nan
    nan_bold["02"] = SubjectData(dict(sub.data, c=bold_c), sub.targets, sub.runs)
    with pytest.raises(BrainshapeError, match=r"story c, sub-02: BOLD contains NaN"):
        run(s=nan_bold)

    two = {k: v for k, v in sub.runs.items() if k in ("a", "b")}
    few = {"02": SubjectData({k: sub.data[k] for k in two}, sub.targets, two)}
    with pytest.raises(
        BrainshapeError,
        match=r"sub-02: 2 stories; cross-validated brainscores need at least 3 with "
        r"encoding.folds: stories",
    ):
        run(s=few)


def test_encode_variant_refuses_a_run_shorter_than_its_story():
    words, features, subjects, _ = _dataset()
    sub = subjects["02"]
    n_trs = RUNS["b"]
    # A run cut by 5 volumes (data consistent with its runs.json) no longer covers the story.
    runs = dict(sub.runs, b=dict(sub.runs["b"], n_trs=n_trs - 5))
    data = dict(sub.data, b=sub.data["b"][:-5])
    cut = dict(subjects, **{"02": SubjectData(data, sub.targets, runs)})
    end = words.loc[words.story == "b", "offset"].max()
    assert end > (n_trs - 5) * TR  # the planted words reach into the cut volumes
    with pytest.raises(
        BrainshapeError,
        match=rf"story b, sub-02: the words run to {end:.1f} s but the BOLD run covers word "
        rf"time up to {(n_trs - 5) * TR:.1f} s \({n_trs - 5} volumes at TR {TR:g} s from "
        r"offset 0 s\)",
    ):
        encode_variant(words, features, cut, alphas=ALPHAS)


def test_segment_identification_is_best_at_the_planted_layer():
    words, features, subjects, _ = _dataset()
    table = encode_variant(
        words,
        features,
        subjects,
        alphas=ALPHAS,
        metrics=("r", "segment_identification"),
        segment_trs=5,
    )
    assert "mi" not in table.columns
    signal = table[table.target < 2]  # targets 0 and 1 carry layer 2's signal
    by_layer = signal.groupby("layer")[["sensitivity", "specificity"]].mean()
    assert by_layer["sensitivity"].idxmax() == 2
    assert by_layer.loc[2, "specificity"] > 0.8
    assert table["invariance"].between(0, 1).all()
    with pytest.raises(BrainshapeError, match=r"unknown metric\(s\) \['auc'\]"):
        encode_variant(words, features, subjects, alphas=ALPHAS, metrics=("r", "auc"))


def test_a_metric_added_to_the_registry_alone_runs_in_an_encode(monkeypatch):
    # A toy metric that needs the held-out predictions: the mean squared error of each target
    # and, per ROI x hemisphere, the number of its targets.
    def squared_error(held):
        mse = ((held.predictions - held.data) ** 2).mean(axis=0)
        return {"mse": mse, "roi_size": float(held.scores.size)}

    toy = scoring.Metric(squared_error, ("mse", "roi_size"), needs_predictions=True)
    monkeypatch.setitem(scoring.METRICS, "toy", toy)
    words, features, subjects, _ = _dataset()
    table = encode_variant(words, features, subjects, alphas=ALPHAS, metrics=("r", "toy"))
    assert list(table.columns)[7:9] == ["mse", "roi_size"]
    assert "mi" not in table.columns
    assert (
        table.groupby(["layer", "subject", "roi", "hemisphere"])["roi_size"]
        .agg(lambda s: s.iloc[0] == len(s))
        .all()
    )

    # The same numbers from the engine's held-out predictions of subject 02 at layer 2.
    word_times = {s: g["onset"].to_numpy() + 0.15 for s, g in words.groupby("story")}
    X = np.concatenate(
        [
            add_delays(lanczos_downsample(features[s][2], word_times[s], tr_times(n, TR)), DELAYS)[
                2 : n - 1
            ]
            for s, n in RUNS.items()
        ]
    )
    Y = np.concatenate([subjects["02"].data[s] for s in RUNS])
    result = ridge.cross_validate(
        X, Y, ALPHAS, ridge.contiguous_folds([len(subjects["02"].data[s]) for s in RUNS]),
        keep_predictions=True,
    )  # fmt: skip
    rows = table[(table["layer"] == 2) & (table["subject"] == "02")]
    expected = ((result.predictions - Y) ** 2).mean(axis=0)
    np.testing.assert_allclose(rows["mse"], expected, rtol=1e-8)
    assert scoring.needs_predictions(["r", "toy"]) and not scoring.needs_predictions(["mi"])


def test_p_values_come_from_the_pooled_null_and_are_checked():
    words, features, subjects, _ = _dataset()
    table = encode_variant(
        words, features, subjects, alphas=ALPHAS, n_permutations=30, null_copies=200
    )
    signal = table[(table["layer"] == 2) & (table["target"] < 2)]
    noise = table[table["target"] == 2]
    # Planted targets lie far beyond a count over 30 permutations could say (1 / 31).
    assert (signal["p_value"] < 1e-4).all() and (signal["q_value"] < 1e-3).all()
    assert noise["p_value"].between(0, 1).all() and (noise["p_value"] > 1e-3).all()
    assert (table["p_value_roi"] >= 1 / 31).all()  # ROI level: counted, as before
    with pytest.raises(BrainshapeError, match=r"n_permutations is 1; p-values need the spread"):
        encode_variant(words, features, subjects, alphas=ALPHAS, n_permutations=1)
    with pytest.raises(BrainshapeError, match=r"a held-out fold of 53 TRs is one block of "):
        encode_variant(
            words, features, subjects, alphas=ALPHAS, n_permutations=5, permutation_block=53
        )
