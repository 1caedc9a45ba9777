"""The ridge engine against the previous one where the science is judged, and bootstrap alpha
selection against a plain loop.

Equal science (``equal_science``): on the demo generator's data (voxel targets, two planted
layers) and on ds003020's stand-in run through the workflow (voxel targets, a fixed test
story), the engine (``engine="fast"``) and the previous engine (``"reference"``, which
forms every alpha's predictions) find the same best layer in every planted ROI, give ROI
scores within 0.005 r, choose alphas within one grid step for at least 99% of the targets, and
give the same per-target p-values (the pooled null's calibration is then that of
tests/test_scoring.py, which runs on the engine).
"""

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, SCHEMAS, snakemake, write_config
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from brainshape import (
    demo,
    encoding,
    features,
    fmri,
    importers,
    params,
    ridge,
    sheet,
    standins,
    stimuli,
    subjects,
)
from brainshape.config import load_registry_dict, validate
from brainshape.errors import BrainshapeError
from brainshape.study import Study

#: One step of the default alpha grid (13 values, 1 to 1e6): half a decade.
GRID_STEP = 0.5


def equal_science(new: pd.DataFrame, ref: pd.DataFrame, planted) -> dict:
    """Assert the equal-science criteria between two encode tables; return the figures."""
    key = ["layer", "subject", "target"]
    new, ref = new.sort_values(key, ignore_index=True), ref.sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(new[key], ref[key])
    for roi, hemisphere, layer in planted:
        for table in (new, ref):
            rows = table[(table.roi == roi) & (table.hemisphere == hemisphere)]
            best = rows.groupby("layer")["score"].mean().idxmax()
            assert best == layer, (roi, hemisphere, rows.groupby("layer")["score"].mean())
    group = ["layer", "subject", "roi", "hemisphere"]
    roi_new = new.groupby(group)["score"].mean()
    roi_ref = ref.groupby(group)["score"].mean()
    worst_roi = float((roi_new - roi_ref).abs().max())
    assert worst_roi < 0.005
    steps = np.abs(np.log10(new["alpha"]) - np.log10(ref["alpha"])) / GRID_STEP
    within = float((steps <= 1 + 1e-9).mean())
    assert within >= 0.99
    np.testing.assert_allclose(new["p_value"], ref["p_value"], atol=1e-6)
    return {"roi": worst_roi, "alphas_within_a_step": within, "targets": len(new)}


