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
from brainshape.subjects import read_runs


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
    s = T.diagram_summaries(dgm)
    life = np.array([1.0, 2.0, 0.5])
    share = life / life.sum()
    assert s["total_persistence"] == pytest.approx(3.5)
    assert s["entropy"] == pytest.approx(-(share * np.log(share)).sum())
    assert s["count"] == 3 and s["max"] == 2.0
    # Alive at t in [0.5, 1.0): bars 1 and 2; at [1.0, 1.5): bars 2 and 3 (bar 1 died at 1.0).
    assert s["betti_peak"] == 2 and s["betti_argpeak"] == 0.5
    empty = T.diagram_summaries(np.zeros((0, 2)))
    assert empty["count"] == 0 and empty["entropy"] == 0 and math.isnan(empty["betti_argpeak"])
    assert list(T.diagram_summaries(dgm, ["max", "count"])) == ["max", "count"]


def test_distances_match_scipy_and_reject_bad_metric():
    from scipy.spatial.distance import cdist

    x = np.random.default_rng(1).standard_normal((30, 7))
    # sqrt(2 (1 - r)): the correlation distance made a metric.
    np.testing.assert_allclose(
        T.distances(x, "correlation"), np.sqrt(2 * cdist(x, x, "correlation")), atol=1e-7
    )
    np.testing.assert_allclose(T.distances(x, "euclidean"), cdist(x, x), atol=1e-7)
    with pytest.raises(BrainshapeError, match="topology.metric is 'cosine'"):
        T.distances(x, "cosine")
    with pytest.raises(BrainshapeError, match="2-dimensional points has no useful correlation"):
        T.distances(x[:, :2], "correlation")


def test_prepared_clouds_are_standardised_and_scale_free():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, 5)) * [1, 10, 100, 0.1, 3] + 7
    cloud = T.prepare(x)
    z = (x - x.mean(0)) / x.std(0)
    from scipy.spatial.distance import cdist

    d = cdist(z, z)
    assert cloud.scale == pytest.approx(np.median(d[np.triu_indices(60, 1)]))
    np.testing.assert_allclose(cloud.distances, d / cloud.scale, atol=1e-7)
    # Scaling a cloud or one of its columns changes nothing.
    np.testing.assert_allclose(T.prepare(x * [3, 1, 1, 1, 1] * 9).distances, cloud.distances)
    # components keeps the top principal components of the standardised cloud.
    two = T.prepare(x, components=2)
    u, s, _ = np.linalg.svd(z, full_matrices=False)
    pcs = u[:, :2] * s[:2]
    np.testing.assert_allclose(two.distances * two.scale, cdist(pcs, pcs), atol=1e-9)


def test_geometry_against_references():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 5))
    rot, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    y = 3.0 * x @ rot + 0.5 * rng.standard_normal((40, 5))
    cx, cy = T.prepare(x), T.prepare(y)
    zx, zy = T.standardize(x), T.standardize(y)
    _, _, ref = scipy_procrustes(zx, zy)
    assert T.procrustes(cx, cy) == pytest.approx(ref, abs=1e-10)
    # Wider than tall (hidden > points) goes through the SVD reduction: same value.
    wide = np.concatenate([x, rng.standard_normal((40, 60))], axis=1)
    _, _, ref_wide = scipy_procrustes(np.pad(zy, ((0, 0), (0, 60))), T.standardize(wide))
    assert T.procrustes(cy, T.prepare(wide)) == pytest.approx(ref_wide, abs=1e-10)
    # Linear CKA in feature space (Kornblith et al. 2019, eq. for linear kernels).
    ref_cka = np.linalg.norm(zy.T @ zx) ** 2 / (
        np.linalg.norm(zx.T @ zx) * np.linalg.norm(zy.T @ zy)
    )
    assert T.cka(cx, cy) == pytest.approx(ref_cka, abs=1e-12)
    # Standardised per column: reordering or rescaling the columns changes nothing.
    assert T.cka(cx, T.prepare(x[:, ::-1] * 5 + 3)) == pytest.approx(1.0, abs=1e-12)
    from scipy.stats import rankdata

    iu = np.triu_indices(40, 1)
    ref_rsa = np.corrcoef(rankdata(cx.distances[iu]), rankdata(cy.distances[iu]))[0, 1]
    assert T.rsa(cx, cy) == pytest.approx(ref_rsa, abs=1e-12)


