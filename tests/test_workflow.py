"""The whole workflow on generated demo data: planted-signal recovery and reruns (bad input:
tests/test_faults.py)."""

import html
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import snakemake

from brainshape import demo

pytestmark = pytest.mark.workflow

MODELS = ("tiny-gpt2", "tiny-neox", "smollm2-135m")


@pytest.fixture(scope="session")
def scores(demo_run):
    return pd.read_parquet(demo_run / "results" / "demo" / "brainscores.parquet")


@pytest.fixture(scope="session")
def truth(demo_run):
    return json.loads((demo_run / "resources" / "demo" / "demo" / "ground_truth.json").read_text())


def group_mean(scores: pd.DataFrame) -> pd.DataFrame:
    keys = ["model", "variant", "layer", "roi", "hemisphere"]
    return scores.groupby(keys, as_index=False)["score"].mean()


def test_brainscores_table_schema(scores):
    assert list(scores.columns[:7]) == [
        "model",
        "variant",
        "layer",
        "subject",
        "roi",
        "hemisphere",
        "score",
    ]
    assert set(scores["model"]) == {"tiny-gpt2", "tiny-neox", "smollm2-135m"}
    assert set(scores["variant"]) == {"fp32", "untrained"}
    assert set(scores["subject"]) == {"01", "02", "03", "04"}
    assert set(scores["hemisphere"]) == {"L", "R"}
    assert scores["score"].between(-1, 1).all()
    # SmolLM2 has 30 layers: 31 hidden states including the embeddings.
    assert scores.loc[scores.model == "smollm2-135m", "layer"].max() == 30


def test_planted_layer_is_the_best(scores, truth):
    mean = group_mean(scores)
    for p in truth["planted"]:
        roi = mean[(mean.roi == p["roi"]) & (mean.hemisphere == p["hemisphere"])]
        best = roi.loc[roi["score"].idxmax()]
        # A shape relation drives the ROI by the layer's leading components with their own
        # variances, which neighbouring layers share: the best layer is the planted one or next
        # to it. A linear relation's whitened components single out the planted layer.
        off = 1 if p["relation"] == "shape" else 0
        assert (best.model, best.variant) == (p["model"], p["variant"]), (p, best)
        assert abs(best.layer - p["layer"]) <= off, (
            f"{p['roi']}-{p['hemisphere']}: best is {best.model}/{best.variant}/L{best.layer} "
            f"({best.score:.3f}), planted {p['model']}/{p['variant']}/L{p['layer']}"
        )


def test_planted_score_is_near_what_the_snr_allows(scores, truth):
    mean = group_mean(scores)
    for p in truth["planted"]:
        row = mean[
            (mean.roi == p["roi"])
            & (mean.hemisphere == p["hemisphere"])
            & (mean.model == p["model"])
            & (mean.variant == p["variant"])
            & (mean.layer == p["layer"])
        ]
        got = float(row["score"].iloc[0])
        # expected_r_roi_mean_cleaned is the correlation the SNR allows once the confounds are
        # regressed out, as the fmri stage does: held-out prediction cannot beat it (beyond
        # sampling error), and a correctly specified model estimated from ~700 TRs comes close.
        ceiling = p["expected_r_roi_mean_cleaned"]
        assert ceiling - 0.15 < got < ceiling + 0.03, (p, got)
        assert got < p["expected_r_roi_mean"]


def test_rois_without_signal_score_near_zero(scores, truth):
    mean = group_mean(scores)
    for null in truth["null"]:
        roi = mean[(mean.roi == null["roi"]) & (mean.hemisphere == null["hemisphere"])]
        assert abs(roi["score"].mean()) < 0.05, null
        assert roi["score"].abs().max() < 0.25, null


#: Models the demo config runs without their untrained variant (config/demo.yaml, variants).
WITHOUT_TWIN = {"smollm2-135m"}


def test_untrained_scores_below_trained(scores, truth):
    mean = group_mean(scores)
    for p in truth["planted"]:
        sel = mean[
            (mean.roi == p["roi"])
            & (mean.hemisphere == p["hemisphere"])
            & (mean.model == p["model"])
            & (mean.layer == p["layer"])
        ]
        by_variant = sel.set_index("variant")["score"]
        if p["model"] in WITHOUT_TWIN:
            assert "untrained" not in by_variant, p
            continue
        assert by_variant["untrained"] < by_variant[p["variant"]] - 0.1, p


