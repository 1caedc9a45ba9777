"""Point clouds, persistence diagrams, Wasserstein distances and geometry, against references."""

import json
import math
from pathlib import Path

import gudhi
import gudhi.wasserstein
import numpy as np
import pandas as pd
import pytest
from scipy.spatial import procrustes as scipy_procrustes

from brainshape import topology as T
from brainshape.errors import BrainshapeError
from brainshape.stimuli import word_times


def circle(n, rng, noise=0.02, radius=1.0):
    t = rng.uniform(0, 2 * np.pi, n)
    pts = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    return pts + noise * rng.standard_normal(pts.shape)


def _sorted(dgm):
    dgm = np.asarray(dgm).reshape(-1, 2)
    return dgm[np.lexsort((dgm[:, 1], dgm[:, 0]))]


@pytest.mark.parametrize("backend", T.BACKENDS)
@pytest.mark.parametrize("metric", T.METRICS)
def test_diagrams_equal_gudhi_on_the_same_cloud(backend, metric):
    rng = np.random.default_rng(3)
    cloud = np.concatenate([circle(60, rng), rng.standard_normal((20, 2)) * 0.3], axis=0)
    cloud = np.concatenate([cloud, rng.standard_normal((80, 3)) * 0.1], axis=1)
    d = T.distances(cloud, metric)
    ours = T.diagrams(d, maxdim=1, backend=backend)
    st = gudhi.RipsComplex(distance_matrix=d).create_simplex_tree(max_dimension=2)
    st.compute_persistence()
    for dim in (0, 1):
        ref = st.persistence_intervals_in_dimension(dim)
        ref = ref[np.isfinite(ref[:, 1])]
        ref = ref[ref[:, 1] > ref[:, 0]]
        got = ours[dim][ours[dim][:, 1] > ours[dim][:, 0]]
        assert got.shape == ref.shape
        np.testing.assert_allclose(_sorted(got), _sorted(ref), atol=1e-6)


def test_a_circle_has_one_long_h1_bar():
    rng = np.random.default_rng(0)
    dgms = T.diagrams(T.distances(circle(100, rng), "euclidean"), maxdim=1)
    life = np.sort(dgms[1][:, 1] - dgms[1][:, 0])
    assert life[-1] > 1.0
    assert life.size == 1 or life[-2] < 0.2
    assert len(dgms[0]) == 99  # the infinite H0 bar is dropped


@pytest.mark.parametrize(("q", "p"), [(1, math.inf), (1, 1), (2, 2), (3, 1.5), (2, math.inf)])
def test_wasserstein_equals_gudhi(q, p):
    rng = np.random.default_rng(int(q * 10 + (p if math.isfinite(p) else 7)))
    for dim in (0, 1):
        a = T.diagrams(T.distances(rng.standard_normal((70, 4)), "correlation"))[dim]
        b = T.diagrams(T.distances(rng.standard_normal((50, 6)), "correlation"))[dim]
        ref = gudhi.wasserstein.wasserstein_distance(a, b, order=q, internal_p=p)
        assert abs(T.wasserstein(a, b, q, p) - ref) < 1e-9


def test_wasserstein_edge_cases():
    a = np.array([[0.0, 2.0]])
    empty = np.zeros((0, 2))
    # A lone point goes to the diagonal: (d - b) / 2 in L_inf, times 2^(1/p) in L_p.
    assert T.wasserstein(a, empty, 1, math.inf) == pytest.approx(1.0, abs=1e-12)
    assert T.wasserstein(a, empty, 1, 2) == pytest.approx(math.sqrt(2), abs=1e-12)
    assert T.wasserstein(empty, empty) == 0.0
    assert T.wasserstein(a, a, 2, 2) == 0.0
    with pytest.raises(BrainshapeError, match="topology.wasserstein q is 0.5"):
        T.wasserstein(a, a, 0.5, 2)