def hsic_direct(x, y):
    """The unbiased HSIC formula written out with n x n matrices (Song et al. 2012)."""
    n = len(x)
    k, m = x @ x.T, y @ y.T
    np.fill_diagonal(k, 0)
    np.fill_diagonal(m, 0)
    one = np.ones(n)
    return (
        np.trace(k @ m) + (one @ k @ one) * (one @ m @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ k @ m @ one)
    ) / (n * (n - 3))  # fmt: skip


def test_debiased_cka_equals_the_direct_unbiased_hsic_formula():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((50, 7)), rng.standard_normal((50, 90)) + 0.3
    assert T.hsic_unbiased(x, y) == pytest.approx(hsic_direct(x, y), abs=1e-10)
    cx, cy = T.prepare(x), T.prepare(y)
    zx, zy = T.standardize(x), T.standardize(y)
    direct = hsic_direct(zx, zy) / np.sqrt(hsic_direct(zx, zx) * hsic_direct(zy, zy))
    assert abs(T.cka_debiased(cx, cy) - direct) < 1e-10
    assert T.cka_debiased(cx, T.prepare(x @ rng.standard_normal((7, 7)) * 4)) > 0.5


def test_debiased_cka_is_unbiased_against_width():
    # An unrelated brain of 3,000 columns against layers of effective rank 2 to 768 (1,000
    # points): linear CKA rises with the rank, debiased CKA stays at 0.
    rng = np.random.default_rng(0)
    brain = T.prepare(rng.standard_normal((1000, 3000)))
    biased = []
    for rank in (2, 8, 32, 128, 768):
        layer = rng.standard_normal((1000, rank)) @ rng.standard_normal((rank, 768))
        cloud = T.prepare(layer)
        value, linear = T.cka_debiased(cloud, brain), T.cka(cloud, brain)
        print(f"effective rank {rank}: debiased CKA {value:+.4f}, linear CKA {linear:.3f}")
        assert abs(value) < 0.05, (rank, value)
        biased.append(linear)
    assert biased[-1] > 0.3 and biased[0] < 0.1  # the bias the debiased estimator removes


def test_an_outlier_dimension_does_not_dominate():
    # Standardising each column over the volumes keeps one column with 100 times the variance
    # of the others from deciding the distances (as massive activations in GPT-2 or Llama-type
    # layers would without it).
    rng = np.random.default_rng(3)
    t = np.linspace(0, 8 * np.pi, 300)
    layer = np.stack([np.sin(t), np.cos(t), np.sin(t / 3)], 1) @ rng.standard_normal((3, 64))
    layer += 0.5 * rng.standard_normal(layer.shape)
    outlier = np.concatenate([layer, 10 * layer.std() * rng.standard_normal((300, 1))], axis=1)
    brain = T.prepare(layer[:, :20] @ rng.standard_normal((20, 30)))
    before, after = T.prepare(layer), T.prepare(outlier)
    dg_before, dg_after = T.diagrams(before.distances), T.diagrams(after.distances)
    raw_before = T.diagrams(T.distances(layer) / np.median(T.distances(layer)))
    raw_after = T.diagrams(T.distances(outlier) / np.median(T.distances(outlier)))
    for dim in (0, 1):
        # The normalised diagrams move by at most 0.2 median distances (2-Wasserstein, L_2)...
        moved = T.wasserstein(dg_before[dim], dg_after[dim], 2, 2)
        assert moved < 0.2, (dim, moved)
        # ...where the unstandardised clouds' diagrams are swept away by the outlier column.
        raw = T.wasserstein(raw_before[dim], raw_after[dim], 2, 2)
        assert raw > 4 * moved, (dim, raw, moved)
    for name, m in T.MEASURES.items():  # and the geometry by at most 0.02
        assert abs(m.function(before, brain) - m.function(after, brain)) < 0.02, name


