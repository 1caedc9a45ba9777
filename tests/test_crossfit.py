"""Cross-fitting: shape features and brainscores from halves of the stories that share no data.

On noise-only fMRI, the geometry of a layer against the brain cloud and the layer's brainscore
both follow the same noise when computed on the same volumes; across layers they correlate. With
features from one half of the stories and scores from the other they do not."""

import copy
import json

import numpy as np
import pandas as pd
import pytest

from brainshape import crossfit
from brainshape import regressions as R
from brainshape import topology as T
from brainshape.encoding import encode_variant
from brainshape.errors import BrainshapeError
from brainshape.subjects import SubjectData
from brainshape.threads import limit_threads

TR = 2.0
STORIES = {f"s{k}": 120 for k in range(6)}
SITES = [("A", "L"), ("A", "R"), ("B", "L"), ("B", "R"), ("C", "L"), ("C", "R")]
SETTINGS = {"metric": "euclidean", "components": None, "maxdim": 0, "backend": "giotto"}


def _noise_dataset(rng, n_layers=16, hidden=8):
    """Six stories of 120 volumes; a layer's word features mix one signal shared by all layers
    with its own noise (layer 0 all noise, the last all shared); one subject whose six ROI-mean
    targets are noise only."""
    words, features = [], {}
    for story, n in STORIES.items():
        onset = np.sort(rng.uniform(0.5, n * TR - 6.0, size=int(n * 2.2)))
        words.append(
            pd.DataFrame(
                {"story": story, "word_index": np.arange(onset.size), "word": "w",
                 "onset": onset, "offset": onset + 0.3, "aligned": True}
            )
        )  # fmt: skip
        shared = rng.standard_normal((onset.size, hidden))
        mixes = np.linspace(0, 1, n_layers + 1)
        layers = [m * shared + (1 - m) * rng.standard_normal(shared.shape) for m in mixes]
        features[story] = np.stack(layers).astype(np.float32)
    runs = {s: {"n_trs": n, "trim_start": 2, "trim_end": 1, "tr": TR} for s, n in STORIES.items()}
    targets = pd.DataFrame(SITES, columns=["roi", "hemisphere"]).assign(n_voxels=4)
    targets.insert(0, "target", np.arange(len(SITES)))
    data = {s: rng.standard_normal((n - 3, len(SITES))) for s, n in STORIES.items()}
    subject = SubjectData(data=data, targets=targets, runs=copy.deepcopy(runs))
    return pd.concat(words, ignore_index=True), features, {"01": subject}


def _scores(words, features, subjects, stories):
    subjects = crossfit.restrict(subjects, stories)
    table = encode_variant(
        words, {s: features[s] for s in stories}, subjects, alphas=np.logspace(0, 4, 5),
        metrics=("r",), folds="stories",
    )  # fmt: skip
    return table.groupby(["roi", "hemisphere", "layer"])["score"].mean()


def _geometry(tmp_path, words, features, subjects, stories):
    time_base = tmp_path / "timebase.json"
    if not time_base.is_file():
        dirs = []
        for sub, s in subjects.items():
            d = tmp_path / f"sub-{sub}"
            d.mkdir()
            for story, x in s.data.items():
                np.save(d / f"{story}.npy", x)
            s.targets.to_parquet(d / "targets.parquet")
            (d / "runs.json").write_text(json.dumps(s.runs))
            dirs.append(str(d))
        T.write_time_base(dirs, time_base, delay_s=4.0, history_s=4.0, max_points=400, seed=0)
        T.compute_brain(dirs, time_base, tmp_path / "brain", per_subject=False,
                        embedding={"dimension": 3, "lag_s": 2.0}, **SETTINGS)  # fmt: skip
        T.compute_layers(features, words, time_base, tmp_path / "layers", **SETTINGS)
    table = T.pair_variant(
        tmp_path / "layers", tmp_path / "brain", features, words, time_base, orders=[],
        metric="euclidean", components=None, measures=["cka_debiased"], summaries=[],
        null=T.NullSettings(draws=2, min_story_taus=5), only_stories=stories,
    )  # fmt: skip
    return table.set_index(["roi", "hemisphere", "layer"])["cka_debiased"]


def _correlation(features, scores) -> float:
    """Mean over ROI x hemispheres of the correlation across layers."""
    return float(np.mean([np.corrcoef(features.loc[s], scores.loc[s])[0, 1] for s in SITES]))