def test_summaries_by_hand():
    dgm = np.array([[0.0, 1.0], [0.5, 2.5], [1.0, 1.5], [2.0, 2.0]])  # last bar has no life
    s = T.summaries(dgm)
    life = np.array([1.0, 2.0, 0.5])
    share = life / life.sum()
    assert s["total_persistence"] == pytest.approx(3.5)
    assert s["entropy"] == pytest.approx(-(share * np.log(share)).sum())
    assert s["count"] == 3 and s["max"] == 2.0
    # Alive at t in [0.5, 1.0): bars 1 and 2; at [1.0, 1.5): bars 2 and 3 (bar 1 died at 1.0).
    assert s["betti_peak"] == 2 and s["betti_argpeak"] == 0.5
    assert T.summaries(np.zeros((0, 2)))["count"] == 0


def test_distances_match_scipy_and_reject_bad_metric():
    from scipy.spatial.distance import cdist

    x = np.random.default_rng(1).standard_normal((30, 7))
    np.testing.assert_allclose(
        T.distances(x, "correlation"), cdist(x, x, "correlation"), atol=1e-12
    )
    np.testing.assert_allclose(T.distances(x, "euclidean"), cdist(x, x), atol=1e-12)
    with pytest.raises(BrainshapeError, match="topology.metric is 'cosine'"):
        T.distances(x, "cosine")
    with pytest.raises(BrainshapeError, match="1-dimensional points"):
        T.distances(x[:, :1], "correlation")


def test_geometry_against_references():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 5))
    rot, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    y = 3.0 * x @ rot + 0.5 * rng.standard_normal((40, 5))
    _, _, ref = scipy_procrustes(x, y)
    assert T.procrustes(x, y) == pytest.approx(ref, abs=1e-10)
    # Wider than tall (hidden > points) goes through the SVD reduction: same value.
    wide = np.concatenate([x, np.zeros((40, 60))], axis=1)
    assert T.procrustes(wide, y) == pytest.approx(ref, abs=1e-10)
    assert T.procrustes(x, 2 * x @ rot) == pytest.approx(0.0, abs=1e-12)
    # Linear CKA in feature space (Kornblith et al. 2019, eq. for linear kernels).
    xc, yc = x - x.mean(0), y - y.mean(0)
    ref_cka = np.linalg.norm(yc.T @ xc) ** 2 / (
        np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    )
    assert T.cka(x, y) == pytest.approx(ref_cka, abs=1e-12)
    assert T.cka(wide, y) == pytest.approx(ref_cka, abs=1e-12)
    assert T.cka(x, x @ rot * 5) == pytest.approx(1.0, abs=1e-12)
    dx, dy = T.distances(x, "euclidean"), T.distances(y, "euclidean")
    iu = np.triu_indices(40, 1)
    from scipy.stats import rankdata

    ref_rsa = np.corrcoef(rankdata(dx[iu]), rankdata(dy[iu]))[0, 1]
    assert T.rsa(dx, dy) == pytest.approx(ref_rsa, abs=1e-12)


def test_landmarks_fixed_seed():
    a = T.landmarks(500, 100, seed=4)
    assert len(a) == 100 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, T.landmarks(500, 100, seed=4))
    np.testing.assert_array_equal(T.landmarks(50, 100, seed=4), np.arange(50))


# --- clouds on a shared time base and the stage functions --------------------------------------