def test_values_against_their_null():
    null = np.array([0.1, 0.2, 0.0, 0.1, 0.6, 0.5])
    row = T.against_null("rsa", 0.5, null, "higher")
    z = (0.5 - null.mean()) / null.std(ddof=1)
    assert row["rsa_null_mean"] == pytest.approx(null.mean()) and row["rsa_z"] == pytest.approx(z)
    # Empirical, with the +1: two of six draws are at least as alike (0.6, and 0.5 itself).
    assert row["rsa_p"] == pytest.approx((1 + 2) / (1 + 6))
    low = T.against_null("procrustes", 0.5, [0.9, 0.8, 0.95, 0.85], "lower")
    assert low["procrustes_z"] < 0 and low["procrustes_p"] == pytest.approx(1 / 5)
    assert list(row) == T.null_columns("rsa")
    # No null (no story long enough to shift): the value, and NaN beside it.
    none = T.against_null("rsa", 0.5, [], "higher")
    assert none["rsa"] == 0.5 and all(math.isnan(none[c]) for c in T.null_columns("rsa")[1:])


def test_intrinsic_dimension_of_clouds_of_known_dimension():
    rng = np.random.default_rng(3)
    # Participation ratio: (sum l)^2 / sum l^2 of the principal variances, against numpy's SVD.
    x = rng.standard_normal((200, 6)) * [5, 4, 3, 1, 0.5, 0.1]
    cloud = T.prepare(x)
    var = np.linalg.svd(T.standardize(x), compute_uv=False) ** 2
    assert T.participation_ratio(cloud) == pytest.approx(var.sum() ** 2 / (var**2).sum())
    # Standardised columns of independent noise: all directions alike, a ratio near 6.
    assert T.participation_ratio(T.prepare(rng.standard_normal((2000, 6)))) > 5.8
    # TwoNN: the maximum-likelihood formula written out with scipy's neighbour search...
    from scipy.spatial import cKDTree

    pts = rng.uniform(size=(400, 3)) @ rng.standard_normal((3, 40))
    cloud = T.prepare(pts)
    dist, _ = cKDTree(T.standardize(pts)).query(T.standardize(pts), k=3)
    expected = (len(pts) - 1) / np.log(dist[:, 2] / dist[:, 1]).sum()
    assert T.twonn(cloud) == pytest.approx(expected, rel=1e-6)
    # ...which finds a 3-dimensional cube in 40 columns, and a circle in 50.
    assert 2.5 < T.twonn(cloud) < 3.5
    t = rng.uniform(0, 2 * np.pi, 400)
    circle = np.stack([np.cos(t), np.sin(t)], axis=1) @ rng.standard_normal((2, 50))
    assert 0.8 < T.twonn(T.prepare(circle)) < 1.3


def test_landmarks_fixed_seed():
    a = T.landmarks(500, 100, seed=4)
    assert len(a) == 100 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, T.landmarks(500, 100, seed=4))
    np.testing.assert_array_equal(T.landmarks(50, 100, seed=4), np.arange(50))


# --- registries -------------------------------------------------------------------------------


def test_schema_defaults_name_registered_measures_and_summaries(repo):
    import yaml

    schema = yaml.safe_load((repo / "workflow" / "schemas" / "config.schema.yaml").read_text())
    props = schema["properties"]["topology"]["properties"]
    assert set(props["measures"]["default"]) <= set(T.MEASURES)
    assert props["summaries"]["default"] == list(T.SUMMARIES)
    assert {m.closer for m in T.MEASURES.values()} <= {"higher", "lower"}
    settings = {"embedding": {"dimension": 4}, "metric": "euclidean", "summaries": []}
    with pytest.raises(BrainshapeError) as err:
        T.check_settings({**settings, "measures": ["rsa", "mutual_info"]}, "voxels")
    assert str(err.value) == (
        f"topology.measures lists ['mutual_info'], not known; use some of {sorted(T.MEASURES)}"
    )