def test_table_has_ceiling_baselines_and_significance(scores, truth):
    for column in (
        "ceiling", "score_normalized", "p_value", "q_value", "score_word_rate",
        "excess_word_rate", "score_word_length_position", "excess_word_length_position",
        "score_untrained", "excess_untrained",
    ):  # fmt: skip
        assert column in scores.columns, column
    for p in truth["planted"]:
        best = scores[
            (scores.roi == p["roi"])
            & (scores.hemisphere == p["hemisphere"])
            & (scores.model == p["model"])
            & (scores.variant == p["variant"])
            & (scores.layer == p["layer"])
        ]
        assert (best["q_value"] < 0.05).all(), p
        if p["model"] in WITHOUT_TWIN:
            assert best["excess_untrained"].isna().all(), p
        else:
            assert (best["excess_untrained"] > 0.1).all(), p
        # The demo's signal is not word rate: the planted layer beats the trivial baselines (by
        # less with a shape relation, whose ROI mean is the layer's first component: the
        # direction of a layer that follows word rate most).
        margin = 0.1 if p["relation"] == "linear" else 0.0
        assert (best["excess_word_length_position"] > margin).all(), p
        # Subjects share the planted signal, so the ceiling is positive and bounds the score.
        assert (best["ceiling"] > 0.2).all(), p
        assert best["score_normalized"].mean() < 1.2, p
    for null in truth["null"]:
        rows = scores[(scores.roi == null["roi"]) & (scores.hemisphere == null["hemisphere"])]
        assert (rows["q_value"] < 0.05).mean() < 0.1, null


def test_report_has_a_figure_per_model(demo_run):
    html = (demo_run / "report.html").read_text(errors="replace")
    for model in ("tiny-gpt2", "tiny-neox", "smollm2-135m"):
        assert f"brainscores_{model}.png" in html
        assert (demo_run / "results" / "demo" / "plots" / f"brainscores_{model}.png").stat().st_size


def test_quality_control_runs_in_the_demo_flags_nothing_and_is_in_the_report(demo_run):
    table = pd.read_parquet(demo_run / "results" / "demo" / "qc.parquet")
    assert len(table) == 16  # four subjects, four stories
    assert (table["failed"] == "").all(), table[["subject", "story", "reason"]]
    assert (table["not_available"] == "").all() and (table["n_others"] == 3).all()
    html = (demo_run / "report.html").read_text(errors="replace")
    assert "Quality control" in html and "qc.png" in html and "qc.html" in html


def test_topology_table_pairs_every_layer_with_every_brain_cloud(demo_run, scores):
    results = demo_run / "results" / "demo"
    topo = pd.read_parquet(results / "topology.parquet")
    brains = pd.read_parquet(results / "topology" / "brain" / "clouds.parquet")
    layers = scores.drop_duplicates(["model", "variant", "layer"])
    assert len(topo) == len(layers) * len(brains)
    assert set(brains["subject"]) == {"group"} and set(brains["n_columns"]) == {4}
    pairs = topo[["roi", "hemisphere"]].drop_duplicates()
    assert len(pairs) == len(scores[["roi", "hemisphere"]].drop_duplicates())
    wanted = ["wasserstein_q1_pinf_h0", "wasserstein_q2_p2_h1", "rsa", "rsa_z", "cka_debiased_p"]
    for col in wanted:
        assert topo[col].notna().all(), col
    assert (results / "topology" / "layers" / "tiny-gpt2" / "fp32" / "layer-4.npz").is_file()


def test_the_planted_shape_is_found_at_its_layer_and_nowhere_else(demo_run, truth):
    # ROI-mean targets (the demo's): the group-average ROI mean, delay-embedded.
    topo = pd.read_parquet(demo_run / "results" / "demo" / "topology.parquet")
    shape = [p for p in truth["planted"] if p["relation"] == "shape"]
    assert shape
    nulls = {(n["roi"], n["hemisphere"]) for n in truth["null"]}
    for p in shape:
        rows = topo[(topo.model == p["model"]) & (topo.variant == p["variant"])]
        site = rows[(rows.roi == p["roi"]) & (rows.hemisphere == p["hemisphere"])]
        site = site.set_index("layer").sort_index()
        hits = []
        for measure in ("rsa", "cka_debiased"):
            best = int(site[measure].idxmax())
            assert abs(best - p["layer"]) <= 1, (measure, site[measure].round(3).tolist())
            assert site.loc[p["layer"], f"{measure}_p"] < 0.05, measure
            for key, part in rows.groupby(["roi", "hemisphere"]):
                if key in nulls and (part[f"{measure}_p"] < 0.05 / len(part)).any():
                    hits.append((key, measure))
        # 5 empty ROI x hemispheres x 2 measures at a family-wise 5% (Bonferroni over layers).
        assert len(hits) <= 2, hits


def test_regressions_run_and_appear_in_the_report(demo_run):
    results = demo_run / "results" / "demo"
    regs = pd.read_parquet(results / "regressions.parquet")
    per = regs.drop_duplicates(["stratum", "roi", "hemisphere", "feature_set"])
    assert set(per["feature_set"]) == {"persistence", "geometry"}
    assert set(per["stratum"]) == {"trained", "untrained"}
    assert len(per) == 2 * 10 * 2  # 2 strata x 5 ROIs x 2 hemispheres x 2 feature sets
    # Leave one family out: three trained families; the untrained stratum lacks SmolLM2's twin.
    families = per.groupby("stratum")["n_families"].unique().to_dict()
    assert {k: list(v) for k, v in families.items()} == {"trained": [3], "untrained": [2]}
    for p, q in (("p_value", "q_value"), ("p_gain", "q_gain")):
        assert per[q].between(0, 1).all() and (per[q] >= per[p]).all()
    assert np.allclose(per["gain"], per["cv_r2_combined"] - per["cv_r2_nuisance"])
    contrasts = pd.read_parquet(results / "contrasts.parquet")
    assert set(contrasts["contrast"]) == {"full - untrained"}
    html = (demo_run / "report.html").read_text(errors="replace")
    names = ["regressions", "scaling", "contrasts"]
    names += [f"shape_{m}" for m in ("tiny-gpt2", "tiny-neox", "smollm2-135m")]
    for name in names:
        assert f"{name}.png" in html
        assert (results / "plots" / f"{name}.png").stat().st_size


