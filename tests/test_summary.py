"""The study summary (brainshape.summary): the noise ceiling's interval holds its level without
shared signal and finds it where it is planted; the leaderboard chooses layers out of sample and
its numbers equal a computation by hand; `brainshape summary` prints the same table."""

import html
import re

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from scipy import stats

from brainshape import cli, summary
from brainshape.ceilings import single_subject_ceiling


def loo_isc(x: np.ndarray) -> np.ndarray:
    """Each column's correlation with the mean of the other columns (subjects)."""
    k = x.shape[1]
    return np.array([np.corrcoef(x[:, i], np.delete(x, i, axis=1).mean(axis=1))[0, 1]
                     for i in range(k)])  # fmt: skip


def ceiling_table(iscs: np.ndarray, roi: str = "A", hemi: str = "L") -> pd.DataFrame:
    k = len(iscs)
    return pd.DataFrame({
        "subject": [f"{s + 1:02d}" for s in range(k)], "target": 0, "roi": roi,
        "hemisphere": hemi, "isc": iscs, "ceiling": single_subject_ceiling(iscs, k),
        "n_others": k - 1, "source": "subjects",
    })  # fmt: skip


def series(rng, n: int, k: int, shared: float, ar: float = 0.5) -> np.ndarray:
    """``k`` subjects' AR(1) series of ``n`` volumes sharing a signal of variance ``shared``."""

    def ar1(shape):
        x = rng.standard_normal(shape)
        for t in range(1, shape[0]):
            x[t] += ar * x[t - 1]
        return x

    return np.sqrt(shared) * ar1((n, 1)) + ar1((n, k))


@pytest.mark.parametrize("k", [4, 8])
def test_ceiling_is_not_called_reliable_without_shared_signal(k):
    rng = np.random.default_rng(k)
    draws = [loo_isc(series(rng, 200, k, shared=0.0)) for _ in range(600)]
    # One ROI per simulated data set: one call.
    table = pd.concat([ceiling_table(iscs, roi=f"r{n}") for n, iscs in enumerate(draws)])
    reliable = summary.ceiling_intervals(table)["reliable"].mean()
    # The t interval that takes the leave-one-out ISCs as independent:
    naive = np.mean([summary.mean_interval(iscs)[1] > 0 for iscs in draws])
    print(f"k = {k}: reliable {reliable:.3f}, naive interval {naive:.3f}")
    # The lower bound of a 95% interval: 2.5% expected; 600 data sets.
    assert reliable <= 0.045
    assert naive > 0.05


def test_a_shared_signal_gives_a_reliable_ceiling_whose_interval_holds_it():
    rng = np.random.default_rng(0)
    x = series(rng, 400, 6, shared=1.0, ar=0.0)
    row = summary.ceiling_intervals(ceiling_table(loo_isc(x))).iloc[0]
    assert row["reliable"] and row["reason"] == ""
    # Signal and noise of equal variance: a perfect model of the signal reaches r = sqrt(1/2).
    assert row["ceiling_low"] < np.sqrt(0.5) < row["ceiling_high"]
    assert row["ceiling_low"] <= row["ceiling"] <= row["ceiling_high"]


def test_an_unreliable_ceiling_says_why():
    row = summary.ceiling_intervals(ceiling_table(np.array([0.05, -0.02, 0.01]))).iloc[0]
    assert not row["reliable"]
    assert re.fullmatch(r"ceiling not reliably above 0: ISC 0\.01 \[-?[\d.]+, [\d.]+\] over 3 "
                        r"subjects", row["reason"])  # fmt: skip
    two = summary.ceiling_intervals(ceiling_table(np.array([0.6, 0.6]))).iloc[0]
    assert not two["reliable"] and "no interval with 2 subject(s)" in two["reason"]


# --- the leaderboard -----------------------------------------------------------------------------


def brainscores(rng) -> pd.DataFrame:
    """A brainscores table: 4 subjects, a model with a trained and an untrained variant, 4
    layers, two ROI x hemispheres, a baseline and a noise ceiling."""
    rows = []
    for variant, peak, top in (("fp32", 2, 0.5), ("untrained", 0, 0.3)):
        for sub in ("01", "02", "03", "04"):
            for roi, hemi in (("A", "L"), ("B", "R")):
                for layer in range(4):
                    score = top - 0.1 * abs(layer - peak) + rng.normal(0, 0.02)
                    rows.append({"model": "m", "variant": variant, "layer": layer,
                                 "subject": sub, "roi": roi, "hemisphere": hemi,
                                 "score": score, "n_targets": 1})  # fmt: skip
    table = pd.DataFrame(rows)
    base = {sub: 0.1 + 0.01 * n for n, sub in enumerate(("01", "02", "03", "04"))}
    table["score_word_rate"] = table["subject"].map(base)
    return table