def _fake_dataset(tmp_path, n_subjects=3, delay_signal=2):
    """Two stories; subjects' ROI means follow a hidden feature of the words, delayed."""
    rng = np.random.default_rng(5)
    runs = {}
    words, features = [], {}
    fmri = {f"{s:02d}": {} for s in range(1, n_subjects + 1)}
    for story, n_trs in (("alpha", 40), ("beta", 36)):
        runs[story] = {"n_trs": n_trs, "trim_start": 2, "trim_end": 2, "tr": 2.0}
        onsets = np.arange(0.2, n_trs * 2.0 - 1, 0.5)
        words.append(
            pd.DataFrame(
                {
                    "story": story,
                    "word_index": np.arange(onsets.size),
                    "onset": onsets,
                    "offset": onsets + 0.3,
                }
            )
        )
        features[story] = rng.standard_normal((3, onsets.size, 8)).astype(np.float32)
        for sub in fmri:
            fmri[sub][story] = rng.standard_normal((n_trs - 4, 4)).astype(np.float32)
    targets = pd.DataFrame(
        {
            "target": np.arange(4),
            "roi": ["AG", "AG", "STG", "STG"],
            "hemisphere": ["L", "R", "L", "R"],
            "n_voxels": 10,
        }
    )
    dirs = []
    for sub, stories in fmri.items():
        d = tmp_path / "fmri" / f"sub-{sub}"
        d.mkdir(parents=True)
        for story, arr in stories.items():
            np.save(d / f"{story}.npy", arr)
        targets.to_parquet(d / "targets.parquet")
        (d / "runs.json").write_text(json.dumps(runs))
        dirs.append(str(d))
    return dirs, pd.concat(words, ignore_index=True), features, runs


def test_time_base_pairs_brain_with_earlier_stimulus(tmp_path):
    dirs, words, features, runs = _fake_dataset(tmp_path)
    base = T.shared_time_base(dirs, delay=2)
    assert base.n_points() == (36 - 2) + (32 - 2)
    # Brain row k of a story (kept volume trim_start + k) is paired with the stimulus at the
    # volume `delay` earlier: for k = delay that is the first kept volume.
    np.testing.assert_allclose(base.model_times("alpha")[0], 2 * 2.0 + 1.0)
    clouds = T.layer_clouds(features, word_times(words), base)
    assert clouds.shape == (3, base.n_points(), 8)
    brain = T.brain_clouds({s: d for s, d in zip(["01", "02", "03"], dirs, strict=True)}, base)
    assert set(brain) == {("group", r, h) for r in ("AG", "STG") for h in ("L", "R")}
    ag_l = brain[("group", "AG", "L")]
    assert ag_l.shape == (base.n_points(), 3)
    np.testing.assert_array_equal(ag_l[:5, 0], np.load(f"{dirs[0]}/alpha.npy")[2:7, 0])


def test_mismatched_runs_and_one_column_clouds_are_refused(tmp_path):
    dirs, *_ = _fake_dataset(tmp_path)
    runs = json.loads((tmp_path / "fmri" / "sub-02" / "runs.json").read_text())
    runs["beta"]["trim_end"] = 3
    (tmp_path / "fmri" / "sub-02" / "runs.json").write_text(json.dumps(runs))
    with pytest.raises(BrainshapeError, match=r"sub-02/runs.json differs from .*sub-01/runs.json"):
        T.shared_time_base(dirs, delay=2)
    base = T.shared_time_base(dirs[:1], delay=2)
    with pytest.raises(BrainshapeError, match="per_subject is true but sub-01's AG L cloud"):
        T.brain_clouds({"01": dirs[0]}, base, per_subject=True)
    with pytest.raises(BrainshapeError, match="lower topology.delay"):
        T.shared_time_base(dirs[:1], delay=40)