def test_on_noise_only_fmri_the_split_leaves_features_and_scores_uncorrelated(tmp_path):
    # Eight noise-only data sets (400 landmarks): the correlation across layers between debiased
    # CKA and the brainscore, on all stories for both and cross-fitted. Tolerance: centred means
    # within 2.5 standard errors (over data sets) of 0. The same data without the split show the
    # shared noise (a mean correlation above 2 standard errors): the check can fail.
    rng = np.random.default_rng(2)
    stories = list(STORIES)
    halves = crossfit.halves(stories)
    together, split = [], []
    with limit_threads(1):
        for k in range(8):
            words, features, subjects = _noise_dataset(rng)
            work = tmp_path / f"set{k}"
            work.mkdir()
            full = _geometry(work, words, features, subjects, None)
            together.append(_correlation(full, _scores(words, features, subjects, stories)))
            geometry = {h: _geometry(work, words, features, subjects, halves[h]) for h in "AB"}
            scores = {h: _scores(words, features, subjects, halves[h]) for h in "AB"}
            split.append(
                (_correlation(geometry["A"], scores["B"])
                 + _correlation(geometry["B"], scores["A"])) / 2
            )  # fmt: skip
    se = {k: np.std(v, ddof=1) / np.sqrt(len(v)) for k, v in (("t", together), ("s", split))}
    print(f"together {np.mean(together):+.3f} (se {se['t']:.3f}), "
          f"split {np.mean(split):+.3f} (se {se['s']:.3f})")  # fmt: skip
    assert abs(np.mean(split)) < 2.5 * se["s"]
    assert np.mean(together) > 2 * se["t"]


def test_halves_restrict_and_when_to_cross_fit():
    stories = ["f", "b", "e", "a", "d", "c"]
    assert crossfit.halves(stories) == {"A": ["a", "c", "e"], "B": ["b", "d", "f"]}
    assert crossfit.half_stories(stories, "B") == ["b", "d", "f"]
    assert crossfit.planned("auto", stories) and not crossfit.planned("auto", stories[:5])
    assert crossfit.planned(True, stories[:2]) and not crossfit.planned(False, stories)
    with pytest.raises(BrainshapeError, match="regressions.crossfit is true but the dataset has 1"):
        crossfit.planned(True, ["a"])
    # Every subject must have heard enough of each half (subjects may hear different stories).
    heard = {"01": stories, "02": ["a", "b", "c", "d"]}
    assert not crossfit.planned("auto", stories, 6, heard)
    assert crossfit.planned("auto", stories, 4, heard)
    with pytest.raises(BrainshapeError, match="sub-03 heard no story of one half"):
        crossfit.planned(True, stories, 6, {**heard, "03": ["a", "c"]})
    _, _, subjects = _noise_dataset(np.random.default_rng(0), n_layers=1)
    half = crossfit.restrict(subjects, ["s1", "s3", "zz"])
    assert sorted(half["01"].data) == sorted(half["01"].runs) == ["s1", "s3"]
    with pytest.raises(BrainshapeError, match="no subject heard any of the stories"):
        crossfit.restrict(subjects, ["zz"])


def test_a_half_of_the_time_base_is_its_stories_alone(tmp_path):
    rng = np.random.default_rng(1)
    words, features, subjects = _noise_dataset(rng, n_layers=2)
    _geometry(tmp_path, words, features, subjects, None)
    base, index = T.read_time_base(tmp_path / "timebase.json")
    half = ["s1", "s4"]
    sub, local, kept = T.timebase.restrict(base, index, half)
    assert sub.stories() == half and len(kept) == sub.n_points()
    # The landmarks of those stories, as points of the half's time base.
    np.testing.assert_array_equal(kept[local], index[np.isin(index, kept)])
    got = _geometry(tmp_path, words, features, subjects, half)
    _, extra = T.load_diagrams(tmp_path / "brain" / "group_B_R.npz")
    brain = T.prepare(extra["series"].astype(np.float64)[kept][local])
    resamplers = T.landmark_resamplers(words, sub, local, window=3)
    layer = T.prepare(T.layer_cloud(features, resamplers, 1))
    assert got.loc[("B", "R", 1)] == pytest.approx(T.cka_debiased(layer, brain), abs=1e-12)


