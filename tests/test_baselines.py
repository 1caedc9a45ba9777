"""Baselines, noise ceiling and the brainscore table built from them."""

import math

import numpy as np
import pandas as pd
import pytest

from brainshape import analysis
from brainshape.baselines import baseline_features, encode_baseline, inter_subject_ceiling
from brainshape.clock import tr_times
from brainshape.encoding import add_delays, encode_variant, lanczos_matrix
from brainshape.errors import BrainshapeError
from brainshape.subjects import SubjectData

TR = 2.0
N_TRS = 150
STORIES = ("a", "b", "c", "d")
ALPHAS = np.logspace(-1, 4, 6)
TARGETS = pd.DataFrame(
    {
        "target": np.arange(2, dtype=np.int64),
        "roi": ["STG", "AG"],
        "hemisphere": ["L", "R"],
        "n_voxels": np.array([5, 5], dtype=np.int64),
    }
)


def _words(rng):
    """Words whose rate swings slowly between bursts and pauses, per story."""
    frames = []
    for story in STORIES:
        t, onsets = 1.0, []
        while t < N_TRS * TR - 6:
            rate = 1.5 + 1.3 * math.sin(t / 9.0) + 0.5 * rng.standard_normal()
            t += 1.0 / max(rate, 0.3)
            onsets.append(t)
        onsets = np.array(onsets)
        frames.append(
            pd.DataFrame(
                {
                    "story": story,
                    "word_index": np.arange(onsets.size, dtype=np.int64),
                    "word": [
                        "word." if i % 7 == 6 else "w" * (1 + i % 4) for i in range(onsets.size)
                    ],
                    "onset": onsets,
                    "offset": onsets + 0.2,
                    "aligned": True,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _word_rate_dataset(n_subjects=3, seed=0):
    """BOLD of target 0 follows the word rate (delayed); target 1 is noise."""
    rng = np.random.default_rng(seed)
    words = _words(rng)
    rate = {}
    for story, table in words.groupby("story"):
        mid = (table["onset"] + table["offset"]).to_numpy() / 2
        resampled = lanczos_matrix(mid, tr_times(N_TRS, TR)) @ np.ones((len(table), 1))
        delayed = add_delays(resampled, (2,))[2 : N_TRS - 2, 0]
        rate[story] = (delayed - delayed.mean()) / delayed.std()
    subjects = {}
    for k in range(n_subjects):
        data = {
            s: np.column_stack(
                [rate[s] + rng.standard_normal(rate[s].size), rng.standard_normal(rate[s].size)]
            )
            for s in STORIES
        }
        runs = {s: {"n_trs": N_TRS, "trim_start": 2, "trim_end": 2, "tr": TR} for s in STORIES}
        subjects[f"{k + 1:02d}"] = SubjectData(data=data, targets=TARGETS.copy(), runs=runs)
    return words, subjects


def test_baseline_features_by_hand():
    words = pd.DataFrame(
        {
            "story": "s",
            "word_index": np.arange(5, dtype=np.int64),
            "word": ["Once", "upon", "a", "time.", '"Hello!"'],
            "onset": np.arange(5.0),
            "offset": np.arange(5.0) + 0.5,
        }
    )
    np.testing.assert_array_equal(baseline_features(words, "word_rate")["s"], np.ones((1, 5, 1)))
    feats = baseline_features(words, "word_length_position")["s"][0]
    np.testing.assert_array_equal(feats[:, 1], [4, 4, 1, 4, 5])  # letters only
    np.testing.assert_array_equal(feats[:, 2], [0, 1, 2, 3, 0])  # a new sentence after "time."
    with pytest.raises(BrainshapeError, match="unknown baseline 'pitch'"):
        baseline_features(words, "pitch")


def test_inter_subject_ceiling_matches_the_shared_signal_theory():
    # Shared unit-variance signal plus independent noise of variance v: with k subjects the r
    # of one subject with the mean of the k - 1 others is 1 / sqrt((1 + v)(1 + v / (k - 1))).
    rng = np.random.default_rng(1)
    k, v, n = 5, 2.0, 4000
    shared = rng.standard_normal((n, 2))
    shared[:, 1] = 0  # target 1: noise only
    runs = {s: {"n_trs": n // 4 + 4, "trim_start": 2, "trim_end": 2, "tr": TR} for s in STORIES}
    subjects = {}
    for i in range(k):
        Y = shared + math.sqrt(v) * rng.standard_normal((n, 2))
        data = {s: Y[j * n // 4 : (j + 1) * n // 4] for j, s in enumerate(STORIES)}
        subjects[str(i)] = SubjectData(data=data, targets=TARGETS.copy(), runs=runs)
    # A subject whose only story nobody else heard has no one to be compared with.
    lonely = {"solo": np.random.default_rng(9).standard_normal((50, 2))}
    solo = {"solo": {"n_trs": 54, "trim_start": 2, "trim_end": 2, "tr": TR}}
    subjects["9"] = SubjectData(data=lonely, targets=TARGETS.copy(), runs=solo)

    table = inter_subject_ceiling(subjects)
    expected = 1 / math.sqrt((1 + v) * (1 + v / (k - 1)))
    pooled = table[table.subject != "9"]
    assert pooled.loc[pooled.target == 0, "isc"].to_numpy() == pytest.approx(expected, abs=0.03)
    assert pooled.loc[pooled.target == 1, "isc"].abs().max() < 0.06
    # The ceiling of a one-subject model is the r of the subject with the shared signal itself.
    best = [
        np.corrcoef(
            shared[:, 0], np.concatenate([subjects[str(i)].data[s][:, 0] for s in STORIES])
        )[0, 1]
        for i in range(k)
    ]
    np.testing.assert_allclose(pooled.loc[pooled.target == 0, "ceiling"], best, atol=0.03)
    assert pooled.loc[pooled.target == 0, "ceiling"].to_numpy() == pytest.approx(
        1 / math.sqrt(1 + v), abs=0.03
    )
    assert (pooled["n_others"] == k - 1).all()
    assert (pooled.loc[pooled.target == 0, "source"] == "subjects").all()
    assert table.loc[table.subject == "9", "ceiling"].isna().all()
    assert table.attrs["without_ceiling"] == {
        "sub-9": "nobody else heard its stories (solo) with the same TR"
    }


def test_ceiling_pools_runs_of_other_lengths_and_masks_that_differ_at_the_edges():
    """Real subjects' runs differ by a volume or two and their masks at the edges: the
    ceiling compares them on the volumes and voxels they share."""
    rng = np.random.default_rng(4)
    n, k = 300, 4
    shared = rng.standard_normal((n + 4, 6))  # six voxels' shared signal, word clock rows
    targets = pd.DataFrame(
        {"target": np.arange(6), "roi": "A", "hemisphere": "L", "n_voxels": 1,
         "i": np.arange(6), "j": 0, "k": 0, "x": np.arange(6) * 3.0, "y": 0.0, "z": 0.0}
    )  # fmt: skip
    subjects = {}
    for s in range(k):
        start = s % 2  # every other subject's run starts one volume later
        length = n - s  # and runs shorter
        keep = np.arange(6) if s else np.arange(5)  # subject 0's mask lacks the last voxel
        data = shared[start : start + length][:, keep] + rng.standard_normal((length, len(keep)))
        run = {"n_trs": length + 4, "trim_start": 2, "trim_end": 2, "tr": TR,
               "offset": start * TR}  # fmt: skip
        table = targets.iloc[keep].reset_index(drop=True).assign(target=np.arange(len(keep)))
        subjects[str(s)] = SubjectData(data={"a": data}, targets=table, runs={"a": run})
    table = inter_subject_ceiling(subjects)
    assert np.isfinite(table["ceiling"]).all() and not table.attrs["without_ceiling"]
    # One shared signal with noise of the same variance: r with the signal is 1 / sqrt(2).
    assert table["ceiling"].mean() == pytest.approx(1 / math.sqrt(2), abs=0.03)
    assert table["ceiling"].to_numpy() == pytest.approx(1 / math.sqrt(2), abs=0.1)
    assert table.loc[table.subject == "0", "target"].tolist() == list(range(5))


def test_word_rate_explains_the_signal_and_the_table_shows_the_model_adds_nothing():
    words, subjects = _word_rate_dataset()
    rng = np.random.default_rng(2)
    # A "model" whose layer 1 carries word rate (a constant per word) among random units, and
    # whose layer 0 is random units only.
    features = {}
    for story, table in words.groupby("story"):
        n = len(table)
        layer1 = np.column_stack([np.ones(n), rng.standard_normal((n, 3))])
        features[story] = np.stack([rng.standard_normal((n, 4)), layer1])
    options = {"delays": (1, 2, 3), "alphas": ALPHAS, "n_permutations": 49, "seed": 3}
    model = encode_variant(words, features, subjects, **options)
    model.insert(0, "variant", "fp32")
    model.insert(0, "model", "toy")
    base = encode_baseline(words, subjects, "word_rate", **options)
    ceiling = inter_subject_ceiling(subjects)
    table = analysis.brainscores([model], baselines=[base], ceiling=ceiling)

    stg = table[(table.roi == "STG") & (table.layer == 1)]
    assert (stg["score"] > 0.4).all()
    assert (stg["score_word_rate"] > 0.4).all()
    assert stg["excess_word_rate"].abs().max() < 0.03  # nothing beyond word rate
    np.testing.assert_allclose(stg["p_value"], 0.02)  # 1 / (1 + 49): beats every permutation
    assert (stg["q_value"] <= 0.04).all()
    # Normalised by the inter-subject ceiling (r of each subject with the others' mean).
    np.testing.assert_allclose(stg["score_normalized"], stg["score"] / stg["ceiling"])
    ag = table[table.roi == "AG"]
    assert ag["score"].abs().max() < 0.15 and (ag["p_value"] > 0.05).mean() > 0.5
    assert table["score_untrained"].isna().all()  # no untrained variant in this table
    assert list(table.columns[:7]) == [*analysis.KEYS, "score"]


def test_untrained_variant_is_joined_beside_the_trained_one():
    base = {
        "model": "m", "layer": 0, "subject": "01", "target": 0, "roi": "STG", "hemisphere": "L",
        "alpha": 1.0,
    }  # fmt: skip
    rows = [dict(base, variant="fp32", score=0.5), dict(base, variant="untrained", score=0.2)]
    table = analysis.brainscores([pd.DataFrame(rows)])
    trained = table[table.variant == "fp32"].iloc[0]
    assert trained["score_untrained"] == 0.2
    assert trained["excess_untrained"] == pytest.approx(0.3)


def test_baseline_table_without_its_columns_is_named(tmp_path):
    bad = tmp_path / "word_rate.parquet"
    pd.DataFrame({"subject": ["01"], "score": [0.1]}).to_parquet(bad)
    model = pd.DataFrame(
        [{"model": "m", "variant": "v", "layer": 0, "subject": "01", "target": 0, "roi": "A",
          "hemisphere": "L", "score": 0.1, "alpha": 1.0}]
    )  # fmt: skip
    with pytest.raises(BrainshapeError, match=r"baseline table .*word_rate.parquet lacks column"):
        analysis.brainscores([model], baselines=[bad])