def test_settings_whose_brain_clouds_cannot_carry_the_stimulus_are_refused():
    ok = {"embedding": {"dimension": 4}, "metric": "euclidean", "measures": [], "summaries": []}
    T.check_settings(ok, "roi_mean")
    with pytest.raises(BrainshapeError) as err:
        T.check_settings({**ok, "embedding": {"dimension": 1}}, "roi_mean")
    assert str(err.value) == (
        "topology.embedding.dimension is 1: with fmri.targets roi_mean each brain cloud would be "
        "one column (one number per volume), which has no geometry; set "
        "topology.embedding.dimension to 2 or more (default 4), or fmri.targets: voxels"
    )
    with pytest.raises(BrainshapeError, match="removes the response level the subjects share"):
        T.check_settings({**ok, "metric": "correlation"}, "roi_mean")
    T.check_settings({**ok, "metric": "correlation", "embedding": {"dimension": 1}}, "voxels")


# --- clouds on a shared time base and the stage functions --------------------------------------

STORY_TRS = (("alpha", 120), ("beta", 100))
EMBEDDING = {"dimension": 4, "lag_s": 2.0}
SETTINGS = {"metric": "euclidean", "components": None, "maxdim": 1, "backend": "giotto"}


def _fake_dataset(tmp_path, n_subjects=3, voxels=False):
    """Two stories; subjects' targets are noise. ROI means (4 targets) or voxels: per ROI x
    hemisphere 5 voxels, of which subject 1 lacks the last (a smaller mask)."""
    rng = np.random.default_rng(5)
    runs, words, features = {}, [], {}
    for story, n_trs in STORY_TRS:
        runs[story] = {"n_trs": n_trs, "trim_start": 2, "trim_end": 2, "tr": 2.0}
        onsets = np.arange(0.2, n_trs * 2.0 - 1, 0.5)
        words.append(
            pd.DataFrame(
                {"story": story, "word_index": np.arange(onsets.size), "onset": onsets,
                 "offset": onsets + 0.3}
            )
        )  # fmt: skip
        features[story] = rng.standard_normal((3, onsets.size, 8)).astype(np.float32)
    sites = [("AG", "L"), ("AG", "R"), ("STG", "L"), ("STG", "R")]
    dirs = []
    for s in range(1, n_subjects + 1):
        d = tmp_path / "fmri" / f"sub-{s:02d}"
        d.mkdir(parents=True)
        if voxels:
            rows = [(r, h, 10 * k + v, 0, 0) for k, (r, h) in enumerate(sites) for v in range(5)]
            rows = [row for row in rows if not (s == 1 and row[2] % 10 == 4)]
            targets = pd.DataFrame(rows, columns=["roi", "hemisphere", "i", "j", "k"])
            targets["n_voxels"] = 1
        else:
            targets = pd.DataFrame(sites, columns=["roi", "hemisphere"]).assign(n_voxels=10)
        targets.insert(0, "target", np.arange(len(targets)))
        for story, n_trs in STORY_TRS:
            np.save(d / f"{story}.npy", rng.standard_normal((n_trs - 4, len(targets))))
        targets.to_parquet(d / "targets.parquet")
        (d / "runs.json").write_text(json.dumps(runs))
        dirs.append(str(d))
    return dirs, pd.concat(words, ignore_index=True), features, runs