def test_cross_fitted_observations_pair_each_half_with_the_other():
    rows = []
    for half, shift in (("A", 0.0), ("B", 1.0)):
        for layer in range(4):
            rows.append(dict(model="m0", variant="full", layer=layer, subject="group",
                             roi="STG", hemisphere="L", half=half, feat=layer + shift))  # fmt: skip
    topo = pd.DataFrame(rows)
    scores = topo.rename(columns={"feat": "score"}).assign(subject="01")
    scores["score"] = 10 * scores["score"]
    obs = R.crossfit_observations(
        {h: scores[scores.half == h].drop(columns="half") for h in "AB"},
        {h: topo[topo.half == h].drop(columns="half") for h in "AB"},
        {"m0": "f0"}, params={"m0": 1e8}, kinds={("m0", "full"): "full"},
    )  # fmt: skip
    a = obs[obs.crossfit == "A"].sort_values("layer")
    b = obs[obs.crossfit == "B"].sort_values("layer")
    # Features of A beside scores of B, and the other way round.
    np.testing.assert_allclose(a["feat"], np.arange(4))
    np.testing.assert_allclose(a["score"], 10 * (np.arange(4) + 1.0))
    np.testing.assert_allclose(b["feat"], np.arange(4) + 1.0)
    np.testing.assert_allclose(b["score"], 10 * np.arange(4))
    assert (obs["nuisance_crossfit_B"] == (obs["crossfit"] == "B")).all()


@pytest.mark.workflow
def test_the_workflow_plans_the_halves_where_asked(tmp_path, repo):
    import yaml
    from conftest import dry_run, write_config

    cfg = yaml.safe_load((repo / "config" / "demo.yaml").read_text())
    cfg["registry"] = str(repo / "config" / "models.demo.yaml")
    write_config(tmp_path / "auto", cfg)
    # Four stories: too few for crossfit auto (six).
    assert not {"encode_half", "topology_pairs_half"} & {
        j["rule"] for j in dry_run(tmp_path / "auto")
    }
    cfg["regressions"] = {"crossfit": True}
    cfg["encoding"].update(folds="blocks", n_blocks=3)
    write_config(tmp_path / "on", cfg)
    jobs = dry_run(tmp_path / "on")
    halves = [j for j in jobs if j["rule"] == "encode_half"]
    assert len(halves) == 2 * 5 and {j["wildcards"]["half"] for j in halves} == {"A", "B"}
    assert len([j for j in jobs if j["rule"] == "topology_pairs_half"]) == 2 * 5
    (regressions,) = [j for j in jobs if j["rule"] == "regressions"]
    for half in "AB":
        assert f"results/demo/crossfit/{half}/topology.parquet" in regressions["input"]
        assert f"results/demo/crossfit/{half}/brainscores.parquet" in regressions["input"]


def test_a_half_s_encode_job_is_planned_on_its_stories_without_the_null(repo):
    import yaml
    from conftest import SCHEMAS

    from brainshape import resources
    from brainshape.config import load_registry_dict, validate
    from brainshape.sizing import JobSizing
    from brainshape.study import Study

    cfg = yaml.safe_load((repo / "config" / "demo.yaml").read_text())
    cfg["registry"] = str(repo / "config" / "models.demo.yaml")
    # Two stories per half: contiguous blocks, as leaving one of two stories out cannot choose
    # alphas (a half is sized on its own folds).
    cfg["encoding"].update(folds="blocks", n_blocks=3)
    cfg = validate(cfg, SCHEMAS / "config.schema.yaml", "demo.yaml")
    study = Study(cfg, load_registry_dict(cfg["registry"], SCHEMAS / "models.schema.yaml"), "x")
    sizing = JobSizing(study)
    half = crossfit.half_stories(study.stories("demo"), "A")
    full = sizing.encode_shape("demo", "smollm2-135m", "g1")
    shape = sizing.encode_half_shape("demo", "smollm2-135m", "g1", "A")
    assert sorted(shape.story_trs) == sorted(sizing.kept_story_shapes("demo", half)[0])
    assert shape.null_copies == 0 and shape.n_permutations == 0 and full.null_copies > 0
    assert (shape.hidden, shape.layers, shape.targets) == (full.hidden, full.layers, full.targets)
    assert resources.encode_flops(shape) < 0.5 * resources.encode_flops(full)
    assert sizing.encode_half_runtime_min("demo", "smollm2-135m", "g1", "A") == (
        resources.encode_runtime_min(shape, gflops=sizing.encode_rate("smollm2-135m"))
    )
    # Voxel targets: a half's group is group_size / crossfit_voxels subjects, each with a
    # sample of its voxels.
    cfg["fmri"]["targets"] = "voxels"
    cfg["encoding"]["group_size"] = 1
    cfg["regressions"]["crossfit_voxels"] = 0.5
    study = Study(cfg, load_registry_dict(cfg["registry"], SCHEMAS / "models.schema.yaml"), "x")
    sizing = JobSizing(study)
    assert study.crossfit_groups("demo", "A") == {"g1": ["01", "02"], "g2": ["03", "04"]}
    assert len(study.subject_groups("demo")) == 4
    voxels, sites = (
        sizing.targets_per_subject("demo"),
        sizing.targets_per_subject("demo", "roi_mean"),
    )
    shape = sizing.encode_half_shape("demo", "smollm2-135m", "g2", "A")
    assert shape.targets == 2 * crossfit.sampled_count(voxels, 0.5, sites) < 2 * voxels


