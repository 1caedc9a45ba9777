import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainshape import demo, stimuli
from brainshape.errors import BrainshapeError

STORIES = ("lighthouse", "orchard", "ferry")
SPACE = "MNI152NLin2009cAsym"
SEED = 3
PLANTED = [
    {"roi": "STG", "hemisphere": "L", "model": "stand-in", "variant": "fp32", "layer": 2},
    {"roi": "AG", "hemisphere": "R", "model": "stand-in", "variant": "fp32", "layer": 1},
]
# A low per-voxel SNR (the demo default is 0.5) so that ROI means stay well below r = 1 and
# the checks on the manifest's expected correlations have room to fail.
LOW_SNR = 0.05
NUISANCE = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "csf", "white_matter"]


def stand_in_features(words, seed=0):
    """Random word features in place of language-model layers: (model, variant, layer) keys."""
    rng = np.random.default_rng(seed)
    return {
        ("stand-in", "fp32", 2): {s: rng.standard_normal((len(w), 40)) for s, w in words.items()},
        ("stand-in", "fp32", 1): {s: rng.standard_normal((len(w), 24)) for s, w in words.items()},
    }


def make_dataset(root, *, stories=STORIES, subjects=2, seed=SEED, snr=LOW_SNR, **kwargs):
    words = demo.generate_stimuli(root, stories=stories, subjects=subjects, seed=seed)
    feats = stand_in_features(words, seed)
    manifest = demo.generate_bold(
        root, words, feats, subjects=subjects, seed=seed, snr=snr, planted=PLANTED, **kwargs
    )
    return words, feats, manifest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    words, feats, manifest = make_dataset(root)
    return root, words, feats, manifest


def run_files(root, sub, story):
    func = root / "derivatives" / "fmriprep" / f"sub-{sub}" / "func"
    stem = f"sub-{sub}_task-{story}"
    return (
        func / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz",
        func / f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz",
        func / f"{stem}_desc-confounds_timeseries.tsv",
    )


def roi_voxels(root):
    """(roi, hemisphere) -> boolean (X, Y, Z) from the written atlas, mask and affine alone."""
    atlas = nib.load(root / demo.ATLAS_IMAGE)
    mask_img = nib.load(run_files(root, "01", STORIES[0])[1])
    labels = pd.read_csv(root / demo.ATLAS_LABELS, sep="\t")
    data = np.asarray(atlas.dataobj)
    mask = np.asarray(mask_img.dataobj) > 0
    x = nib.affines.apply_affine(atlas.affine, np.indices(data.shape).reshape(3, -1).T)[:, 0]
    x = x.reshape(data.shape)
    return {
        (name, hemi): (data == index) & mask & ((x < 0) if hemi == "L" else (x > 0))
        for index, name in zip(labels["index"], labels["name"], strict=True)
        for hemi in ("L", "R")
    }


# --- layout -------------------------------------------------------------------------------------