# --- the demo generator's data -----------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """Two subjects of the demo's data in voxel mode, toy features of 3 layers: layer 1 planted
    in IFG L, layer 2 in AG R."""
    root = tmp_path_factory.mktemp("demo_voxels")
    words = demo.generate_stimuli(root, stories=demo.DEFAULT_STORIES, subjects=2, seed=7)
    rng = np.random.default_rng(7)
    layers = [{s: rng.standard_normal((len(w), 24)) for s, w in words.items()} for _ in range(3)]
    planted = [
        {"roi": "IFG", "hemisphere": "L", "model": "toy", "variant": "fp32", "layer": 1},
        {"roi": "AG", "hemisphere": "R", "model": "toy", "variant": "fp32", "layer": 2},
    ]
    demo.generate_bold(
        root,
        words,
        {("toy", "fp32", 1): layers[1], ("toy", "fp32", 2): layers[2]},
        subjects=2,
        seed=7,
        planted=planted,
    )
    folders = []
    for sub in ("01", "02"):
        out = root / "fmri" / f"sub-{sub}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fmri.preprocess_subject(
                root / demo.FMRIPREP, sub, list(words), demo.SPACE, root / demo.ATLAS_IMAGE,
                root / demo.ATLAS_LABELS, out, rois=None, mode="voxels",
                confounds=list(demo.NUISANCE_CONFOUNDS), detrend=True, standardize=True,
                high_pass=None, trim_start=2, trim_end=2, t_r=2.0,
            )  # fmt: skip
        folders.append(out)
    feats = {s: np.stack([layer[s] for layer in layers]).astype(np.float32) for s in words}
    return stimuli.stack_words(words), feats, subjects.read_subjects(folders)


def test_engine_keeps_the_science_on_the_demo_data(demo_data):
    words, feats, subs = demo_data
    tables = {
        engine: encoding.encode_variant(words, feats, subs, engine=engine)
        for engine in ("fast", "reference")
    }
    planted = [("IFG", "L", 1), ("AG", "R", 2)]
    figures = equal_science(tables["fast"], tables["reference"], planted)
    print(figures)
    assert figures["targets"] == 3 * 2 * 408


# --- a published dataset's stand-in, through the workflow ----------------------------------------


@pytest.fixture(scope="module")
def lebel(tmp_path_factory):
    """ds003020's stand-in (HDF5 responses, a fixed test story) imported and run through the
    workflow to its encode tables, voxel targets; returns the work dir, study and tables."""
    base = tmp_path_factory.mktemp("lebel_engine")
    model_root = base / "models"
    root = base / "ds003020"
    registry = REPO / "config" / "models.demo.yaml"
    standins.generate("ds003020", root, registry_path=registry, model_root=model_root)
    runs = importers.run("ds003020", root, labels=standins.LABELS).runs
    work = base / "work"
    path = work / "runs" / "ds003020.tsv"
    sheet.write_sheet(path, runs)
    cfg = {
        "registry": str(registry),
        "models": [standins.PLANTED["model"]],
        "variants": [standins.PLANTED["variant"]],
        "model_root": str(model_root),
        "datasets": {"ds003020": {"bids_root": str(root), "runs": str(path)}},
        "features": dict(standins.FEATURES),
        "fmri": {"targets": "voxels", "trim_start": 0, "trim_end": 0},
        "encoding": {"folds": "stories", "threads": 1, "metrics": ["r"]},
    }
    write_config(work, cfg)
    target = "results/ds003020/encoding/tiny-gpt2/fp32/g1.parquet"
    snakemake(work, "--cores", "2", target)
    cfg = validate(copy.deepcopy(cfg), SCHEMAS / "config.schema.yaml", "config.yaml")
    study = Study(cfg, load_registry_dict(cfg["registry"], SCHEMAS / "models.schema.yaml"), "x")
    return work, study, pd.read_parquet(work / target)


def _encode_job(work, study, **changes) -> pd.DataFrame:
    """The encode job of the stand-in run again in this process, with ``changes`` to its
    options (``encoding.variant_options`` of the job's own params)."""
    settings = params.encode(study, "ds003020", "g1")
    results = work / "results" / "ds003020"
    words = stimuli.read_words_table(results / "words.parquet")
    feats = features.read_features(results / "features" / "tiny-gpt2" / "fp32", settings["stories"])
    folders = [results / "fmri" / f"sub-{s}" for s in settings["subjects"]]
    options = {**encoding.variant_options(settings), **changes}
    return encoding.encode_variant(words, feats, subjects.read_subjects(folders), **options)


@pytest.mark.workflow
def test_engine_keeps_the_science_on_the_ds003020_standin(lebel):
    work, study, table = lebel
    planted = tuple(standins.PLANTED[k] for k in ("roi", "hemisphere", "layer"))
    reference = _encode_job(work, study, engine="reference")
    figures = equal_science(table.drop(columns=["model", "variant"]), reference, [planted])
    print(figures)
    assert figures["targets"] > 500


@pytest.mark.workflow
def test_bootstrap_selection_finds_the_planted_layer_on_the_ds003020_standin(lebel):
    # The authors' own alpha selection on their dataset's layout: the planted layer stays the
    # best in the planted ROI, and the ROIs without signal stay near 0.
    work, study, table = lebel
    boot = _encode_job(
        work, study, alpha_selection="bootstrap", bootstrap={"chunk_trs": 10, "draws": 8}
    )
    roi = boot[(boot.roi == standins.PLANTED["roi"]) & (boot.hemisphere == "L")]
    by_layer = roi.groupby("layer")["score"].mean()
    assert by_layer.idxmax() == standins.PLANTED["layer"], by_layer.round(3).to_dict()
    nested = table[(table.roi == standins.PLANTED["roi"]) & (table.hemisphere == "L")]
    assert by_layer.max() == pytest.approx(nested.groupby("layer")["score"].mean().max(), abs=0.05)
    for roi_name, hemisphere in standins.NULL_ROIS:
        rows = boot[(boot.roi == roi_name) & (boot.hemisphere == hemisphere)]
        assert abs(rows.score.mean()) < 0.1


# --- bootstrap alpha selection -------------------------------------------------------------------


def test_bootstrap_draws_are_seeded_contiguous_chunks_of_the_training_rows():
    # Training rows of an outer fold with a gap in them (a held-out block between two runs).
    train = np.r_[0:53, 70:120]
    chunks = ridge.training_chunks(train, 10)
    # 5 chunks in the first run (3 rows left over), 5 in the second; never across the gap.
    assert len(chunks) == 10
    for c in chunks:
        np.testing.assert_array_equal(np.diff(train[c]), np.ones(9))
    spec = ridge.Bootstrap(chunk_trs=10, draws=6, held_out=0.2)
    assert spec.chunks_held(train.size) == 2  # round(0.2 x 103 / 10)
    draws = ridge.bootstrap_splits(train, spec, seed=3, fold=1)
    assert len(draws) == 6
    held_sets = set()
    for tr, va in draws:
        assert va.size == 20 and np.intersect1d(tr, va).size == 0
        assert np.array_equal(np.union1d(tr, va), np.arange(train.size))
        assert not np.isin(np.arange(50, 53), va).any()  # the leftover rows always train
        held_sets.add(tuple(va))
    assert len(held_sets) > 1  # draws differ
    again = ridge.bootstrap_splits(train, spec, seed=3, fold=1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(draws, again, strict=True))
    other = ridge.bootstrap_splits(train, spec, seed=3, fold=2)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(draws, other, strict=True))
    with pytest.raises(BrainshapeError, match=r"encoding.bootstrap: a fold's 103 training"):
        ridge.bootstrap_splits(train, ridge.Bootstrap(10, 2, 0.95), seed=0, fold=0)


