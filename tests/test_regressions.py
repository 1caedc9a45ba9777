"""Aggregate regressions: planted relation found, shuffled scores not, references matched."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict

from brainshape import analysis
from brainshape import regressions as R
from brainshape import topology as T
from brainshape.errors import BrainshapeError
from brainshape.models import quantized_kinds
from brainshape.regressions import variants as contrast_pairs
from brainshape.threads import limit_threads

ROIS = [("STG", "L"), ("STG", "R"), ("IFG", "L")]


def synthetic(seed=0, n_families=8, n_layers=6, planted=True):
    """Topology and brainscore tables; in STG L the score is a linear function of feat_a."""
    rng = np.random.default_rng(seed)
    topo, scores = [], []
    for f in range(n_families):
        for variant in ("full", "untrained"):
            for layer in range(n_layers):
                for roi, hemi in ROIS:
                    a, b, c, d = rng.standard_normal(4)
                    topo.append(
                        dict(
                            model=f"m{f}",
                            variant=variant,
                            layer=layer,
                            subject="group",
                            roi=roi,
                            hemisphere=hemi,
                            feat_a=a,
                            feat_b=b,
                            noise_c=c,
                            noise_d=d,
                            constant=1.0,
                        )
                    )
                    signal = 0.3 * a if (planted and (roi, hemi) == ("STG", "L")) else 0.0
                    for sub in ("01", "02"):
                        scores.append(
                            dict(
                                model=f"m{f}",
                                variant=variant,
                                layer=layer,
                                subject=sub,
                                roi=roi,
                                hemisphere=hemi,
                                score=0.2 + signal + 0.05 * rng.standard_normal(),
                            )
                        )
    families = {f"m{f}": f"fam{f}" for f in range(n_families)}
    return pd.DataFrame(scores), pd.DataFrame(topo), families


SETS = {"shape": ["feat_*", "constant"], "noise": ["noise_*"]}
KINDS = {(f"m{f}", v): v for f in range(8) for v in ("full", "untrained")}
PARAMS = {f"m{f}": 10.0 ** (7 + f / 3) for f in range(8)}


def obs_of(scores, topo, families, **kw):
    return R.observations(scores, topo, families, params=PARAMS, kinds=KINDS, **kw)


def test_planted_relation_is_found_and_only_there():
    scores, topo, families = synthetic()
    obs = obs_of(scores, topo, families, unit="layer", untrained="pool")
    table = R.run_regressions(obs, SETS, n_permutations=1000, n_bootstrap=500, seed=1)
    keys = ["stratum", "roi", "hemisphere", "feature_set"]
    regs = table.drop_duplicates(keys).set_index(keys[1:])
    assert len(regs) == len(ROIS) * len(SETS) and set(regs["stratum"]) == {"all"}
    hit = regs.loc[("STG", "L", "shape")]
    assert hit["cv_r2"] > 0.8 and hit["gain"] > 0.8
    assert hit["q_value"] < 0.01 and hit["p_value"] == pytest.approx(1 / 1001)
    assert hit["q_gain"] < 0.01 and hit["p_gain"] == pytest.approx(1 / 1001)
    others = regs.drop(index=("STG", "L", "shape"))
    assert (others["q_value"] > 0.05).all() and (others["q_gain"] > 0.05).all()
    row = table[(table.roi == "STG") & (table.hemisphere == "L") & (table.feature_set == "shape")]
    a = row.set_index("feature").loc["feat_a"]
    # 0.3 score units per unit of feat_a: per standard deviation that is 0.3 * SD.
    sd = obs[(obs.roi == "STG") & (obs.hemisphere == "L")]["feat_a"].std(ddof=0)
    assert a["ci_low"] < 0.3 * sd < a["ci_high"] and a["ci_low"] > 0.2
    assert a["stability"] == 1.0
    assert np.isnan(row.set_index("feature").loc["constant", "coef"])


def test_shuffled_scores_find_nothing():
    scores, topo, families = synthetic()
    rng = np.random.default_rng(7)
    scores["score"] = rng.permutation(scores["score"].to_numpy())
    obs = obs_of(scores, topo, families, unit="layer", untrained="pool")
    table = R.run_regressions(obs, SETS, n_permutations=1000, n_bootstrap=200, seed=2)
    regs = table.drop_duplicates(["stratum", "roi", "hemisphere", "feature_set"])
    assert (regs["q_value"] > 0.05).all() and (regs["q_gain"] > 0.05).all()
    assert (regs["cv_r2"] < 0.05).all()


def test_cv_r2_equals_sklearn_with_leave_one_family_out():
    scores, topo, families = synthetic(n_families=4)
    obs = obs_of(scores, topo, families, unit="layer", untrained="pool")
    part = obs[(obs.roi == "STG") & (obs.hemisphere == "L")]
    x = part[["feat_a", "feat_b", "noise_c"]].to_numpy()
    y, groups = part["score"].to_numpy(), part["family"].to_numpy()
    pred = cross_val_predict(LinearRegression(), x, y, groups=groups, cv=LeaveOneGroupOut())
    folds = R.group_folds(groups, n_folds=5)
    assert len(folds) == 4  # 4 families <= 5 folds: leave one family out
    assert R.cv_r2(x, y[:, None], folds)[0] == pytest.approx(r2_score(y, pred), abs=1e-10)


def test_a_covariate_two_families_cannot_identify_is_not_extrapolated():
    # Three families, leave one out: a family-level covariate (one value per family) seen on two
    # families is a contrast between them, not a slope to carry to the third.
    rng = np.random.default_rng(0)
    groups = np.repeat(["a", "b", "c"], 10)
    size = np.repeat([1.0, 1.1, 3.0], 10)[:, None]
    y = rng.standard_normal(30) + np.repeat([0.0, 1.0, 0.5], 10)
    folds = R.group_folds(groups, 5)
    intercept_only = R.cv_r2(np.zeros((30, 0)), y[:, None], folds)
    assert R.cv_r2(size, y[:, None], folds, groups) == pytest.approx(intercept_only)
    assert R.cv_r2(size, y[:, None], folds)[0] < intercept_only[0] - 1  # extrapolated
    # With four families there are three to train on: the slope is estimated.
    groups4 = np.repeat(["a", "b", "c", "d"], 10)
    size4 = np.repeat([1.0, 1.1, 3.0, 2.0], 10)[:, None]
    y4 = np.concatenate([y, rng.standard_normal(10)])
    folds4 = R.group_folds(groups4, 5)
    assert R.cv_r2(size4, y4[:, None], folds4, groups4) == pytest.approx(
        R.cv_r2(size4, y4[:, None], folds4)
    )


@pytest.mark.parametrize("scheme", R.PERMUTATIONS)
def test_permutation_p_value_equals_a_loop(scheme):
    scores, topo, families = synthetic(n_families=5, n_layers=3, planted=False)
    obs = obs_of(scores, topo, families, unit="layer", untrained="pool")
    part = obs[(obs.roi == "IFG") & (obs.hemisphere == "L")]
    x, y = part[["feat_a", "noise_c"]].to_numpy(), part["score"].to_numpy()
    groups = part["family"].to_numpy()
    res = R.fit(
        x,
        y,
        groups,
        ["feat_a", "noise_c"],
        n_permutations=50,
        n_bootstrap=10,
        seed=3,
        permutation=scheme,
    )
    # The fit draws its orders first from its seeded generator: the same orders here.
    orders = R.permutation_orders(groups, 50, np.random.default_rng(3), scheme)
    logo = LeaveOneGroupOut()
    observed = r2_score(y, cross_val_predict(LinearRegression(), x, y, groups=groups, cv=logo))
    null = []
    for order in orders:
        yp = y[order]
        pred = cross_val_predict(LinearRegression(), x, yp, groups=groups, cv=logo)
        null.append(r2_score(yp, pred))
    expected = (1 + np.sum(np.array(null) >= observed - 1e-12)) / 51
    assert res.cv_r2 == pytest.approx(observed, abs=1e-10)
    assert res.p_value == pytest.approx(expected)


def test_permutation_orders_keep_families_and_refuse_too_few():
    groups = np.array(["a", "b", "a", "c", "b", "a", "c", "c"])
    rng = np.random.default_rng(0)
    within = R.permutation_orders(groups, 200, rng, "within_family")
    free = R.permutation_orders(groups, 200, rng, "free")
    for order in within:
        assert (groups[order] == groups).all()  # every score stays in its family
        assert sorted(order) == list(range(8))
    assert len({tuple(o) for o in within}) > 50  # 3! * 2! * 3! = 72 orders exist
    assert all(sorted(o) == list(range(8)) for o in free)
    assert any((groups[o] != groups).any() for o in free)
    with pytest.raises(BrainshapeError) as err:
        R.permutation_orders(np.array(["a", "b", "b", "c"]), 10, rng, "within_family")
    assert str(err.value) == (
        "permutations within family can give only 2 distinct orders of the 4 observations "
        "(family sizes 1, 2, 1), too few for a p-value below 0.05; use regressions.unit: layer "
        "(more observations per family) or regressions.permutation: free"
    )
    with pytest.raises(BrainshapeError, match="regressions.permutation is 'shuffle'; use one of"):
        R.permutation_orders(groups, 10, rng, "shuffle")


def test_within_family_null_sees_only_within_family_effects():
    rng = np.random.default_rng(5)
    groups = np.repeat([f"f{k}" for k in range(8)], 12)
    idx = np.repeat(np.arange(8), 12)
    x_family, x_within = rng.standard_normal(8), 0.5 * rng.standard_normal(96)
    x = (x_family[idx] + x_within)[:, None]
    between = 0.5 * x_family[idx] + 0.3 * rng.standard_normal(96)
    within = 0.5 * x_within + rng.standard_normal(8)[idx] + 0.3 * rng.standard_normal(96)
    p = {}
    for name, y in (("between", between), ("within", within)):
        for scheme in R.PERMUTATIONS:
            res = R.fit(
                x, y, groups, ["x"], n_permutations=500, n_bootstrap=5, seed=1, permutation=scheme
            )
            p[name, scheme] = res.p_value
    assert p["between", "free"] < 0.01 and p["between", "within_family"] > 0.5
    assert p["within", "free"] < 0.05 and p["within", "within_family"] < 0.01


def test_both_nulls_hold_their_level_when_families_differ_by_chance():
    # Scores and features both vary by family, independently of each other.
    hits = dict.fromkeys(R.PERMUTATIONS, 0)
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        groups = np.repeat([f"f{k}" for k in range(8)], 12)
        idx = np.repeat(np.arange(8), 12)
        x = (rng.standard_normal(8)[idx] + 0.3 * rng.standard_normal(96))[:, None]
        y = rng.standard_normal(8)[idx] + 0.3 * rng.standard_normal(96)
        for scheme in R.PERMUTATIONS:
            res = R.fit(
                x,
                y,
                groups,
                ["x"],
                n_permutations=200,
                n_bootstrap=5,
                seed=seed,
                permutation=scheme,
            )
            hits[scheme] += res.p_value < 0.05
    assert max(hits.values()) <= 5, hits  # 2 expected at the 5% level


def test_group_folds_keep_families_together():
    groups = np.array(["a"] * 5 + ["b"] * 3 + ["c"] * 4 + ["d"] * 2 + ["e"] * 2 + ["f"] * 1)
    folds = R.group_folds(groups, n_folds=3)
    assert len(folds) == 3
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(groups)))
    for test in folds:
        for g in set(groups[test]):
            assert set(np.flatnonzero(groups == g)) <= set(test)
    with pytest.raises(BrainshapeError, match="needs at least 2 model families"):
        R.group_folds(np.array(["a", "a"]), 3)


def test_units_and_published_scores(tmp_path):
    scores, topo, families = synthetic(n_families=3, n_layers=4)
    best = obs_of(scores, topo, families, unit="best_layer")
    assert len(best) == 3 * 2 * len(ROIS)
    # Each subject's score at the layer the other subject chose, features of those layers.
    loso = analysis.best_layers(scores)
    one = loso[(loso.model == "m1") & (loso.variant == "full") & (loso.roi == "IFG")]
    row = best[(best.model == "m1") & (best.variant == "full") & (best.roi == "IFG")].iloc[0]
    assert row["score"] == pytest.approx(one["score"].mean())
    feats = topo[(topo.model == "m1") & (topo.variant == "full") & (topo.roi == "IFG")]
    chosen = feats.set_index("layer").loc[one["layer"], "feat_a"].mean()
    assert row["feat_a"] == pytest.approx(chosen)
    assert row["depth"] == pytest.approx(one["layer"].mean() / 3)  # layers 0 to 3
    mean = obs_of(scores, topo, families, unit="mean")
    assert "layer" not in mean.columns and len(mean) == len(best)
    assert (
        "depth" not in mean.columns
        and "nuisance_depth_s1" not in mean.columns
        and "nuisance_log_params" in mean.columns
    )
    csv = tmp_path / "published.csv"
    pd.DataFrame(
        {"model": ["m0", "m1", "m2"], "roi": "STG", "hemisphere": "L", "score": [0.1, 0.2, 0.3]}
    ).to_csv(csv, index=False)
    published = R.read_published(csv)
    defaults = {m: "full" for m in families}
    obs = obs_of(published, topo, families, published=True, default_variants=defaults)
    assert len(obs) == 3 and set(obs["variant"]) == {"full"}
    expected = topo[(topo.model == "m1") & (topo.variant == "full") & (topo.roi == "STG")]
    expected = expected[expected.hemisphere == "L"]["feat_a"].mean()
    assert obs.set_index("model").loc["m1", "feat_a"] == pytest.approx(expected)
    pd.DataFrame({"model": ["m0"], "region": ["STG"]}).to_csv(csv, index=False)
    with pytest.raises(
        BrainshapeError, match=r"lacks column\(s\) \['roi', 'hemisphere', 'score'\]"
    ):
        R.read_published(csv)
    with pytest.raises(BrainshapeError, match="regressions.feature_sets.geo"):
        R.feature_columns(obs, ["procrustes"], "geo")
    with pytest.raises(BrainshapeError, match=r"models \['m2'\] have no parameter count"):
        R.observations(scores, topo, families, params={"m0": 1e6, "m1": 1e6}, kinds=KINDS)


def test_nuisance_columns_and_strata():
    scores, topo, families = synthetic(n_families=3, n_layers=4)
    kinds = {**KINDS, ("m1", "untrained"): "bnb4"}  # one variant made a quantized twin
    obs = R.observations(scores, topo, families, params=PARAMS, kinds=kinds)
    assert set(obs["stratum"]) == {"trained", "untrained"}
    splines = [f"nuisance_depth_s{j}" for j in range(1, 9)]
    assert R.nuisance_columns(obs) == [
        *splines, "nuisance_log_params", "nuisance_kind_bnb4", "nuisance_kind_untrained",
    ]  # fmt: skip
    row = obs[(obs.model == "m2") & (obs.layer == 2)].iloc[0]
    assert row["depth"] == pytest.approx(2 / 3)  # layers 0 to 3
    # Cubic B-splines with fixed knots: with the intercept they span every cubic of depth.
    basis = np.column_stack([np.ones(101), R.depth_basis(np.linspace(0, 1, 101))])
    for power in (1, 2, 3):
        target = np.linspace(0, 1, 101) ** power
        fitted = basis @ np.linalg.lstsq(basis, target, rcond=None)[0]
        assert np.abs(fitted - target).max() < 1e-10
    np.testing.assert_allclose(row[splines].to_numpy(float), R.depth_basis(np.array([2 / 3]))[0])
    # The layers' intrinsic dimension, where the topology table has it (regressions.dimension).
    dims = topo.assign(layer_participation_ratio=topo["layer"] + 2.0, layer_twonn=3.0)
    with_dims = R.observations(scores, dims, families, params=PARAMS, kinds=kinds)
    row = with_dims[(with_dims.model == "m2") & (with_dims.layer == 2)].iloc[0]
    assert row["nuisance_log_participation_ratio"] == pytest.approx(np.log10(4.0))
    assert row["nuisance_twonn"] == 3.0
    off = R.observations(scores, dims, families, params=PARAMS, kinds=kinds, dimension=False)
    assert not [c for c in R.nuisance_columns(off) if "twonn" in c or "participation" in c]
    assert row["nuisance_log_params"] == pytest.approx(7 + 2 / 3)
    assert obs.loc[obs.model.eq("m1") & obs.variant.eq("untrained"), "stratum"].eq("trained").all()
    excluded = R.observations(
        scores, topo, families, params=PARAMS, kinds=KINDS, untrained="exclude"
    )
    assert set(excluded["variant"]) == {"full"} and set(excluded["stratum"]) == {"trained"}
    with pytest.raises(BrainshapeError, match="regressions.untrained is 'drop'; use one of"):
        R.observations(scores, topo, families, params=PARAMS, kinds=KINDS, untrained="drop")


def depth_and_size_study(seed, planted=0.0, n_families=8):
    """Scores that depend on relative depth and size only (plus a family level), and two shape
    features that track depth and size; ``planted`` adds a part of the score carried by a
    component of the first feature that neither depth nor size explains."""
    rng = np.random.default_rng(seed)
    topo, scores, params = [], [], {}
    for f in range(n_families):
        model = f"m{f}"
        params[model] = 10 ** rng.uniform(7, 10)
        n_layers, level = int(rng.integers(6, 25)), 0.03 * rng.standard_normal()
        for layer in range(n_layers + 1):
            depth, extra = layer / n_layers, rng.standard_normal()
            keys = dict(model=model, variant="full", layer=layer, roi="STG", hemisphere="L")
            topo.append(
                dict(keys, subject="group",
                     shape_depth=np.sin(np.pi * depth) + 0.2 * rng.standard_normal() + 0.5 * extra,
                     shape_size=np.log10(params[model]) + 0.3 * rng.standard_normal())
            )  # fmt: skip
            score = 0.2 * np.sin(np.pi * depth) + 0.03 * np.log10(params[model]) + level
            score += planted * extra + 0.02 * rng.standard_normal()
            scores.append(dict(keys, subject="01", score=score))
    families = {f"m{f}": f"fam{f}" for f in range(n_families)}
    kinds = {(m, "full"): "full" for m in families}
    obs = R.observations(pd.DataFrame(scores), pd.DataFrame(topo), families, params=params,
                         kinds=kinds)  # fmt: skip
    return obs


def test_shape_is_told_from_depth_and_size():
    gains = alone = 0
    for seed in range(100):
        obs = depth_and_size_study(seed)
        table = R.run_regressions(obs, {"shape": ["shape_*"]}, n_permutations=200,
                                  n_bootstrap=10, seed=seed)  # fmt: skip
        gains += table["p_gain"].iloc[0] < 0.05
        alone += table["p_value"].iloc[0] < 0.05
    print(f"of 100 studies: set alone significant in {alone}, gain over nuisance in {gains}")
    assert alone > 80  # without the nuisance model, depth and size pass for shape
    assert gains <= 9  # 5 expected at the 5% level; P(> 9) < 0.03 if exact
    obs = depth_and_size_study(1000, planted=0.03)
    table = R.run_regressions(obs, {"shape": ["shape_*"]}, n_permutations=1000, n_bootstrap=200)
    row = table.set_index("feature").loc["shape_depth"]
    assert row["q_gain"] < 0.01 and row["gain"] > 0.05
    assert row["stability"] == 1.0 and row["ci_low"] > 0


def depth_profile_study(seed, kind, n_families=8):
    """Scores that depend on depth, size and a family level only, and one feature unrelated to
    them beyond depth. ``peaked``: scores peak at 0.65 relative depth and the feature is that
    same profile of depth; ``smooth``: each family adds its own smooth curve over depth to the
    scores, and the feature is another smooth curve per family, unrelated to the first."""
    rng = np.random.default_rng(seed)
    topo, scores, params = [], [], {}
    for f in range(n_families):
        model = f"m{f}"
        params[model] = 10 ** rng.uniform(7, 10)
        n_layers, level = int(rng.integers(6, 25)), 0.03 * rng.standard_normal()
        (a, b), (pa, pb) = rng.standard_normal(2), rng.uniform(0, 2 * np.pi, 2)
        for layer in range(n_layers + 1):
            d = layer / n_layers
            peak = np.exp(-0.5 * ((d - 0.65) / 0.15) ** 2)
            score = 0.03 * np.log10(params[model]) + level
            if kind == "peaked":
                feature = peak + 0.02 * rng.standard_normal()
                score += 0.2 * peak + 0.02 * rng.standard_normal()
            else:
                feature = b * np.sin(2 * np.pi * d + pb) + 0.1 * rng.standard_normal()
                score += 0.2 * np.sin(np.pi * d) + 0.05 * a * np.sin(2 * np.pi * d + pa)
                score += 0.01 * rng.standard_normal()
            keys = dict(model=model, variant="full", layer=layer, roi="STG", hemisphere="L")
            topo.append(dict(keys, subject="group", shape_a=feature))
            scores.append(dict(keys, subject="01", score=score))
    families = {f"m{f}": f"fam{f}" for f in range(n_families)}
    kinds = {(m, "full"): "full" for m in families}
    return R.observations(pd.DataFrame(scores), pd.DataFrame(topo), families, params=params,
                          kinds=kinds)  # fmt: skip


def _cubic(obs):
    """The same observations with the former depth term: depth, its square and its cube."""
    obs = obs.drop(columns=[c for c in R.nuisance_columns(obs) if "depth" in c])
    for power in (1, 2, 3):
        obs[f"nuisance_depth{power}"] = obs["depth"] ** power
    return obs


def _gain_hits(studies, **kw) -> int:
    p = [
        R.run_regressions(
            obs, {"shape": ["shape_*"]}, n_permutations=200, n_bootstrap=2, seed=k, **kw
        )["p_gain"].iloc[0]
        for k, obs in enumerate(studies)
    ]
    return int(np.sum(np.array(p) < 0.05))  # fmt: skip


def test_a_depth_profile_peaking_inside_the_network_does_not_pass_for_shape():
    # The nuisance model's depth term must span a profile that peaks at 0.65 relative depth: a
    # feature that is that profile is depth, not shape. Tolerance: the 99th percentile of the
    # count a test rejecting at 1.5 times 5% would give. The former cubic fails it (98 of 100).
    n = 40
    studies = [depth_profile_study(seed, "peaked") for seed in range(n)]
    bound = binom.ppf(0.99, n, 1.5 * 0.05)
    with limit_threads(1):
        splines, cubic = _gain_hits(studies), _gain_hits([_cubic(o) for o in studies])
    print(f"gain at 5% in {n} studies: splines {splines}, cubic {cubic} (bound {bound:g})")
    assert splines <= bound < cubic


def test_smooth_family_residuals_are_permuted_within_depth_bins():
    # Residuals that follow a smooth curve of depth in each family are not exchangeable across
    # depth: exchanging them over the whole family made an unrelated smooth feature significant
    # too often; within depth bins it holds (tolerance as above).
    n = 150
    studies = [depth_profile_study(seed, "smooth") for seed in range(n)]
    bound = binom.ppf(0.99, n, 1.5 * 0.05)
    with limit_threads(1):
        bins, whole = _gain_hits(studies), _gain_hits(studies, depth_bins=1)
    print(f"gain at 5% in {n} studies: depth bins {bins}, whole families {whole} (bound {bound:g})")
    assert bins <= bound < whole


def _rank_clouds(rng, n, points=60):
    """Layer clouds of effective rank 2 to 128 (log-uniform) and their features against one
    brain cloud: persistence summaries, Wasserstein distances, intrinsic dimension."""
    brain = T.prepare(np.cumsum(rng.standard_normal((points, 4)), 0))
    bdgm = T.diagrams(brain.distances)
    rows = []
    for _ in range(n):
        rank = int(round(2 ** rng.uniform(1, 7)))
        x = rng.standard_normal((points, rank)) @ rng.standard_normal((rank, 256))
        cloud = T.prepare(x + 0.05 * x.std() * rng.standard_normal(x.shape))
        dgm = T.diagrams(cloud.distances)
        row = {"rank": rank, **{f"layer_{k}": f(cloud) for k, f in T.DIMENSIONS.items()}}
        for dim in (0, 1):
            summaries = T.diagram_summaries(dgm[dim], ["total_persistence", "entropy", "max"])
            row.update({f"layer_{k}_h{dim}": v for k, v in summaries.items()})
            row[f"wasserstein_q2_p2_h{dim}"] = T.wasserstein(dgm[dim], bdgm[dim], 2, 2)
        rows.append(row)
    return pd.DataFrame(rows)


def _rank_study(rng, clouds, n_families=8):
    """Layers drawn from ``clouds``; their brainscores depend on effective rank (and size and a
    family level) only."""
    topo, scores, params = [], [], {}
    for f in range(n_families):
        model = f"m{f}"
        params[model] = 10 ** rng.uniform(7, 10)
        level, n_layers = 0.03 * rng.standard_normal(), int(rng.integers(6, 16))
        pick = clouds.iloc[rng.choice(len(clouds), n_layers + 1, replace=False)]
        for layer, c in enumerate(pick.to_dict("records")):
            keys = dict(model=model, variant="full", layer=layer, roi="STG", hemisphere="L")
            topo.append(dict(keys, subject="group", **{k: v for k, v in c.items() if k != "rank"}))
            score = 0.05 * np.log2(c["rank"]) + 0.03 * np.log10(params[model]) + level
            scores.append(dict(keys, subject="01", score=score + 0.02 * rng.standard_normal()))
    families = {f"m{f}": f"fam{f}" for f in range(n_families)}
    kinds = {(m, "full"): "full" for m in families}
    return pd.DataFrame(scores), pd.DataFrame(topo), families, params, kinds


def test_scores_driven_by_dimension_give_persistence_and_wasserstein_no_gain():
    # Persistence summaries and Wasserstein distances of a layer grow with the dimension its
    # points fill; with the layers' intrinsic dimension in the nuisance model, scores that follow
    # effective rank alone give neither set a gain. Tolerance: the 99th percentile of the count
    # at 1.5 times 5% for persistence, at 2 times for the Wasserstein set (8.5% of 200 studies:
    # why it is not a default set). Without the dimension both pass for shape in every study.
    rng = np.random.default_rng(0)
    n, sets = 30, {"persistence": ["layer_total_*", "layer_entropy_*", "layer_max_*"],
                   "wasserstein": ["wasserstein_*"]}  # fmt: skip
    hits = {(s, d): 0 for s in sets for d in (True, False)}
    with limit_threads(1):
        clouds = _rank_clouds(rng, 150)
        for seed in range(n):
            scores, topo, families, params, kinds = _rank_study(rng, clouds)
            for dimension in (True, False):
                obs = R.observations(scores, topo, families, params=params, kinds=kinds,
                                     dimension=dimension)  # fmt: skip
                table = R.run_regressions(obs, sets, n_permutations=200, n_bootstrap=2, seed=seed)
                for name, p in table.groupby("feature_set")["p_gain"].first().items():
                    hits[(name, dimension)] += p < 0.05
    print(f"gain at 5% in {n} studies (set, dimension in the nuisance model): {hits}")
    bound = {"persistence": binom.ppf(0.99, n, 1.5 * 0.05), "wasserstein": binom.ppf(0.99, n, 0.1)}
    for name in sets:
        assert hits[(name, True)] <= bound[name] < hits[(name, False)], (name, hits)


def _depth_mix_study(rng, planted: str):
    """Four families of one 6-layer model and four of one 30-layer model; the score follows the
    feature only in the shallow (``planted`` shallow) or the deep families."""
    topo, scores, params = [], [], {}
    for f in range(8):
        model, deep = f"m{f}", f >= 4
        params[model] = 10 ** rng.uniform(7, 10)
        for layer in range((30 if deep else 6) + 1):
            feature = rng.standard_normal()
            effect = 0.1 * feature if deep == (planted == "deep") else 0.0
            keys = dict(model=model, variant="full", layer=layer, roi="STG", hemisphere="L")
            topo.append(dict(keys, subject="group", shape_a=feature))
            scores.append(dict(keys, subject="01", score=effect + 0.05 * rng.standard_normal()))
    families = {f"m{f}": f"fam{f}" for f in range(8)}
    kinds = {(m, "full"): "full" for m in families}
    return R.observations(pd.DataFrame(scores), pd.DataFrame(topo), families, params=params,
                          kinds=kinds, dimension=False)  # fmt: skip


def test_an_effect_in_shallow_families_counts_as_much_as_one_in_deep_families():
    # Each family counts once (regressions.weights: family): an effect planted in the four
    # shallow families only is recovered as strongly as one in the four deep families only
    # (ratio of mean coefficients within 0.75-1.33). Weighing every row alike, the deep
    # families' 124 rows outweigh the shallow families' 28 (a ratio of about 0.2).
    rng = np.random.default_rng(8)
    coef = {}
    for weights in ("family", "row"):
        for planted in ("shallow", "deep"):
            values = []
            for seed in range(10):
                obs = _depth_mix_study(rng, planted)
                table = R.run_regressions(obs, {"shape": ["shape_a"]}, n_permutations=20,
                                          n_bootstrap=10, seed=seed, weights=weights)  # fmt: skip
                values.append(table["coef"].iloc[0])
            coef[(weights, planted)] = float(np.mean(values))
    print("mean coefficient (weights, planted families):", coef)
    ratio = coef[("family", "shallow")] / coef[("family", "deep")]
    assert 0.75 < ratio < 1.33, coef
    assert coef[("row", "shallow")] / coef[("row", "deep")] < 0.5, coef


def test_jackknife_intervals_cover_at_thirteen_families():
    # 1,000 simulated studies of 13 families (4 to 59 layers each, family-specific slopes and
    # levels): the leave-one-family-out jackknife interval covers the slope in at least the
    # 1st percentile of a binomial at 95% (933 of 1,000); the percentile interval over family
    # bootstrap refits does not (about 91%).
    from brainshape.regressions import bootstrap as B

    rng = np.random.default_rng(0)
    covered = {"jackknife": 0, "percentile": 0}
    degenerate = 0
    with limit_threads(1):
        for _ in range(1000):
            rows = []
            for g in range(13):
                level, slope = rng.standard_normal(2) * [1.0, 0.6]
                for layer in range(n := int(rng.integers(4, 60))):
                    x = level + rng.standard_normal()
                    y = 0.3 * level + (0.3 + slope) * (x - level) + 0.2 * np.sin(np.pi * layer / n)
                    rows.append((g, layer / n, x, y + 0.5 * rng.standard_normal()))
            groups, depth, x, y = np.array(rows).T
            xn, xf, w = (
                np.column_stack([depth, depth**2]),
                ((x - x.mean()) / x.std())[:, None],
                np.ones(len(y)),
            )
            _, low, high, left = B.jackknife_intervals(xn, xf, y, groups, w, 0.95)
            covered["jackknife"] += low[0] <= 0.3 * x.std() <= high[0]
            boot, failed = B.family_bootstrap(xn, xf, y, groups, 199, rng, w)
            lo, hi = np.quantile(boot[:, 0], [0.025, 0.975])
            covered["percentile"] += lo <= 0.3 * x.std() <= hi
            degenerate += left + failed
    print(f"covered in 1,000 studies: {covered}; degenerate fits: {degenerate}")
    bound = binom.ppf(0.01, 1000, 0.95)
    assert covered["jackknife"] >= bound > covered["percentile"]
    assert degenerate == 0


def test_a_resample_that_cannot_identify_the_features_is_counted_not_fitted():
    from brainshape.regressions import bootstrap as B

    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(4), 5)
    xf = rng.standard_normal((20, 1))
    # The feature equals a nuisance column except in family 3: without family 3 it is not
    # identified beside the nuisance column.
    xn = xf.copy()
    xn[groups == 3, 0] = rng.standard_normal(5)
    y = xf[:, 0] + 0.1 * rng.standard_normal(20)
    weights = np.vstack([np.ones(20), (groups != 3).astype(float), (groups != 0).astype(float)])
    coef, ok = B.feature_coefficients(xn, xf, y, weights)
    assert ok.tolist() == [True, False, True] and np.isnan(coef[1]).all()
    # A nuisance column that only the left-out family had changes nothing.
    kind = (groups == 2).astype(float)[:, None]
    coef, ok = B.feature_coefficients(np.hstack([xn, kind]), xf, y, weights[2:])
    assert ok.all() and np.isfinite(coef).all()
    boot, failed = B.family_bootstrap(xn, xf, y, groups, 200, rng, np.ones(20))
    assert failed > 0 and len(boot) + failed == 200 and np.isfinite(boot).all()


def test_landmark_reliability_of_each_feature():
    rng = np.random.default_rng(5)
    table = pd.DataFrame({"a": rng.standard_normal(50), "rsa_z": rng.standard_normal(50)})
    table["a_landmark_sd"] = 0.5
    table["rsa_landmark_sd"], table["rsa_null_sd"] = 0.02, 0.1  # a z spread of 0.2
    assert R.landmark_reliability(table, "a") == pytest.approx(1 - 0.25 / table["a"].var(ddof=0))
    assert R.landmark_reliability(table, "rsa_z") == pytest.approx(
        1 - 0.04 / table["rsa_z"].var(ddof=0)
    )
    assert np.isnan(R.landmark_reliability(table.drop(columns="a_landmark_sd"), "a"))
    # The spreads are not features unless a set names them.
    assert R.feature_columns(table, ["a*"], "x") == ["a"]
    assert R.feature_columns(table, ["a", "a_landmark_sd"], "x") == ["a", "a_landmark_sd"]


def test_gain_p_value_equals_a_freedman_lane_loop():
    obs = depth_and_size_study(3, planted=0.01, n_families=5)
    x, xn = obs[["shape_depth", "shape_size"]].to_numpy(), obs[R.nuisance_columns(obs)].to_numpy()
    y, groups = obs["score"].to_numpy(), obs["family"].to_numpy()
    res = R.fit(x, y, groups, ["a", "b"], nuisance=xn, n_permutations=60, n_bootstrap=5, seed=4)
    logo = LeaveOneGroupOut()

    def gain(yy):
        cv = [cross_val_predict(LinearRegression(), d, yy, groups=groups, cv=logo)
              for d in (xn, np.column_stack([xn, x]))]  # fmt: skip
        return r2_score(yy, cv[1]) - r2_score(yy, cv[0])

    # The fit draws the scores' orders first, then the residuals' (family means exchanged
    # between families, deviations within them): the same draws here.
    rng = np.random.default_rng(4)
    R.permutation_orders(groups, 60, rng, "free")
    fitted = LinearRegression().fit(xn, y).predict(xn)
    permuted = R.permuted_residuals(y - fitted, groups, 60, rng, "free")
    null = [gain(fitted + permuted[:, b]) for b in range(60)]
    assert res.gain == pytest.approx(gain(y), abs=1e-9)
    assert res.p_gain == pytest.approx((1 + np.sum(np.array(null) >= gain(y) - 1e-12)) / 61)
    # Exchanged residuals keep each family's deviations and move its mean as a block.
    r = y - fitted
    for b in range(3):
        for g in np.unique(groups):
            rows = groups == g
            assert sorted(permuted[rows, b] - permuted[rows, b].mean()) == pytest.approx(
                sorted(r[rows] - r[rows].mean())
            )


def test_contrasts_recover_planted_differences():
    rng = np.random.default_rng(4)
    rows = []
    offsets = {"fp16": 0.0, "bnb4": -0.05, "untrained": -0.2}
    for variant, off in offsets.items():
        for layer in range(3):
            for sub in [f"{i:02d}" for i in range(12)]:
                for roi in ("STG", "AG"):
                    base = 0.3 if layer == 1 else 0.1
                    score = base + off + 0.01 * rng.standard_normal()
                    rows.append(("m", variant, layer, sub, roi, "L", score))
    scores = pd.DataFrame(
        rows, columns=["model", "variant", "layer", "subject", "roi", "hemisphere", "score"]
    )
    kinds = {("m", "fp16"): "full", ("m", "bnb4"): "bnb4", ("m", "untrained"): "untrained"}
    table = R.contrasts(scores, kinds, n_bootstrap=500)
    overall = table[table.roi == "all"].set_index("contrast")
    assert set(overall.index) == {"bnb4 - full", "full - untrained"}
    q = overall.loc["bnb4 - full"]
    # Subject noise: SD 0.01 per score, so the mean of 12 paired differences is within ~0.01.
    assert q["difference"] == pytest.approx(-0.05, abs=0.01)
    assert q["ci_low"] < q["difference"] < q["ci_high"] < 0
    t = overall.loc["full - untrained"]
    assert t["difference"] == pytest.approx(0.2, abs=0.01)
    assert 0 < t["ci_low"] < t["difference"] < t["ci_high"] and t["n_subjects"] == 12


def no_signal_scores(seed=0, n_subjects=10, n_layers=25):
    """Scores of two models x two variants without signal: noise around 0 at every layer."""
    rng = np.random.default_rng(seed)
    rows = [
        (m, v, layer, f"{s:02d}", roi, "L", 0.05 * rng.standard_normal())
        for m in ("a", "b") for v in ("full", "untrained") for layer in range(n_layers)
        for s in range(n_subjects) for roi in ("STG", "AG")
    ]  # fmt: skip
    columns = ["model", "variant", "layer", "subject", "roi", "hemisphere", "score"]
    return pd.DataFrame(rows, columns=columns)


def test_out_of_sample_best_layer_is_centred_on_zero_without_signal():
    means, maxima = [], []
    for seed in range(20):
        best = analysis.best_layers(no_signal_scores(seed))
        means.append(best["score"].mean())
        maxima.append(best["score_in_sample"].mean())
    se = 0.05 / np.sqrt(20 * 10 * 8)  # one score per subject and site, about independent
    print(f"out of sample {np.mean(means):+.4f}, in-sample maximum {np.mean(maxima):+.4f}")
    assert abs(np.mean(means)) < 4 * se
    assert np.mean(maxima) > 0.05  # the maximum of 25 noisy layers: about 2 SD above 0
    # Contrasts and the scaling plot use the out-of-sample scores.
    scores = no_signal_scores(1)
    best = analysis.best_layers(scores)
    kinds = {(m, v): v for m in ("a", "b") for v in ("full", "untrained")}
    table = R.contrasts(scores, kinds, n_bootstrap=200)
    per = best.pivot_table(index=["model", "subject", "roi"], columns="variant", values="score")
    diff = (per["full"] - per["untrained"]).groupby(["model", "subject"]).mean()
    overall = table[table.roi == "all"].set_index("model")["difference"]
    for model in ("a", "b"):
        assert overall[model] == pytest.approx(diff[model].mean(), abs=1e-12)
    ci = table[table.roi == "all"]
    assert ((ci["ci_low"] < 0) & (ci["ci_high"] > 0)).all()
    scaling = R.scaling_table(scores, {"a": 1e6, "b": 1e7}, kinds).set_index(["model", "variant"])
    means = best.groupby(["model", "variant"])["score"].mean()
    assert scaling["score"].to_dict() == pytest.approx(means.to_dict())


def test_held_out_choice_equals_a_loop():
    rng = np.random.default_rng(2)
    scores = rng.standard_normal((6, 9))
    counts = np.stack([np.bincount(rng.integers(0, 6, 6), minlength=6) for _ in range(40)])
    index, values = analysis.held_out_best(scores, counts)
    for b, c in enumerate(counts):
        for i in range(6):
            if c[i] == 0 or c[i] == c.sum():
                assert index[b, i] == -1 and np.isnan(values[b, i])
                continue
            others = [j for j in range(6) for _ in range(c[j]) if j != i]
            layer = int(np.argmax(scores[others].mean(axis=0)))
            assert index[b, i] == layer and values[b, i] == scores[i, layer]
    with pytest.raises(BrainshapeError, match="needs at least two subjects"):
        analysis.best_layers(no_signal_scores(n_subjects=1))


def test_contrast_labels_follow_the_registry_kinds():
    kinds = {("m", "full"): "full", **{("m", k): k for k in quantized_kinds()}}
    pairs = contrast_pairs._pairs([v for _, v in kinds], "m", kinds)
    labels = {c for _, _, c in pairs}
    assert labels == {f"{k} - full" for k in quantized_kinds()}


def _study(tmp_path, models="all", **regressions):
    from conftest import SCHEMAS

    from brainshape.config import load_registry_dict, validate
    from brainshape.study import Study

    cfg = _config(models, **regressions)
    cfg = validate(cfg, SCHEMAS / "config.schema.yaml", "demo.yaml")
    reg = load_registry_dict(cfg["registry"], SCHEMAS / "models.schema.yaml")
    return Study(cfg, reg, source="demo.yaml")


def _config(models="all", **regressions):
    import yaml
    from conftest import REPO

    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["registry"] = str(REPO / "config" / "models.demo.yaml")
    cfg["regressions"] = regressions
    cfg["models"] = models
    return cfg


def test_study_wires_published_scores(tmp_path):
    from conftest import dry_run, write_config

    from brainshape import params
    from brainshape.checks import check_published_scores

    def planned(models="all", **regressions):
        write_config(tmp_path / "work", _config(models, **regressions))
        return dry_run(tmp_path / "work")

    def inputs(jobs, rule):
        return [i for j in jobs if j["rule"] == rule for i in j["input"]]

    study = _study(tmp_path)
    jobs = planned()
    assert "results/demo/brainscores.parquet" in inputs(jobs, "regressions")
    p = params.regressions(study, "demo", {})
    assert p["families"]["smollm2-135m"] == "smollm2" and p["published"] is False
    assert p["default_variants"]["tiny-gpt2"] == "fp32"
    assert p["untrained"] == "separate" and p["registry"]["smollm2-135m"]["params"]
    assert "results/demo/regressions.parquet" in inputs(jobs, "all")
    assert "results/demo/plots/shape_tiny-neox.png" in inputs(jobs, "all")
    missing = tmp_path / "scores.csv"
    study = _study(tmp_path, published_scores=str(missing))
    with pytest.raises(BrainshapeError, match=f"regressions.published_scores {missing} does not"):
        check_published_scores(study)
    missing.write_text("model,roi,hemisphere,score\n")
    assert str(missing) in inputs(planned(published_scores=str(missing)), "regressions")
    assert params.regressions(study, "demo", {})["published"] is True
    # With one family selected nothing can be cross-validated by family: not planned, with or
    # without published scores; the shape table still is.
    for published in (None, str(missing)):
        targets = inputs(planned(["smollm2-135m"], published_scores=published), "all")
        assert "results/demo/topology.parquet" in targets
        assert not [t for t in targets if "regressions" in t]
