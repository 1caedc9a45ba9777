"""Planted shape is recovered: the demo generator plants a shape relation between one layer of a
real (tiny) model and one ROI x hemisphere; the shape stage finds it at that layer, above its
time-shifted null, with ROI-mean and with voxel targets, and finds nothing in the other ROIs."""

import math

import numpy as np
import pandas as pd
import pytest

from brainshape import demo, features, fmri, models
from brainshape import topology as T

STORIES = ("lighthouse", "orchard", "ferry")
SUBJECTS = ["01", "02", "03"]
PLANTED = {"roi": "PREC", "hemisphere": "L", "model": "tiny-gpt2", "variant": "fp32", "layer": 3}
MEASURES = ["rsa", "cka_debiased"]
SETTINGS = {"maxdim": 1, "backend": "giotto", "metric": "euclidean", "components": None}
EMBEDDING = {"dimension": 4, "lag_s": 2.0}
NUISANCE = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "csf", "white_matter"]


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory, repo):
    """A demo dataset (3 subjects, 3 stories) whose PREC L carries a shape relation with layer 3
    of tiny-gpt2, preprocessed both ways, and the shape stage on tiny-gpt2's every layer."""
    root = tmp_path_factory.mktemp("shape")
    words = demo.generate_stimuli(root / "bids", stories=STORIES, subjects=SUBJECTS, seed=5)
    registry = models.load_registry(repo / "config" / "models.demo.yaml")
    spec = models.get_model(registry, "tiny-gpt2")
    models.prepare(spec, root / "models" / "tiny-gpt2")
    model, tokenizer = models.load(spec, "fp32", root / "models" / "tiny-gpt2", device="cpu")
    kw = {"context_tokens": 128, "stride": 96, "batch_size": 8}
    states = {
        s: features.extract_words(model, tokenizer, list(w["word"]), **kw) for s, w in words.items()
    }
    planted = {("tiny-gpt2", "fp32", 3): {s: f[3] for s, f in states.items()}}
    entry = {**PLANTED, "relation": "shape"}
    demo.generate_bold(root / "bids", words, planted, subjects=SUBJECTS, seed=5, planted=[entry])
    table = pd.concat(
        [w.assign(story=s, word_index=np.arange(len(w))) for s, w in words.items()],
        ignore_index=True,
    )
    return {mode: _shape_stage(root, mode, states, table) for mode in ("roi_mean", "voxels")}


def _shape_stage(root, mode, states, words):
    bids = root / "bids"
    dirs = []
    for sub in SUBJECTS:
        out = root / mode / "fmri" / f"sub-{sub}"
        fmri.preprocess_subject(
            bids / demo.FMRIPREP, sub, STORIES, demo.SPACE, bids / demo.ATLAS_IMAGE,
            bids / demo.ATLAS_LABELS, out, rois=None, mode=mode, confounds=NUISANCE,
            detrend=True, standardize=True, high_pass=None, trim_start=2, trim_end=2, t_r=2.0,
        )  # fmt: skip
        dirs.append(str(out))
    history = (EMBEDDING["dimension"] - 1) * EMBEDDING["lag_s"] if mode == "roi_mean" else 0.0
    base = root / mode / "timebase.json"
    T.write_time_base(dirs, base, delay_s=4.0, history_s=history, max_points=200, seed=0)
    T.compute_brain(dirs, base, root / mode / "brain", embedding=EMBEDDING, per_subject=False,
                    **SETTINGS)  # fmt: skip
    T.compute_layers(states, words, base, root / mode / "layers", **SETTINGS)
    return T.pair_variant(
        root / mode / "layers", root / mode / "brain", states, words, base,
        orders=[{"q": 2, "p": 2}], measures=MEASURES, summaries=["entropy"],
        metric="euclidean", components=None, null=T.NullSettings(draws=199),
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["roi_mean", "voxels"])
@pytest.mark.parametrize("measure", MEASURES)
def test_planted_shape_is_best_at_its_layer_and_above_its_null(planted_run, mode, measure):
    table = planted_run[mode]
    roi = table[(table.roi == PLANTED["roi"]) & (table.hemisphere == PLANTED["hemisphere"])]
    roi = roi.set_index("layer").sort_index()
    print(mode, measure, roi[[measure, f"{measure}_null_mean", f"{measure}_z"]].round(3))
    best = int(roi[measure].idxmax())
    assert abs(best - PLANTED["layer"]) <= 1, (best, roi[measure].round(3).tolist())
    assert roi.loc[PLANTED["layer"], f"{measure}_p"] < 0.05


@pytest.mark.parametrize("mode", ["roi_mean", "voxels"])
def test_no_layer_beats_its_null_in_rois_without_signal(planted_run, mode):
    table = planted_run[mode]
    nulls = table[(table.roi != PLANTED["roi"]) | (table.hemisphere != PLANTED["hemisphere"])]
    n_layers = table["layer"].nunique()
    hits = []
    for (roi, hemi), part in nulls.groupby(["roi", "hemisphere"]):
        for m in MEASURES:
            # Family-wise over the layers (Bonferroni): one test per ROI x hemisphere and measure.
            if (part[f"{m}_p"] < 0.05 / n_layers).any():
                hits.append((roi, hemi, m, part[f"{m}_p"].min()))
    # 9 ROI x hemispheres x 2 measures at a family-wise 5%: 0.9 expected by chance; 3 or more
    # has probability < 0.06 under the null.
    assert len(hits) <= 2, hits


def test_wasserstein_ignores_which_volume_is_which():
    # Why the Wasserstein columns have no time-shift null: permuting the brain cloud's volumes
    # leaves its diagram, and so every Wasserstein distance to it, exactly as it was.
    rng = np.random.default_rng(0)
    cloud = np.cumsum(rng.standard_normal((120, 5)), axis=0)
    layer = T.diagrams(T.prepare(rng.standard_normal((120, 8))).distances)
    brain = T.diagrams(T.prepare(cloud).distances)
    shuffled = T.diagrams(T.prepare(cloud[rng.permutation(120)]).distances)
    for dim in (0, 1):
        a, b = T.wasserstein(layer[dim], brain[dim], 2, 2), T.wasserstein(layer[dim], shuffled[dim])
        assert a == pytest.approx(T.wasserstein(layer[dim], shuffled[dim], 2, 2), abs=1e-9)
        assert math.isfinite(b)