def _plain_bootstrap(X, Y, alphas, segments, spec, seed):
    """Bootstrap ridge written out with scikit-learn: per outer fold, features z-scored on the
    training rows, every alpha fitted on each draw's training rows and scored by Pearson r on
    its held-out chunks, the best mean r (ties to the larger alpha), refit, predict."""
    preds = np.zeros_like(Y)
    chosen = []
    for i, (train, test) in enumerate(ridge.folds_from_segments(segments)):
        scaler = StandardScaler().fit(X[train])
        Xz, Xt = scaler.transform(X[train]), scaler.transform(X[test])
        mean_r = np.zeros((len(alphas), Y.shape[1]))
        draws = ridge.bootstrap_splits(train, spec, seed, i)
        for tr, va in draws:
            for a, alpha in enumerate(alphas):
                pred = Ridge(alpha=alpha).fit(Xz[tr], Y[train][tr]).predict(Xz[va])
                for t in range(Y.shape[1]):
                    mean_r[a, t] += np.corrcoef(pred[:, t], Y[train][va][:, t])[0, 1] / len(draws)
        best = len(alphas) - 1 - np.argmax(mean_r[::-1], axis=0)
        chosen.append(alphas[best])
        for t in range(Y.shape[1]):
            fit = Ridge(alpha=alphas[best[t]]).fit(Xz, Y[train][:, t])
            preds[test, t] = fit.predict(Xt)
    r = np.array([np.corrcoef(preds[:, t], Y[:, t])[0, 1] for t in range(Y.shape[1])])
    return np.array(chosen), r


@pytest.mark.parametrize("p", [12, 150])  # from the features, and from the rows' Gram matrix
def test_bootstrap_selection_equals_a_plain_loop(p):
    rng = np.random.default_rng(40)
    lengths = (70, 60, 65)
    X = rng.standard_normal((sum(lengths), p)) * rng.uniform(0.5, 3, p) + 2.0
    w = rng.standard_normal((p, 9)) / np.sqrt(p)
    Y = X @ w * rng.uniform(0, 1, 9) + rng.standard_normal((sum(lengths), 9))
    alphas = np.logspace(-1, 4, 8)
    segments = ridge.contiguous_folds(lengths)
    spec = ridge.Bootstrap(chunk_trs=8, draws=5, held_out=0.25)
    result = ridge.cross_validate(X, Y, alphas, segments, bootstrap=spec, seed=4)
    ref_alphas, ref_r = _plain_bootstrap(X, Y, alphas, segments, spec, seed=4)
    np.testing.assert_array_equal(result.alphas, ref_alphas)
    assert len(np.unique(result.alphas)) > 2  # the targets really choose differently
    np.testing.assert_allclose(result.scores, ref_r, atol=1e-8)
    # The reference engine agrees too.
    slow = ridge.cross_validate(X, Y, alphas, segments, bootstrap=spec, seed=4, engine="reference")
    np.testing.assert_array_equal(slow.alphas, result.alphas)
    np.testing.assert_allclose(slow.scores, result.scores, atol=1e-10)


def test_bootstrap_needs_one_training_story_and_nested_two():
    rng = np.random.default_rng(41)
    X, Y = rng.standard_normal((200, 5)), rng.standard_normal((200, 3))
    segments = ridge.contiguous_folds((100, 100))
    with pytest.raises(BrainshapeError, match=r"at least 3 folds .* got 2"):
        ridge.cross_validate(X, Y, [1.0, 10.0], segments)
    result = ridge.cross_validate(
        X, Y, [1.0, 10.0], segments, bootstrap=ridge.Bootstrap(10, 3, 0.2)
    )
    assert result.alphas.shape == (2, 3)
    runs = [{"n_trs": 100, "trim_start": 0, "trim_end": 0, "split": "train"}] * 2
    with pytest.raises(BrainshapeError, match="2 stories; cross-validated brainscores need"):
        encoding.segments_of(runs, encoding.FoldOptions("stories", None), "sub-01")
    boot = encoding.FoldOptions("stories", None, ridge.Bootstrap())
    assert len(encoding.segments_of(runs, boot, "sub-01")[0]) == 2