def test_time_base_and_roi_mean_clouds(tmp_path):
    dirs, words, features, _ = _fake_dataset(tmp_path)
    base = T.shared_time_base(dirs, delay_s=4.0, history_s=6.0)
    # Kept volumes start at 5 s (volume 2); the embedding reaches 6 s back: rows from 11 s.
    np.testing.assert_array_equal(base.brain_rows("alpha")[:2], [3, 4])
    assert base.n_points() == (116 - 3) + (96 - 3)
    np.testing.assert_allclose(base.model_times("alpha")[0], 11.0 - 4.0)
    brain = T.brain_clouds(dict(zip(["01", "02", "03"], dirs, strict=True)), base,
                           embedding=EMBEDDING)  # fmt: skip
    assert set(brain) == {("group", r, h) for r in ("AG", "STG") for h in ("L", "R")}
    mean = np.mean([np.load(f"{d}/alpha.npy")[:, 2] for d in dirs], axis=0)  # STG L
    cloud = brain[("group", "STG", "L")]
    assert cloud.shape == (base.n_points(), 4)
    # Each point: the subjects' mean now and 2, 4, 6 s (one volume each) earlier.
    np.testing.assert_allclose(cloud[0], mean[[3, 2, 1, 0]])
    np.testing.assert_allclose(cloud[5], mean[[8, 7, 6, 5]])
    per = T.brain_clouds({"02": dirs[1]}, base, embedding=EMBEDDING, per_subject=True)
    np.testing.assert_allclose(
        per[("02", "AG", "R")][0], np.load(f"{dirs[1]}/alpha.npy")[[3, 2, 1, 0], 1]
    )
    resamplers = T.landmark_resamplers(words, base, np.arange(base.n_points()), window=3)
    layer = T.layer_cloud(features, resamplers, 1)
    assert layer.shape == (base.n_points(), 8)


def test_voxel_group_cloud_is_the_mean_of_the_voxels_every_subject_has(tmp_path):
    dirs, *_ = _fake_dataset(tmp_path, voxels=True)
    base = T.shared_time_base(dirs, delay_s=4.0)
    subjects = dict(zip(["01", "02", "03"], dirs, strict=True))
    brain = T.brain_clouds(subjects, base, embedding=EMBEDDING, per_subject=True)
    group = brain[("group", "AG", "R")]
    assert group.shape == (base.n_points(), 4)  # subject 01 lacks the fifth voxel
    # AG R is the second site: subject 01's columns 4-7, the others' 5-8 (same voxels).
    cols = {dirs[0]: [4, 5, 6, 7], dirs[1]: [5, 6, 7, 8], dirs[2]: [5, 6, 7, 8]}
    rows = base.brain_rows("alpha")
    expected = np.mean([np.load(f"{d}/alpha.npy")[rows][:, c] for d, c in cols.items()], axis=0)
    np.testing.assert_allclose(group[: rows.size], expected)
    assert brain[("02", "AG", "R")].shape[1] == 5 and brain[("01", "AG", "R")].shape[1] == 4


def test_time_base_refusals(tmp_path):
    dirs, *_ = _fake_dataset(tmp_path)
    runs = json.loads((tmp_path / "fmri" / "sub-02" / "runs.json").read_text())
    runs["beta"]["trim_end"] = 3
    (tmp_path / "fmri" / "sub-02" / "runs.json").write_text(json.dumps(runs))
    # Subjects whose runs differ (other stories, lengths or trimming) are left out of the group
    # clouds: the time base is the runs most subjects share.
    base = T.shared_time_base(dirs, delay_s=4.0)
    assert dict(base.runs) == read_runs(dirs[0])
    assert T.base_members(dirs, base) == [d for d in dirs if not str(d).endswith("sub-02")]
    with pytest.raises(
        BrainshapeError, match="lower topology.embedding.dimension, lag_s or delay_s"
    ):
        T.shared_time_base(dirs[:1], delay_s=4.0, history_s=400.0)


def _stage(tmp_path, dirs, words, features, measures=("rsa", "cka_debiased", "procrustes")):
    time_base = tmp_path / "timebase.json"
    T.write_time_base(dirs, time_base, delay_s=4.0, history_s=6.0, max_points=80, seed=0)
    T.compute_brain(dirs, time_base, tmp_path / "brain", embedding=EMBEDDING, per_subject=False,
                    **SETTINGS)  # fmt: skip
    T.compute_layers(features, words, time_base, tmp_path / "layers", **SETTINGS)
    return T.pair_variant(
        tmp_path / "layers", tmp_path / "brain", features, words, time_base,
        orders=[{"q": 1, "p": math.inf}, {"q": 2, "p": 2}], metric="euclidean", components=None,
        measures=list(measures), summaries=list(T.SUMMARIES), null=NULL,
    )  # fmt: skip