def _voxel_targets(sizes: dict[tuple[str, str], int]) -> pd.DataFrame:
    rows = [(roi, hemi, v) for (roi, hemi), n in sizes.items() for v in range(n)]
    targets = pd.DataFrame(rows, columns=["roi", "hemisphere", "i"])
    targets.insert(0, "target", np.arange(len(targets), dtype=np.int64))
    return targets.assign(j=0, k=0, n_voxels=1)


def test_a_half_fits_an_evenly_spread_sample_of_each_roi_s_voxels():
    targets = _voxel_targets({("A", "L"): 100, ("A", "R"): 30, ("B", "L"): 8})
    rows = crossfit.voxel_sample(targets, 0.25)
    a_left = rows[rows < 100]
    assert len(a_left) == 25 and a_left[0] == 0 and a_left[-1] == 99
    assert np.ptp(np.diff(a_left)) <= 1  # evenly spaced
    assert len(rows[(rows >= 100) & (rows < 130)]) == 10  # at least MIN_SAMPLED_VOXELS
    assert set(range(130, 138)) <= set(rows)  # an ROI smaller than that: all of it
    assert len(crossfit.voxel_sample(targets, 1.0)) == len(targets)
    means = targets.drop(columns=["i", "j", "k"]).drop_duplicates(["roi", "hemisphere"])
    assert len(crossfit.voxel_sample(means.assign(n_voxels=40), 0.1)) == len(means)
    # Planning counts the same number where the ROIs are equally large.
    even = _voxel_targets({("A", "L"): 400, ("A", "R"): 400})
    assert crossfit.sampled_count(800, 0.1, 2) == len(crossfit.voxel_sample(even, 0.1)) == 80

    rng = np.random.default_rng(0)
    data = SubjectData(
        data={"s": rng.standard_normal((12, len(targets)))},
        targets=targets,
        runs={"s": {"n_trs": 12, "trim_start": 0, "trim_end": 0, "tr": 2.0}},
    )
    (sampled,) = crossfit.sample_voxels({"01": data}, 0.25).values()
    kept = crossfit.voxel_sample(targets, 0.25)
    np.testing.assert_array_equal(sampled.data["s"], data.data["s"][:, kept])
    np.testing.assert_array_equal(sampled.targets["target"], np.arange(len(kept)))
    np.testing.assert_array_equal(sampled.targets["i"], targets["i"].to_numpy()[kept])
    sampled.check("sub-01")


def test_the_voxel_sample_keeps_what_differs_between_layers():
    """Voxel scores = a layer's effect on the ROI + each voxel's own level (shared by every
    layer) + noise: the ROI's mean score from a tenth of its voxels orders the layers as all of
    them do, because the voxels' own levels are the same sample for every layer."""
    rng = np.random.default_rng(3)
    n_voxels, n_layers = 600, 13
    effect = 0.05 * np.exp(-(((np.linspace(0, 1, n_layers) - 0.5) / 0.15) ** 2))  # mid-depth
    level = rng.normal(0.1, 0.1, n_voxels)
    scores = effect[:, None] + level[None, :] + rng.normal(0, 0.02, (n_layers, n_voxels))
    targets = _voxel_targets({("A", "L"): n_voxels})
    kept = crossfit.voxel_sample(targets, 0.1)
    full, sample = scores.mean(axis=1), scores[:, kept].mean(axis=1)
    assert np.argmax(sample) == np.argmax(full) == n_layers // 2
    assert np.corrcoef(full - full.mean(), sample - sample.mean())[0, 1] > 0.99
    # The sample's offset (its voxels' mean level) is shared: differences between layers agree
    # to far less than the ROI's spread between voxels.
    assert np.abs(np.diff(sample) - np.diff(full)).max() < 0.01 < level.std()