def test_leaderboard_numbers_equal_a_computation_by_hand():
    rng = np.random.default_rng(1)
    scores = brainscores(rng)
    ceilings = summary.ceiling_intervals(pd.concat([
        ceiling_table(np.array([0.8, 0.82, 0.79, 0.81]), "A", "L"),
        ceiling_table(np.array([0.02, -0.03, 0.01, 0.0]), "B", "R"),
    ]))  # fmt: skip
    board = summary.leaderboard(scores, ceilings)
    row = board[(board.variant == "fp32") & (board.roi == "A")].iloc[0]
    site = scores[(scores.variant == "fp32") & (scores.roi == "A")]
    wide = site.pivot(index="subject", columns="layer", values="score").to_numpy()
    twin = scores[(scores.variant == "untrained") & (scores.roi == "A")]
    twin_wide = twin.pivot(index="subject", columns="layer", values="score").to_numpy()
    held, twin_held, layers = [], [], []
    for s in range(4):
        layer = int(np.delete(wide, s, axis=0).mean(axis=0).argmax())
        held.append(wide[s, layer])
        layers.append(layer)
        twin_held.append(twin_wide[s, int(np.delete(twin_wide, s, axis=0).mean(axis=0).argmax())])
    held, twin_held = np.array(held), np.array(twin_held)
    half = stats.t.ppf(0.975, 3) * held.std(ddof=1) / 2
    assert row["layer"] == 2 == max(set(layers), key=layers.count)
    assert row["score"] == pytest.approx(held.mean())
    assert (row["score_low"], row["score_high"]) == pytest.approx((held.mean() - half,
                                                                   held.mean() + half))  # fmt: skip
    diff = held - twin_held
    assert row["excess_untrained"] == pytest.approx(diff.mean())
    base = np.array([0.1, 0.11, 0.12, 0.13])
    assert row["excess_word_rate"] == pytest.approx((held - base).mean())
    ceiling = ceilings.set_index("roi").loc["A"]
    assert row["normalized"] == pytest.approx(row["score"] / ceiling["ceiling"])
    assert row["note"] == "" and row["rank"] == 1
    masked = board[board.roi == "B"]
    assert masked["normalized"].isna().all() and masked["note"].str.startswith(
        "ceiling not reliably above 0").all()  # fmt: skip
    # The untrained twin has no twin to be compared with.
    assert board[board.variant == "untrained"]["excess_untrained"].isna().all()


def test_a_single_subject_gets_a_summary_without_a_leaderboard():
    scores = brainscores(np.random.default_rng(2))
    one = scores[scores.subject == "01"]
    board = summary.leaderboard(one)
    assert board.empty
    assert summary.board_text(board) == summary.NO_LEADERBOARD + "\n"
    info = summary.overview(one, dataset="d")
    page = summary.summary_html(info, board)
    assert html.escape(summary.NO_LEADERBOARD) in page and "<table" not in page
    assert summary.board_tsv(board).startswith("model\tvariant\troi")


def test_the_terminal_prints_the_leaderboard_it_computes(tmp_path, capsys):
    folder = tmp_path / "results" / "study"
    folder.mkdir(parents=True)
    scores = brainscores(np.random.default_rng(3))
    scores.to_parquet(folder / summary.BRAINSCORES)
    pd.DataFrame({"story": ["a", "a", "b"]}).to_parquet(folder / summary.WORDS)
    assert cli.main(["summary", str(folder), "--tsv"]) == 0
    out, err = capsys.readouterr()
    board = summary.leaderboard(scores)
    assert out == summary.board_tsv(board)
    assert pd.read_csv(__import__("io").StringIO(out), sep="\t").shape == board.shape
    assert "4 subjects (01, 02, 03, 04), 2 stories (a, b)" in err
    assert cli.main(["summary", str(folder)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("dataset study: 4 subjects")
    assert summary.board_table(board).to_string(index=False) in text
    assert cli.main(["summary", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(
        f"brainshape: {tmp_path / summary.BRAINSCORES} does not exist; give the results folder"
    )


def test_the_summary_reads_the_files_the_rules_write():
    rules = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    for name in (summary.BRAINSCORES, summary.CEILING, summary.WORDS):
        assert f'"results/{{dataset}}/{name}"' in rules, name
    assert f'"results/{{dataset}}/{summary.FMRI}/sub-{{subject}}"' in rules


def test_the_summary_page_holds_the_table_and_the_figures(tmp_path):
    from brainshape import figures

    plt = figures.pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    figures.save(fig, tmp_path / "scaling.png")
    scores = brainscores(np.random.default_rng(4))
    board = summary.leaderboard(scores)
    info = summary.overview(scores, dataset="d", runs={"01": ["a"], "02": ["a", "b"]})
    page = summary.summary_html(
        info, board, notes=summary.notes("voxels", True),
        figures=summary.headline_figures({"scaling": [tmp_path / "scaling.png"], "contrasts": []},
                                         {"subjects": 4, "stories": 2}),
    )  # fmt: skip
    assert "<script" not in page and page.count("<img ") == 1
    assert "Scaling: brainscore against model size" in page
    assert "n = 4 subjects, 2 stories" in page and "1-2 per subject" in page
    for cell in summary.board_table(board)["score [95% CI]"]:
        assert f"<td>{cell}</td>" in page
    assert "every voxel's score at its best layer" in html.unescape(page)
    assert "not mapped as images" in summary.notes("voxels", False)[0]


def test_a_ceiling_from_repeats_alone_is_never_called_reliable():
    # Repeat ceilings are clipped at 0 per target (NaN where the repeats share no signal): their
    # mean is above 0 without signal too.
    table = pd.DataFrame({
        "subject": np.repeat(["01", "02", "03"], 4), "target": np.tile(range(4), 3), "roi": "A",
        "hemisphere": "L", "isc": np.nan,
        "ceiling": [0.3, np.nan, 0.2, np.nan, 0.25, 0.1, np.nan, np.nan, 0.2, np.nan, 0.3, 0.1],
        "n_others": 0, "source": np.where(np.isnan([0.3, np.nan, 0.2, np.nan, 0.25, 0.1, np.nan,
                                          np.nan, 0.2, np.nan, 0.3, 0.1]), "", "repeats"),
    })  # fmt: skip
    row = summary.ceiling_intervals(table).iloc[0]
    assert not row["reliable"] and "from repeats only, clipped at 0" in row["reason"]
    assert row["ceiling"] == pytest.approx(np.mean([0.5 / 4, 0.35 / 4, 0.6 / 4]))