#: A small null for the stage's tests (the stories are 190 and 230 s long).
NULL = T.NullSettings(draws=20, min_story_taus=10)


def test_stage_end_to_end(tmp_path):
    dirs, words, features, _ = _fake_dataset(tmp_path)
    table = _stage(tmp_path, dirs, words, features)
    assert len(table) == 3 * 4
    wanted = ["wasserstein_q1_pinf_h0", "wasserstein_q2_p2_h1", "layer_entropy_h1"]
    wanted += ["brain_betti_peak_h0", "cka_debiased_z", "procrustes_p", "rsa_null_sd"]
    wanted += ["layer_participation_ratio", "layer_twonn", "layer_tau_s", "brain_tau_s"]
    for col in wanted:
        assert table[col].notna().all(), col
    assert not [c for c in table.columns if c.startswith("wasserstein") and "null" in c]
    # The stored diagrams are those of the prepared clouds, and the Wasserstein columns theirs.
    base, index = T.read_time_base(tmp_path / "timebase.json")
    ldgm, _ = T.load_diagrams(tmp_path / "layers" / "layer-1.npz")
    bdgm, extra = T.load_diagrams(tmp_path / "brain" / "group_STG_R.npz")
    row = table[(table.layer == 1) & (table.roi == "STG") & (table.hemisphere == "R")].iloc[0]
    ref = gudhi.wasserstein.wasserstein_distance(ldgm[1], bdgm[1], order=2, internal_p=2)
    assert abs(row["wasserstein_q2_p2_h1"] - ref) < 1e-9
    resamplers = T.landmark_resamplers(words, base, np.arange(base.n_points()), window=3)
    layer = T.prepare(T.layer_cloud(features, resamplers, 1)[index])
    np.testing.assert_allclose(T.diagrams(layer.distances)[1], ldgm[1], atol=1e-9)
    series = extra["series"].astype(np.float64)
    assert series.shape == (base.n_points(), 4)
    # The null is made for the slower of the clouds: every layer of the variant and the brain.
    whole = T.time_base_resamplers(words, base, window=3)
    taus = [T.autocorrelation_time(_parts(T.layer_cloud(features, whole, k), base), 2.0)
            for k in range(3)]  # fmt: skip
    np.testing.assert_allclose(table[table.roi == "STG"].groupby("layer")["layer_tau_s"].first(),
                               taus)  # fmt: skip
    brain_tau = T.autocorrelation_time(_parts(series, base), 2.0)
    assert row["brain_tau_s"] == pytest.approx(brain_tau)
    plan = T.plan_null(base, index, max(*taus, brain_tau), NULL)
    assert plan.scheme == "shifts" and plan.rows.shape == (20, index.size)
    assert (row["null_scheme"], row["null_draws"], row["null_stories"]) == ("shifts", 20, 2)
    assert row["null_min_shift_s"] == pytest.approx(max(30.0, 3 * max(*taus, brain_tau)))
    # The geometry and its null: the measure against the brain cloud at each draw's rows.
    for name, m in T.MEASURES.items():
        if name not in table.columns:
            continue
        values = np.array([m.function(layer, T.prepare(series[r])) for r in [index, *plan.rows]])
        assert row[name] == pytest.approx(values[0], abs=1e-9)
        assert row[f"{name}_null_mean"] == pytest.approx(np.mean(values[1:]), abs=1e-9)
        assert row[f"{name}_null_sd"] == pytest.approx(np.std(values[1:], ddof=1), abs=1e-9)
        alike = values[1:] >= values[0] if m.closer == "higher" else values[1:] <= values[0]
        assert row[f"{name}_p"] == pytest.approx((1 + alike.sum()) / 21)