def test_rerun_with_nothing_changed_runs_no_job(demo_run):
    proc = snakemake(demo_run, "-n", "--cores", "2")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def report_data(demo_run) -> tuple[dict, dict]:
    """The report's ``categories`` and ``results`` objects (the JSON its scripts hold)."""
    text = (demo_run / "report.html").read_text(errors="replace")
    found = {}
    for name in ("categories", "results"):
        script = text.index(f'<script id="{name}">')
        start = text.index(f"var {name} = ", script) + len(f"var {name} = ")
        found[name], _ = json.JSONDecoder().raw_decode(text[start:])
    return found["categories"], found["results"]


def test_report_opens_on_the_summary(demo_run):
    categories, results = report_data(demo_run)
    # The report's menu sorts categories by name: the summary comes first, then the maps.
    assert sorted(categories)[:2] == ["1. Summary", "2. Maps"]
    summary_items = {Path(p).name for p in categories["1. Summary"]["demo"]}
    assert summary_items == {"summary.html", "scaling.png", "contrasts.png", "regressions.png"}
    page = (demo_run / "results" / "demo" / "summary.html").read_text()
    assert "Leaderboard" in page and "What was run" in page
    maps = {Path(p).name for p in categories["2. Maps"]["demo"]}
    assert maps == {"ceiling_map.png"} | {f"maps_{m}.png" for m in MODELS}


def test_maps_show_the_planted_rois_and_not_the_empty_ones(demo_run, truth):
    """ROI-mean targets: every ROI x hemisphere is painted on its atlas voxels; the planted ones
    are found (q < 0.05) with the planted model's score, the empty ones in no variant."""
    root = demo_run / "resources" / "demo" / "demo"
    atlas = nib.load(root / demo.ATLAS_IMAGE)
    labels = np.asarray(atlas.dataobj)
    x = nib.affines.apply_affine(atlas.affine, np.indices(labels.shape).reshape(3, -1).T)[:, 0]
    side = np.where(x < 0, "L", "R").reshape(labels.shape)

    def region(site):
        return (labels == demo.ROIS.index(site["roi"]) + 1) & (side == site["hemisphere"])

    results = demo_run / "results" / "demo" / "maps"
    for p in truth["planted"]:
        q = np.asarray(nib.load(results / p["model"] / p["variant"] / "q.nii.gz").dataobj)
        score = np.asarray(nib.load(results / p["model"] / p["variant"] / "score.nii.gz").dataobj)
        assert (q[region(p)] < 0.05).all(), p
        assert np.ptp(score[region(p)]) == 0  # one value per ROI x hemisphere
        assert score[region(p)][0] > 0.7 * p["expected_r_roi_mean_cleaned"], p
    variants = sorted(p.parent for p in results.glob("*/*/group.parquet"))
    assert len(variants) == 5  # SmolLM2 runs without its untrained twin
    for folder in variants:
        q = np.asarray(nib.load(folder / "q.nii.gz").dataobj)
        for n in truth["null"]:
            assert (q[region(n)] >= 0.05).all(), (folder, n)
    ceiling = np.asarray(nib.load(results / "ceiling" / "ceiling.nii.gz").dataobj)
    for p in truth["planted"]:
        assert (ceiling[region(p)] > 0.7).all()


def test_the_terminal_summary_matches_the_report(demo_run, truth):
    from brainshape import cli, summary

    results = demo_run / "results" / "demo"
    tsv = (results / "leaderboard.tsv").read_text()
    info, board = summary.read_results(results)
    assert summary.board_tsv(board) == tsv
    page = (results / "summary.html").read_text()
    for row in summary.board_table(board).itertuples(index=False):
        cells = "".join(f"<td>{html.escape(str(c))}</td>\n      " for c in row).strip()
        assert cells in page, row
    assert cli.main(["summary", str(results), "--tsv"]) == 0
    # The planted ROI x hemispheres rank their planted model first.
    board = pd.read_csv(io.StringIO(tsv), sep="\t")
    firsts = board[board["rank"] == 1].set_index(["roi", "hemisphere"])
    for p in (p for p in truth["planted"] if p["relation"] == "linear"):
        best = firsts.loc[(p["roi"], p["hemisphere"])]
        assert (best["model"], best["variant"]) == (p["model"], p["variant"]), p
        assert pd.isna(best["note"])  # the ceiling is reliable: nothing masked