def test_stage_end_to_end(tmp_path):
    dirs, words, features, _ = _fake_dataset(tmp_path)
    settings = {"metric": "correlation", "maxdim": 1, "backend": "giotto"}
    time_base = tmp_path / "timebase.json"
    _, landmarks = T.write_time_base(dirs, time_base, delay=2, max_points=50, seed=0)
    brain = T.compute_brain(dirs, time_base, tmp_path / "brain", per_subject=False, **settings)
    assert len(brain) == 4 and set(brain["n_points"]) == {50}
    n_layers = T.compute_layers(features, words, time_base, tmp_path / "layers", **settings)
    assert n_layers == 3
    assert sorted(p.name for p in (tmp_path / "layers").iterdir()) == [
        f"layer-{k}.npz" for k in range(3)
    ]
    table = T.pair_variant(
        tmp_path / "layers",
        tmp_path / "brain",
        features,
        words,
        time_base,
        orders=[{"q": 1, "p": math.inf}, {"q": 2, "p": 2}],
        metric="correlation",
    )
    assert len(table) == 12
    for col in ("wasserstein_q1_pinf_h0", "wasserstein_q2_p2_h1", "layer_entropy_h1", "cka"):
        assert table[col].notna().all()
    # The stored diagrams are the ones the distances were computed from.
    ldgm, _ = T.load_diagrams(tmp_path / "layers" / "layer-1.npz")
    bdgm, extra = T.load_diagrams(tmp_path / "brain" / "group_STG_R.npz")
    row = table[(table.layer == 1) & (table.roi == "STG") & (table.hemisphere == "R")].iloc[0]
    ref = gudhi.wasserstein.wasserstein_distance(ldgm[1], bdgm[1], order=2, internal_p=2)
    assert abs(row["wasserstein_q2_p2_h1"] - ref) < 1e-9
    assert extra["cloud"].shape == (50, 3)
    # The stage's geometry (landmark-only resampling, precomputed ranks) equals the direct one.
    base = T.shared_time_base(dirs, delay=2)
    cloud = T.layer_clouds(features, word_times(words), base)[1][extra["index"]]
    brain_cloud = extra["cloud"]
    d, bd = T.distances(cloud, "correlation"), T.distances(brain_cloud, "correlation")
    assert row["rsa"] == pytest.approx(T.rsa(d, bd), abs=1e-9)
    assert row["procrustes"] == pytest.approx(T.procrustes(cloud, brain_cloud), abs=1e-6)
    assert row["cka"] == pytest.approx(T.cka(cloud, brain_cloud), abs=1e-6)
    np.testing.assert_allclose(T.diagrams(d)[1], ldgm[1], atol=1e-6)
    np.testing.assert_array_equal(extra["index"], landmarks)


def test_layer_diagrams_do_not_read_the_brain_data_and_stale_landmarks_are_refused(tmp_path):
    dirs, words, features, runs = _fake_dataset(tmp_path)
    settings = {"metric": "correlation", "maxdim": 1, "backend": "giotto"}
    time_base = tmp_path / "timebase.json"
    T.write_time_base(dirs, time_base, delay=2, max_points=40, seed=0)
    T.compute_layers(features, words, time_base, tmp_path / "layers", **settings)
    before = (tmp_path / "layers" / "layer-2.npz").read_bytes()
    # Other BOLD data with the same runs: the layers' diagrams are the same, byte for byte.
    for d in dirs:
        for story in ("alpha", "beta"):
            np.save(f"{d}/{story}.npy", np.load(f"{d}/{story}.npy")[:, ::-1].copy())
    T.compute_brain(dirs, time_base, tmp_path / "brain", per_subject=False, **settings)
    T.compute_layers(features, words, time_base, tmp_path / "layers2", **settings)
    assert (tmp_path / "layers2" / "layer-2.npz").read_bytes() == before
    # Runs that changed under a time base computed before: refused, naming the file and fix.
    for d in dirs:
        changed = json.loads((Path(d) / "runs.json").read_text())
        changed["beta"]["trim_end"] = 3
        (Path(d) / "runs.json").write_text(json.dumps(changed))
    with pytest.raises(BrainshapeError) as err:
        T.compute_brain(dirs, time_base, tmp_path / "brain3", per_subject=False, **settings)
    assert str(err.value) == (
        f"{time_base} no longer matches the subjects' runs (a replaced derivative with another "
        "length, or changed trimming?); delete it so that rule topology_timebase computes it "
        "again, with every layer's diagrams"
    )
    # Layer diagrams from other landmarks than the brain clouds' cannot be paired.
    other = tmp_path / "other.json"
    T.write_time_base(dirs, other, delay=2, max_points=40, seed=1)
    T.compute_layers(features, words, other, tmp_path / "layers4", **settings)
    with pytest.raises(BrainshapeError, match=r"layer-0.npz was computed at other landmark"):
        T.pair_variant(
            tmp_path / "layers4",
            tmp_path / "brain",
            features,
            words,
            time_base,
            orders=[{"q": 1, "p": math.inf}],
            metric="correlation",
        )