def _parts(series, base):
    """A time-base series cut into its stories."""
    sizes = [base.brain_rows(s).size for s in base.stories()]
    return np.split(series, np.cumsum(sizes)[:-1])


def test_every_feature_is_measured_again_at_another_landmark_draw(tmp_path):
    dirs, words, features, _ = _fake_dataset(tmp_path)
    time_base = tmp_path / "timebase.json"
    T.write_time_base(dirs, time_base, delay_s=4.0, history_s=6.0, max_points=80, seed=0,
                      stability_seeds=1)  # fmt: skip
    (other,) = T.timebase.read_stability(time_base)
    base, index = T.read_time_base(time_base)
    np.testing.assert_array_equal(other, T.landmarks(base.n_points(), 80, seed=1))
    T.compute_brain(dirs, time_base, tmp_path / "brain", embedding=EMBEDDING, per_subject=False,
                    **SETTINGS)  # fmt: skip
    T.compute_layers(features, words, time_base, tmp_path / "layers", **SETTINGS)
    table = T.pair_variant(
        tmp_path / "layers", tmp_path / "brain", features, words, time_base, orders=[],
        metric="euclidean", components=None, measures=["rsa"], summaries=["entropy"], null=NULL,
    )  # fmt: skip
    row = table[(table.layer == 1) & (table.roi == "AG") & (table.hemisphere == "L")].iloc[0]
    _, extra = T.load_diagrams(tmp_path / "brain" / "group_AG_L.npz")
    series = extra["series"].astype(np.float64)
    resamplers = T.landmark_resamplers(words, base, np.arange(base.n_points()), window=3)
    whole = T.layer_cloud(features, resamplers, 1)
    layers = [T.prepare(whole[i]) for i in (index, other)]
    rsa = [T.rsa(c, T.prepare(series[i])) for c, i in zip(layers, (index, other), strict=True)]
    assert row["rsa_landmark_sd"] == pytest.approx(np.std(rsa, ddof=1), abs=1e-12)
    entropy = [T.persistent_entropy(T.diagrams(c.distances)[1]) for c in layers]
    assert row["layer_entropy_h1_landmark_sd"] == pytest.approx(np.std(entropy, ddof=1))
    ratio = [T.participation_ratio(c) for c in layers]
    assert row["layer_participation_ratio_landmark_sd"] == pytest.approx(np.std(ratio, ddof=1))


def test_a_geometry_measure_and_a_summary_added_through_the_registries_alone(tmp_path, monkeypatch):
    def distance_ratio(layer, brain):
        return float(np.mean(layer.distances) / np.mean(brain.distances))

    monkeypatch.setitem(T.MEASURES, "ratio", T.Measure(distance_ratio, "lower", "toy"))
    monkeypatch.setitem(T.SUMMARIES, "bars_twice", lambda dgm: 2.0 * T.bar_count(dgm))
    settings = {"embedding": {"dimension": 4}, "metric": "euclidean"}
    T.check_settings({**settings, "measures": ["ratio"], "summaries": ["bars_twice"]}, "roi_mean")
    dirs, words, features, _ = _fake_dataset(tmp_path)
    table = _stage(tmp_path, dirs, words, features, measures=["ratio"])
    assert T.null_columns("ratio") == [c for c in table.columns if c.startswith("ratio")]
    assert (table["layer_bars_twice_h0"] == 2 * table["layer_count_h0"]).all()
    base, index = T.read_time_base(tmp_path / "timebase.json")
    _, extra = T.load_diagrams(tmp_path / "brain" / "group_AG_L.npz")
    resamplers = T.landmark_resamplers(words, base, np.arange(base.n_points()), window=3)
    layer = T.prepare(T.layer_cloud(features, resamplers, 2)[index])
    brain = T.prepare(extra["series"][index].astype(np.float64))
    row = table[(table.layer == 2) & (table.roi == "AG") & (table.hemisphere == "L")].iloc[0]
    assert row["ratio"] == pytest.approx(distance_ratio(layer, brain), abs=1e-9)