def test_layout_names_shapes_and_headers(dataset):
    root, words, _, manifest = dataset
    desc = json.loads((root / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "raw" and desc["BIDSVersion"]
    deriv = json.loads((root / "derivatives/fmriprep/dataset_description.json").read_text())
    assert deriv["DatasetType"] == "derivative" and deriv["GeneratedBy"][0]["Name"] == "brainshape"
    assert (root / "README").read_text().startswith("brainshape demo dataset")
    participants = pd.read_csv(root / "participants.tsv", sep="\t")
    assert participants["participant_id"].tolist() == ["sub-01", "sub-02"]
    assert manifest["subjects"] == ["01", "02"] and manifest["stories"] == list(STORIES)

    for story in STORIES:
        folder = root / "stimuli" / story
        assert {p.name for p in folder.iterdir()} == {
            "align.json",
            f"{story}.TextGrid",
            "transcript.txt",
        }
        # ceil(audio length / tr) volumes, and the audio runs on >= 10 s past the last word
        n_trs = manifest["n_trs"][story]
        duration = manifest["audio_duration"][story]
        assert n_trs == math.ceil(duration / 2.0)
        assert duration - words[story]["offset"].iloc[-1] >= 10.0
        for sub in ("01", "02"):
            events = root / f"sub-{sub}" / "func" / f"sub-{sub}_task-{story}_events.tsv"
            assert events.is_file()
            bold_path, mask_path, conf_path = run_files(root, sub, story)
            bold = nib.load(bold_path)
            assert bold.shape == (16, 20, 16, n_trs)
            assert bold.get_data_dtype() == np.float32
            assert bold.header.get_zooms() == (6.0, 6.0, 6.0, 2.0)
            assert bold.header.get_xyzt_units() == ("mm", "sec")
            mask = nib.load(mask_path)
            assert mask.get_data_dtype() == np.uint8
            np.testing.assert_array_equal(mask.affine, bold.affine)
            data = np.asarray(bold.dataobj)
            inside = np.asarray(mask.dataobj) > 0
            assert (data[~inside] == 0).all() and (data[inside] > 500).all()
            conf = pd.read_csv(conf_path, sep="\t", na_values=["n/a"])
            assert len(conf) == n_trs
            assert set(conf.columns) == set(demo.CONFOUND_COLUMNS)
            assert conf["framewise_displacement"].isna().tolist() == [True] + [False] * (n_trs - 1)
            assert conf.drop(columns="framewise_displacement").notna().all().all()
            # global_signal is the in-mask mean of the written volumes
            np.testing.assert_allclose(
                conf["global_signal"],
                data[inside].mean(axis=0, dtype=np.float64),
                rtol=0,
                atol=1e-3,
            )


def test_atlas_labels_and_hemispheres(dataset):
    root, _, _, manifest = dataset
    labels = pd.read_csv(root / demo.ATLAS_LABELS, sep="\t")
    assert labels.columns.tolist() == ["index", "name"]
    assert labels["name"].tolist() == ["IFG", "STG", "MTG", "AG", "PREC"]
    atlas = nib.load(root / demo.ATLAS_IMAGE)
    assert atlas.shape == (16, 20, 16)
    x = nib.affines.apply_affine(atlas.affine, np.indices(atlas.shape).reshape(3, -1).T)[:, 0]
    assert not np.any(np.isclose(x, 0.0))  # no voxel centre on the midline
    data = np.asarray(atlas.dataobj).ravel()
    mask = np.asarray(nib.load(run_files(root, "01", STORIES[0])[1]).dataobj).ravel() > 0
    assert not np.any(data[~mask])  # every ROI voxel is in the brain
    n_voxels = {(e["roi"], e["hemisphere"]): e["n_voxels"] for e in manifest["planted"]}
    n_voxels.update({(e["roi"], e["hemisphere"]): e["n_voxels"] for e in manifest["null"]})
    for index, roi in zip(labels["index"], labels["name"], strict=True):
        # one label per ROI; the sign of world x splits it into two blobs of 25-60 voxels
        side = x[data == index]
        for hemi, count in (("L", (side < 0).sum()), ("R", (side > 0).sum())):
            assert 25 <= count <= 60 and count == n_voxels[(roi, hemi)], (roi, hemi)
        left = np.argwhere((np.asarray(atlas.dataobj) == index) & (x.reshape(atlas.shape) < 0))
        assert np.ptp(left, axis=0).max() <= 6  # compact: a blob, not scattered voxels


def test_word_files_parse_back_to_the_same_words_and_times(dataset):
    root, words, *_ = dataset
    for story in STORIES:
        expected = words[story]
        folder = root / "stimuli" / story
        assert stimuli.story_words(folder / "transcript.txt") == expected["word"].tolist()
        tables = {
            "gentle": stimuli.read_gentle(folder / "align.json"),
            "textgrid": stimuli.read_textgrid(folder / f"{story}.TextGrid"),
            "events": stimuli.read_events(
                root / "sub-02" / "func" / f"sub-02_task-{story}_events.tsv"
            ),
        }
        for name, table in tables.items():
            assert table["word"].tolist() == expected["word"].tolist(), name
            for col in ("onset", "offset"):
                np.testing.assert_allclose(table[col], expected[col], atol=1e-6, err_msg=name)


def test_word_timings_follow_length_and_punctuation():
    words = ["Once", "upon", "a", "time,", "the", "lighthouse", "keeper", "slept.", "Why?", "No."]
    table, duration = demo.word_timings(words, np.random.default_rng(0))
    onset, offset = table["onset"].to_numpy(), table["offset"].to_numpy()
    assert 2.0 <= onset[0] <= 4.0
    assert 10.0 <= duration - offset[-1] <= 12.0
    gaps = onset[1:] - offset[:-1]
    assert 0.25 <= gaps[3] <= 0.45  # after "time,"
    assert all(0.5 <= gaps[i] <= 0.9 for i in (7, 8))  # after "slept." and "Why?"
    assert all(0.01 <= gaps[i] <= 0.08 for i in (0, 1, 2, 4, 5, 6))
    assert offset[5] - onset[5] > offset[2] - onset[2]  # "lighthouse" outlasts "a"
    # whole centiseconds, as an aligner reports them
    np.testing.assert_allclose(onset * 100, np.round(onset * 100), atol=1e-9)


# --- signal model -------------------------------------------------------------------------------


def test_hrf_is_the_spm_double_gamma_at_the_tr():
    for tr, peak_lag in ((2.0, 3), (1.0, 5)):
        h = demo.spm_hrf(tr)
        assert h[0] == 0 and np.isclose(h.sum(), 1.0)
        assert h.argmax() == peak_lag  # peak near 5 s
        assert h.min() < 0 and h.argmin() * tr > 10  # undershoot after 10 s
        assert len(h) == int(32 / tr) + 1


def test_layer_scores_are_unit_variance_and_uncorrelated(dataset):
    _, words, feats, manifest = dataset
    n_trs = manifest["n_trs"]
    for key, k in ((("stand-in", "fp32", 2), 16), (("stand-in", "fp32", 1), 16)):
        scores = demo.layer_scores(feats[key], words, n_trs, 2.0)
        assert [scores[s].shape for s in STORIES] == [(n_trs[s], k) for s in STORIES]
        stacked = np.concatenate([scores[s] for s in STORIES])
        np.testing.assert_allclose(np.cov(stacked.T, bias=True), np.eye(k), atol=1e-8)
    narrow = {s: f[:, :5] for s, f in feats[("stand-in", "fp32", 1)].items()}
    assert demo.layer_scores(narrow, words, n_trs, 2.0)[STORIES[0]].shape[1] == 5


def test_ground_truth_manifest(dataset):
    root, _, _, manifest = dataset
    assert json.loads((root / "ground_truth.json").read_text()) == manifest
    assert manifest["seed"] == SEED and manifest["snr"] == LOW_SNR
    assert "k * tr + tr / 2" in manifest["time_convention"]
    assert "SPM canonical double gamma" in manifest["hrf"]
    planted = {(p["roi"], p["hemisphere"]): p for p in manifest["planted"]}
    assert set(planted) == {("STG", "L"), ("AG", "R")}
    assert len(manifest["null"]) == 8
    assert ("PREC", "L") in {(n["roi"], n["hemisphere"]) for n in manifest["null"]}
    snr = manifest["snr"]
    for p in planted.values():
        assert 0.6 <= p["expected_r_roi_mean"] <= 0.9
        assert p["expected_r_roi_mean_cleaned"] < p["expected_r_roi_mean"]
        # one voxel: signal variance 1, noise variance 1 / snr
        assert p["expected_r_voxel"] == pytest.approx(math.sqrt(snr / (1 + snr)), abs=0.03)


# --- planted recovery ---------------------------------------------------------------------------


def _regress_out_like_the_data(root, sub, story, x):
    """``x`` (n_trs, k) minus its fit on an intercept, a linear trend and the nuisance confounds."""
    conf = pd.read_csv(run_files(root, sub, story)[2], sep="\t", na_values=["n/a"])[NUISANCE]
    n = len(conf)
    design = np.column_stack([np.ones(n), np.arange(n), conf.to_numpy()])
    return x - design @ np.linalg.lstsq(design, x, rcond=None)[0]


def _cleaned_roi_means(root, sub, voxels):
    """ROI-mean time series per story, cleaned (key story) and as written (key story-raw)."""
    out = {}
    for story in STORIES:
        data = np.asarray(nib.load(run_files(root, sub, story)[0]).dataobj, dtype=np.float64)
        raw = np.stack([data[v].mean(axis=0) for v in voxels.values()], axis=1)
        out[story] = _regress_out_like_the_data(root, sub, story, raw)
        out[story + "-raw"] = raw
    return out


def _r(a, b, stories=STORIES):
    a = np.concatenate([a[s] - a[s].mean(axis=0) for s in stories])
    b = np.concatenate([b[s] - b[s].mean(axis=0) for s in stories])
    a, b = a / np.linalg.norm(a, axis=0), b / np.linalg.norm(b, axis=0)
    return a.T @ b


def test_planted_signal_is_recovered_from_the_files(dataset):
    root, words, feats, manifest = dataset
    signals = demo.planted_signals(words, feats, PLANTED, manifest["n_trs"], 2.0, SEED)
    truth = {s: np.stack([signals[k][s].mean(axis=1) for k in signals], axis=1) for s in STORIES}
    for story in STORIES:  # the written noiseless ROI means are the same signal
        written = pd.read_csv(
            root / "derivatives/groundtruth" / f"task-{story}_desc-signal_timeseries.tsv", sep="\t"
        )
        assert written.columns.tolist() == ["STG-L", "AG-R"]
        np.testing.assert_allclose(written.to_numpy(), truth[story], atol=1e-7)

    voxels = roi_voxels(root)
    names = list(voxels)
    nulls = [c for c, key in enumerate(names) if key not in signals]
    planted = {(p["roi"], p["hemisphere"]): p for p in manifest["planted"]}
    for sub in manifest["subjects"]:
        means = _cleaned_roi_means(root, sub, voxels)
        r = _r(truth, means)  # (2 planted signals, 10 ROI x hemispheres)
        truth_cleaned = {s: _regress_out_like_the_data(root, sub, s, truth[s]) for s in STORIES}
        r_same_space = _r(truth_cleaned, means)
        raw = _r(truth, {s: means[s + "-raw"] for s in STORIES})
        for row, key in enumerate(signals):
            col = names.index(key)
            expected = planted[key]["expected_r_by_subject"][sub]
            # what the fMRI stage can reach: the files agree with the manifest
            assert r[row, col] == pytest.approx(expected["roi_mean_cleaned"], abs=0.005)
            # the best any model can do: truth and data in the same (cleaned) space
            assert r_same_space[row, col] == pytest.approx(expected["roi_mean"], abs=0.07)
            assert np.abs(r[row, nulls]).max() < 0.25  # null ROIs carry no signal
            # the nuisance is large: without cleaning the signal is mostly hidden
            assert raw[row, col] < r[row, col] - 0.2


def test_subjects_share_the_signal_and_differ_in_noise(dataset):
    root, *_ = dataset
    voxels = {k: v for k, v in roi_voxels(root).items() if k in {("STG", "L"), ("PREC", "R")}}
    a = _cleaned_roi_means(root, "01", voxels)
    b = _cleaned_roi_means(root, "02", voxels)
    r = _r(a, b)
    assert r[0, 0] > 0.4  # planted ROI: shared signal
    assert abs(r[1, 1]) < 0.25  # null ROI: independent noise
    bold = [np.asarray(nib.load(run_files(root, s, STORIES[0])[0]).dataobj) for s in ("01", "02")]
    assert not np.allclose(bold[0], bold[1])


# --- determinism --------------------------------------------------------------------------------


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        make_dataset(tmp_path / name, stories=("ferry", "glacier"), subjects=1, seed=seed)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert len(a) > 20 and a.keys() == b.keys() == c.keys()
    assert a == b
    func = Path("derivatives/fmriprep/sub-01/func")
    bold = func / "sub-01_task-ferry_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    for differs in (
        bold,
        func / "sub-01_task-ferry_desc-confounds_timeseries.tsv",
        Path("stimuli/ferry/align.json"),
        Path("ground_truth.json"),
    ):
        assert a[differs] != c[differs], differs
    assert a[bold][:2] == b"\x1f\x8b" and a[bold][4:8] == b"\0\0\0\0"  # gzip header time 0


# --- errors -------------------------------------------------------------------------------------


def test_subject_labels():
    assert demo.subject_labels(3) == ["01", "02", "03"]
    assert demo.subject_labels(["A1", "02"]) == ["A1", "02"]
    with pytest.raises(BrainshapeError, match=r"subject labels must be .*got \['0-1'\]"):
        demo.subject_labels(["0-1"])
    with pytest.raises(BrainshapeError, match="subjects must be at least 1, got 0"):
        demo.subject_labels(0)


def test_bad_planted_entries_name_the_entry(dataset):
    root, words, feats, manifest = dataset
    args = (words, feats)
    kw = {"n_trs": manifest["n_trs"], "subjects": 1, "seed": 0}
    bad = [dict(PLANTED[0], roi="V1")]
    with pytest.raises(BrainshapeError, match=r"demo planted\[0\].roi 'V1' is not a demo ROI"):
        demo.generate_bold(root / "x", *args, planted=bad, **kw)
    with pytest.raises(BrainshapeError, match=r"demo planted\[1\] plants STG L a second time"):
        demo.generate_bold(root / "x", *args, planted=[PLANTED[0], PLANTED[0]], **kw)
    missing = [dict(PLANTED[0], layer=5)]
    with pytest.raises(
        BrainshapeError,
        match="no planted features for model 'stand-in' variant 'fp32' layer 5 \\(STG L\\)",
    ):
        demo.generate_bold(root / "x", *args, planted=missing, **kw)
    with pytest.raises(BrainshapeError, match="demo snr must be a positive number, got 0.0"):
        demo.generate_bold(root / "x", *args, planted=PLANTED, snr=0, **kw)
    with pytest.raises(BrainshapeError, match=r"ground_truth.json holds no n_trs; run "):
        demo.generate_bold(root / "x", *args, planted=PLANTED, subjects=1, seed=0)
    assert not (root / "x").exists()
    with pytest.raises(BrainshapeError, match="no packaged story 'atlantis'"):
        demo.generate_stimuli(root / "y", stories=["atlantis"], subjects=1)


# --- real models --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, repo):
    return repo / "config" / "models.demo.yaml", tmp_path_factory.mktemp("models")


def test_planted_features_are_the_named_layer_of_the_model(tiny_models, tmp_path):
    from brainshape import features, models

    registry, model_root = tiny_models
    words = demo.generate_stimuli(tmp_path, stories=("ferry", "glacier"), subjects=1)
    planted = [
        {"roi": "IFG", "hemisphere": "L", "model": "tiny-gpt2", "variant": "fp32", "layer": 2},
        {"roi": "MTG", "hemisphere": "R", "model": "tiny-gpt2", "variant": "fp32", "layer": 1},
    ]
    kw = {"context_tokens": 64, "stride": 48, "batch_size": 4}
    # The deepest planted layer is 2 of 4: the model runs its first 3 layers only, and the
    # states are those of the whole model (the fourth layer's norm would change layer 3's).
    feats = demo.planted_features_for(planted, words, registry, model_root, **kw)
    assert (model_root / "tiny-gpt2" / "config.json").is_file()  # prepared on first use
    assert set(feats) == {("tiny-gpt2", "fp32", 2), ("tiny-gpt2", "fp32", 1)}
    spec = models.get_model(models.load_registry(registry), "tiny-gpt2")
    model, tokenizer = models.load(spec, "fp32", model_root / "tiny-gpt2", device="cpu")
    assert model.config.num_hidden_layers == 4
    for story, table in words.items():
        states = features.extract_words(model, tokenizer, table["word"].tolist(), **kw)
        for layer in (1, 2):
            got = feats[("tiny-gpt2", "fp32", layer)][story]
            assert got.shape == (len(table), 64) and got.dtype == np.float32
            np.testing.assert_array_equal(got, states[layer])
    with pytest.raises(
        BrainshapeError,
        match="demo planted layer 9 of model 'tiny-gpt2' does "
        r"not exist: it has layers 0 \(embeddings\) to 4",
    ):
        demo.planted_features_for([dict(planted[0], layer=9)], words, registry, model_root, **kw)


def test_generate_writes_a_dataset_planted_from_a_model(tiny_models, tmp_path):
    registry, model_root = tiny_models
    planted = [
        {"roi": "AG", "hemisphere": "R", "model": "tiny-gpt2", "variant": "untrained", "layer": 2}
    ]
    manifest = demo.generate(
        tmp_path,
        registry_path=registry,
        model_root=model_root,
        planted=planted,
        subjects=["07"],
        stories=("ferry", "glacier"),
        seed=1,
        snr=LOW_SNR,
        context_tokens=64,
        stride=48,
    )
    assert json.loads((tmp_path / "ground_truth.json").read_text()) == manifest
    assert [(p["roi"], p["hemisphere"], p["variant"]) for p in manifest["planted"]] == [
        ("AG", "R", "untrained")
    ]
    assert 0.6 <= manifest["planted"][0]["expected_r_roi_mean"] <= 0.9
    assert manifest["subjects"] == ["07"]
    assert run_files(tmp_path, "07", "glacier")[0].is_file()
