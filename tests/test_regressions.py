"""Aggregate regressions: planted relation found, shuffled scores not, references matched."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict

from brainshape import regressions as R
from brainshape.errors import BrainshapeError

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


def test_planted_relation_is_found_and_only_there():
    scores, topo, families = synthetic()
    obs = R.observations(scores, topo, families, unit="layer")
    table = R.run_regressions(obs, SETS, n_permutations=1000, n_bootstrap=500, seed=1)
    regs = table.drop_duplicates(["roi", "hemisphere", "feature_set"]).set_index(
        ["roi", "hemisphere", "feature_set"]
    )
    assert len(regs) == len(ROIS) * len(SETS)
    hit = regs.loc[("STG", "L", "shape")]
    assert hit["cv_r2"] > 0.8
    assert hit["q_value"] < 0.01 and hit["p_value"] == pytest.approx(1 / 1001)
    others = regs.drop(index=("STG", "L", "shape"))
    assert (others["q_value"] > 0.05).all()
    row = table[(table.roi == "STG") & (table.hemisphere == "L") & (table.feature_set == "shape")]
    a = row.set_index("feature").loc["feat_a"]
    # 0.3 score units per unit of feat_a: per standard deviation that is 0.3 * SD.
    sd = obs[(obs.roi == "STG") & (obs.hemisphere == "L")]["feat_a"].std(ddof=0)
    assert a["ci_low"] < 0.3 * sd < a["ci_high"] and a["ci_low"] > 0.2
    assert a["selection_freq"] == 1.0
    assert np.isnan(row.set_index("feature").loc["constant", "coef"])


def test_shuffled_scores_find_nothing():
    scores, topo, families = synthetic()
    rng = np.random.default_rng(7)
    scores["score"] = rng.permutation(scores["score"].to_numpy())
    obs = R.observations(scores, topo, families, unit="layer")
    table = R.run_regressions(obs, SETS, n_permutations=1000, n_bootstrap=200, seed=2)
    regs = table.drop_duplicates(["roi", "hemisphere", "feature_set"])
    assert (regs["q_value"] > 0.05).all()
    assert (regs["cv_r2"] < 0.05).all()


def test_cv_r2_equals_sklearn_with_leave_one_family_out():
    scores, topo, families = synthetic(n_families=4)
    obs = R.observations(scores, topo, families, unit="layer")
    part = obs[(obs.roi == "STG") & (obs.hemisphere == "L")]
    x = part[["feat_a", "feat_b", "noise_c"]].to_numpy()
    y, groups = part["score"].to_numpy(), part["family"].to_numpy()
    pred = cross_val_predict(LinearRegression(), x, y, groups=groups, cv=LeaveOneGroupOut())
    folds = R.group_folds(groups, n_folds=5)
    assert len(folds) == 4  # 4 families <= 5 folds: leave one family out
    assert R.cv_r2(x, y[:, None], folds)[0] == pytest.approx(r2_score(y, pred), abs=1e-10)


@pytest.mark.parametrize("scheme", R.PERMUTATIONS)
def test_permutation_p_value_equals_a_loop(scheme):
    scores, topo, families = synthetic(n_families=5, n_layers=3, planted=False)
    obs = R.observations(scores, topo, families, unit="layer")
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
    best = R.observations(scores, topo, families, unit="best_layer")
    assert len(best) == 3 * 2 * len(ROIS)
    mean = R.observations(scores, topo, families, unit="mean")
    assert "layer" not in mean.columns and len(mean) == len(best)
    csv = tmp_path / "published.csv"
    pd.DataFrame(
        {"model": ["m0", "m1", "m2"], "roi": "STG", "hemisphere": "L", "score": [0.1, 0.2, 0.3]}
    ).to_csv(csv, index=False)
    published = R.read_published(csv)
    obs = R.observations(
        published, topo, families, published=True, default_variants={m: "full" for m in families}
    )
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
    p = params.regressions(study, "demo")
    assert p["families"]["smollm2-135m"] == "smollm2" and p["published"] is False
    assert p["default_variants"]["tiny-gpt2"] == "fp32"
    assert "results/demo/regressions.parquet" in inputs(jobs, "all")
    missing = tmp_path / "scores.csv"
    study = _study(tmp_path, published_scores=str(missing))
    with pytest.raises(BrainshapeError, match=f"regressions.published_scores {missing} does not"):
        check_published_scores(study)
    missing.write_text("model,roi,hemisphere,score\n")
    assert str(missing) in inputs(planned(published_scores=str(missing)), "regressions")
    assert params.regressions(study, "demo")["published"] is True
    # With one family selected nothing can be cross-validated by family: not planned, with or
    # without published scores; the shape table still is.
    for published in (None, str(missing)):
        targets = inputs(planned(["smollm2-135m"], published_scores=published), "all")
        assert "results/demo/topology.parquet" in targets
        assert not [t for t in targets if "regressions" in t]