def test_layer_diagrams_do_not_read_the_brain_data_and_stale_landmarks_are_refused(tmp_path):
    dirs, words, features, runs = _fake_dataset(tmp_path)
    time_base = tmp_path / "timebase.json"
    kw = dict(delay_s=4.0, history_s=6.0, max_points=60)
    T.write_time_base(dirs, time_base, seed=0, **kw)
    T.compute_layers(features, words, time_base, tmp_path / "layers", **SETTINGS)
    before = (tmp_path / "layers" / "layer-2.npz").read_bytes()
    # Other BOLD data with the same runs: the layers' diagrams are the same, byte for byte.
    for d in dirs:
        for story in ("alpha", "beta"):
            np.save(f"{d}/{story}.npy", np.load(f"{d}/{story}.npy")[:, ::-1].copy())
    brain = dict(embedding=EMBEDDING, per_subject=False, **SETTINGS)
    T.compute_brain(dirs, time_base, tmp_path / "brain", **brain)
    T.compute_layers(features, words, time_base, tmp_path / "layers2", **SETTINGS)
    assert (tmp_path / "layers2" / "layer-2.npz").read_bytes() == before
    # Runs that changed under a time base computed before: refused, naming the file and fix.
    for d in dirs:
        changed = json.loads((Path(d) / "runs.json").read_text())
        changed["beta"]["trim_end"] = 3
        (Path(d) / "runs.json").write_text(json.dumps(changed))
    with pytest.raises(BrainshapeError) as err:
        T.compute_brain(dirs, time_base, tmp_path / "brain3", **brain)
    assert str(err.value) == (
        f"{time_base} no longer matches the subjects' runs (a replaced derivative with another "
        "length, or changed trimming?); delete it so that rule topology_timebase computes it "
        "again, with every layer's diagrams"
    )
    # Layer diagrams from other landmarks than the brain clouds' cannot be paired.
    for d in dirs:
        (Path(d) / "runs.json").write_text(json.dumps(runs))
    other = tmp_path / "other.json"
    T.write_time_base(dirs, other, seed=1, **kw)
    T.compute_layers(features, words, other, tmp_path / "layers4", **SETTINGS)
    with pytest.raises(BrainshapeError, match=r"layer-0.npz was computed at other landmark"):
        T.pair_variant(
            tmp_path / "layers4", tmp_path / "brain", features, words, time_base,
            orders=[{"q": 1, "p": math.inf}], metric="euclidean", components=None,
            measures=["rsa"], summaries=["count"], null=NULL,
        )  # fmt: skip


def test_the_workflow_refuses_such_settings_when_it_is_planned(repo):
    import yaml

    from brainshape import params
    from brainshape.checks import check_study
    from brainshape.config import load_registry_dict, validate
    from brainshape.sizing import JobSizing
    from brainshape.study import Study

    cfg = yaml.safe_load((repo / "config" / "demo.yaml").read_text())
    cfg["registry"] = str(repo / "config" / "models.demo.yaml")
    cfg["topology"]["embedding"] = {"dimension": 1}
    schemas = repo / "workflow" / "schemas"
    cfg = validate(cfg, schemas / "config.schema.yaml", "demo.yaml")
    study = Study(cfg, load_registry_dict(cfg["registry"], schemas / "models.schema.yaml"), "x")
    with pytest.raises(BrainshapeError, match="topology.embedding.dimension is 1: with fmri"):
        check_study(study, JobSizing(study))
    # Voxel targets have no embedding: the same setting is fine there.
    study.config["fmri"]["targets"] = "voxels"
    check_study(study, JobSizing(study))
    assert params.topology_timebase(study, "demo")["history_s"] == 0.0
    study.config["fmri"]["targets"] = "roi_mean"
    study.config["topology"]["embedding"] = {"dimension": 4, "lag_s": 2.0}
    assert params.topology_timebase(study, "demo")["history_s"] == 6.0
