"""The study summary: what was run, and a leaderboard of the model variants.

One library function per piece, shared by the report's first page (rule ``summary``) and the
terminal (``brainshape summary results/<dataset>``), so that the two show the same numbers:

- :func:`overview`: datasets, subjects, stories, models, variants, ROIs and targets;
- :func:`ceiling_intervals`: per ROI x hemisphere, the noise ceiling with its interval over
  subjects, and whether it is reliably above zero (where it is not, a score divided by it is
  noise: the figures grey those panels and the leaderboard leaves the normalised score out);
- :func:`leaderboard`: per model variant and ROI x hemisphere, the best layer chosen out of
  sample, the score there with its interval over subjects, the score over the ceiling, and the
  excess over the untrained twin and over each baseline.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import stdtrit

from brainshape import analysis
from brainshape.ceilings import single_subject_ceiling
from brainshape.errors import BrainshapeError

#: Coverage of every interval of the summary.
LEVEL = 0.95

#: The tables of ``results/<dataset>/`` the summary reads (the file names the rules
#: ``brainscores``, ``ceiling``, ``words`` and ``fmri`` write; tests/test_summary.py checks them
#: against the rules).
BRAINSCORES = "brainscores.parquet"
CEILING = "ceiling.parquet"
WORDS = "words.parquet"
FMRI = "fmri"

_SITE = ["roi", "hemisphere"]


# --- intervals over subjects ------------------------------------------------------------------


def mean_interval(values: np.ndarray, inflation: float = 1.0) -> tuple[float, float, float, int]:
    """Mean, and the :data:`LEVEL` Student t interval of the mean, of the finite ``values`` (one
    per subject); ``inflation`` multiplies the standard error. NaN bounds for fewer than 2."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.nan, np.nan, np.nan, 0
    mean = float(v.mean())
    if v.size < 2:
        return mean, np.nan, np.nan, 1
    half = stdtrit(v.size - 1, 0.5 + LEVEL / 2) * v.std(ddof=1) / np.sqrt(v.size)
    return mean, mean - half * inflation, mean + half * inflation, int(v.size)


def loo_inflation(k: float) -> float:
    """How much wider the interval of a mean of leave-one-out ISCs must be than the naive one.

    Subject ``i``'s ISC correlates it with the mean of the other ``k - 1``; without shared
    signal it is ``sum_j c_ij / sqrt(k - 1)`` over the pairwise correlations ``c_ij``, so two
    subjects' ISCs share the term ``c_ij`` (correlation ``1 / (k - 1)``). The mean of the ``k``
    ISCs then has variance ``2 v / k`` (``v`` the variance of one ``c_ij``), while the naive
    ``s^2 / k`` expects ``(k - 2) / (k - 1) v / k``: the standard error is
    ``sqrt(2 (k - 1) / (k - 2))`` times the naive one (Chen et al. 2016, NeuroImage 142: 248,
    on leave-one-out ISCs not being independent). NaN for ``k < 3``."""
    return float(np.sqrt(2 * (k - 1) / (k - 2))) if k >= 3 else np.nan


def ceiling_intervals(ceiling: pd.DataFrame) -> pd.DataFrame:
    """Per ROI x hemisphere of a ceiling table (``ceiling.parquet``): the noise ceiling over
    subjects, its interval, and whether it is reliably above zero.

    Each subject's ISC is averaged over the ROI's targets; the interval of their mean is the
    Student t interval widened by :func:`loo_inflation`, and the ceiling and its bounds are
    those ISCs through the ceiling formula (:func:`brainshape.ceilings.single_subject_ceiling`;
    0 where the ISC is not above 0). Where the ceiling comes from repeats (no ISC), the interval
    is that of the subjects' mean ceiling (0 for their targets whose repeats share no signal),
    and it is never called reliable: each target's repeat ceiling is clipped at 0, so its mean is
    above 0 without signal too. ``reliable``: the interval's lower bound is above 0;
    ``reason`` says why not. Columns: ``roi``, ``hemisphere``, ``n_subjects``, ``isc``,
    ``isc_low``, ``isc_high``, ``ceiling``, ``ceiling_low``, ``ceiling_high``, ``reliable``,
    ``reason``.
    """
    ceiling = ceiling.copy()
    # Targets of a subject with ceilings from repeats whose repeats share no signal are NaN:
    # their ceiling is 0, not unknown.
    repeats = ceiling.groupby("subject")["source"].transform(lambda s: (s == "repeats").any())
    ceiling.loc[repeats & ceiling["isc"].isna(), "ceiling"] = ceiling["ceiling"].fillna(0.0)
    per = ceiling.groupby(["subject", *_SITE], sort=True).agg(
        isc=("isc", "mean"), ceiling=("ceiling", "mean"), n_others=("n_others", "mean")
    ).reset_index()  # fmt: skip
    rows = [_ceiling_row(roi, hemi, part) for (roi, hemi), part in per.groupby(_SITE, sort=True)]
    return pd.DataFrame(rows)


#: Columns of :func:`ceiling_intervals`.
CEILING_COLUMNS = [
    "roi", "hemisphere", "n_subjects", "isc", "isc_low", "isc_high", "ceiling", "ceiling_low",
    "ceiling_high", "reliable", "reason",
]  # fmt: skip


def _ceiling_of(isc: float, k: float) -> float:
    """The ceiling an ISC implies with ``k`` subjects: 0 where it is not above 0, NaN if NaN."""
    if not np.isfinite(isc):
        return np.nan
    return float(single_subject_ceiling(isc, k)) if isc > 0 else 0.0


def _ceiling_row(roi: str, hemi: str, part: pd.DataFrame) -> dict:
    isc = part["isc"].to_numpy(np.float64)
    row: dict = {"roi": roi, "hemisphere": hemi, "isc": np.nan, "isc_low": np.nan,
                 "isc_high": np.nan}  # fmt: skip
    if np.isfinite(isc).any():
        k = float(part.loc[np.isfinite(isc), "n_others"].mean()) + 1
        mean, low, high, n = mean_interval(isc, loo_inflation(k))
        row.update(isc=mean, isc_low=low, isc_high=high)
        bounds = [_ceiling_of(v, k) for v in (mean, low, high)]
        what = f"ISC {mean:.2f} [{low:.2f}, {high:.2f}]" if n >= 3 else (
            f"ISC {mean:.2f}, no interval with {n} subject(s) (it needs 3)")  # fmt: skip
    else:
        # From repeats only: each target's ceiling is clipped at 0, so their mean is above 0
        # even without signal, and no interval of it can tell signal from none.
        mean, low, high, n = mean_interval(part["ceiling"].to_numpy(np.float64))
        bounds = [mean, low, high]
        what = f"ceiling {mean:.2f} from repeats only, clipped at 0 per target"
    reliable = bool(np.isfinite(isc).any() and np.isfinite(bounds[1]) and bounds[1] > 0)
    row.update(
        n_subjects=n,
        ceiling=bounds[0],
        ceiling_low=bounds[1],
        ceiling_high=bounds[2],
        reliable=reliable,
        reason="" if reliable else f"ceiling not reliably above 0: {what} over {n} subjects",
    )
    return {c: row[c] for c in CEILING_COLUMNS}


# --- the leaderboard ----------------------------------------------------------------------------


def held_out(scores: pd.DataFrame) -> pd.DataFrame:
    """:func:`brainshape.analysis.best_layers` of every (model, variant, ROI x hemisphere) that
    at least two subjects have (out-of-sample choice needs one other subject), with the
    baseline scores (``score_<baseline>``) and the untrained twin's held-out score
    (``score_untrained``, at its own held-out layer) of the same subject beside each row."""
    sites = ["model", "variant", *_SITE]
    counts = scores.groupby(sites)["subject"].transform("nunique")
    best = analysis.best_layers(scores[counts >= 2]) if (counts >= 2).any() else pd.DataFrame(
        columns=["model", "variant", "subject", *_SITE, "layer", "score"])  # fmt: skip
    per_subject = ["subject", *_SITE]
    for column in [f"score_{name}" for name in analysis.baseline_names(scores)]:
        base = scores.groupby(per_subject, as_index=False)[column].first()
        best = best.merge(base, on=per_subject, how="left")
    twin = best.loc[best["variant"] == "untrained", ["model", *per_subject, "score"]]
    return best.merge(twin.rename(columns={"score": "score_untrained"}),
                      on=["model", *per_subject], how="left")  # fmt: skip


def _layer_text(layers: pd.Series) -> tuple[int, str]:
    """The layer chosen most often (ties: the lowest), and the range of choices."""
    counts = layers.value_counts()
    top = int(counts[counts == counts.max()].index.min())
    low, high = int(layers.min()), int(layers.max())
    return top, str(low) if low == high else f"{low}-{high}"


def leaderboard(scores: pd.DataFrame, ceilings: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per model variant and ROI x hemisphere of a brainscores table: its best layer, chosen out
    of sample, and how it scores there.

    ``layer`` is the layer chosen most often when each subject's layer is chosen on the other
    subjects (``layers`` the range of those choices); ``score`` the mean over subjects of each
    subject's score at its own choice, with its :data:`LEVEL` interval over subjects
    (``score_low``, ``score_high``). With ``ceilings`` (:func:`ceiling_intervals`): the ceiling
    and its interval, and ``normalized`` = ``score / ceiling`` where the ceiling is reliably
    above zero (NaN, with the reason in ``note``, where it is not). ``excess_untrained``: the
    mean paired difference from the untrained twin (each at its own held-out layer), and
    ``excess_<baseline>`` from each baseline, each with its interval. Rows are sorted by ROI,
    hemisphere and score (best first; ``rank`` within the ROI x hemisphere).
    """
    best = held_out(scores)
    baselines = analysis.baseline_names(scores)
    rows = []
    for key, part in best.groupby(["model", "variant", *_SITE], sort=True):
        layer, layers = _layer_text(part["layer"])
        score, low, high, n = mean_interval(part["score"])
        row = dict(zip(["model", "variant", *_SITE], key, strict=True))
        row.update(layer=layer, layers=layers, n_subjects=n, score=score, score_low=low,
                   score_high=high)  # fmt: skip
        for name, reference in _references(part, baselines):
            mean, lo, hi, _ = mean_interval(part["score"] - reference)
            row.update({f"excess_{name}": mean, f"excess_{name}_low": lo,
                        f"excess_{name}_high": hi})  # fmt: skip
        rows.append(row)
    board = pd.DataFrame(rows)
    if board.empty:
        # One subject: no layer can be chosen out of sample; the summary says so.
        return pd.DataFrame(columns=["model", "variant", *_SITE, "rank", "layer", "note"])
    excess = [
        f"excess_{n}{end}" for n in ["untrained", *baselines] for end in ("", "_low", "_high")
    ]
    board = board.reindex(columns=[c for c in board.columns if not c.startswith("excess_")]
                          + [c for c in excess if c in board.columns])  # fmt: skip
    board = _with_ceilings(board, ceilings)
    board = board.sort_values(["roi", "hemisphere", "score"], ascending=[True, True, False])
    board.insert(4, "rank", board.groupby(_SITE).cumcount() + 1)
    return board.reset_index(drop=True)


def _references(part: pd.DataFrame, baselines: Sequence[str]) -> list[tuple[str, pd.Series]]:
    """(name, score per subject) of what a variant's held-out scores are compared with."""
    out = [(name, part[f"score_{name}"]) for name in baselines]
    if part["variant"].iloc[0] != "untrained" and part["score_untrained"].notna().any():
        out.insert(0, ("untrained", part["score_untrained"]))
    return out


def _with_ceilings(board: pd.DataFrame, ceilings: pd.DataFrame | None) -> pd.DataFrame:
    if ceilings is None or ceilings.empty:
        return board.assign(note="")
    ceil = ceilings[[*_SITE, "ceiling", "ceiling_low", "ceiling_high", "reliable", "reason"]]
    board = board.merge(ceil, on=_SITE, how="left")
    reliable = board["reliable"].fillna(False).astype(bool)
    board.insert(board.columns.get_loc("ceiling_high") + 1, "normalized",
                 np.where(reliable, board["score"] / board["ceiling"], np.nan))  # fmt: skip
    note = board.pop("reason").fillna("no noise ceiling")
    board = board.drop(columns="reliable")
    board["note"] = np.where(reliable, "", note)
    return board


# --- what was run ---------------------------------------------------------------------------------


def overview(
    scores: pd.DataFrame,
    *,
    dataset: str,
    words: pd.DataFrame | None = None,
    runs: Mapping[str, Sequence[str]] | None = None,
) -> dict:
    """What was run on one dataset, from its brainscores table (subjects, models, variants and
    their layers, ROI x hemispheres, targets per subject and ROI x hemisphere), its words table
    (the stories) and each subject's stories (``runs``: subject -> stories)."""
    layers = scores.groupby(["model", "variant"])["layer"].nunique()
    models: dict[str, dict[str, int]] = {}
    for (model, variant), n in layers.items():
        models.setdefault(str(model), {})[str(variant)] = int(n)
    stories = list(dict.fromkeys(words["story"])) if words is not None else sorted(
        {s for heard in (runs or {}).values() for s in heard})  # fmt: skip
    per_subject = sorted({len(v) for v in (runs or {}).values()})
    sites = scores[_SITE].drop_duplicates().sort_values(_SITE)
    targets = scores.groupby(["subject", *_SITE])["n_targets"].first()
    return {
        "dataset": dataset,
        "subjects": sorted(scores["subject"].astype(str).unique()),
        "stories": stories,
        "stories_per_subject": [per_subject[0], per_subject[-1]] if per_subject else [],
        "models": models,
        "rois": [f"{r} {h}" for r, h in sites.itertuples(index=False)],
        "targets": [int(targets.min()), int(targets.max())] if len(targets) else [],
    }


def _span(values: Sequence[int]) -> str:
    return "" if not values else str(values[0]) if values[0] == values[-1] else (
        f"{values[0]}-{values[-1]}")  # fmt: skip


def overview_lines(info: Mapping) -> list[str]:
    """:func:`overview` as lines of text."""
    variants = sum(len(v) for v in info["models"].values())
    per = _span(info["stories_per_subject"])
    lines = [
        f"dataset {info['dataset']}: {len(info['subjects'])} subjects "
        f"({', '.join(info['subjects'])}), {len(info['stories'])} stories "
        f"({', '.join(info['stories'])}{f'; {per} per subject' if per else ''})",
        f"{len(info['models'])} models, {variants} model variants: "
        + "; ".join(
            f"{m} ({', '.join(v)}; {max(v.values())} hidden states)"
            for m, v in info["models"].items()
        ),  # fmt: skip
        f"{len(info['rois'])} ROI x hemispheres ({', '.join(info['rois'])}); targets per subject "
        f"and ROI x hemisphere: {_span(info['targets'])}",
    ]
    return lines


# --- rendering ------------------------------------------------------------------------------------


def _interval(mean: float, low: float, high: float) -> str:
    if not np.isfinite(mean):
        return ""
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{mean:.3f}"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def board_table(board: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard as the text the report and the terminal show: one row per model variant
    and ROI x hemisphere, numbers rounded, intervals in brackets."""
    out = pd.DataFrame({
        "ROI": board["roi"] + " " + board["hemisphere"],
        "rank": board["rank"].astype(str),
        "model": board["model"],
        "variant": board["variant"],
        "layer": [f"{a} ({b})" if str(a) != b else str(a)
                  for a, b in zip(board["layer"], board["layers"], strict=True)],
        "n": board["n_subjects"].astype(str),
        "score [95% CI]": [_interval(*v) for v in board[["score", "score_low", "score_high"]]
                           .to_numpy(np.float64)],
    })  # fmt: skip
    if "ceiling" in board:
        out["ceiling [95% CI]"] = [_interval(*v) for v in board[
            ["ceiling", "ceiling_low", "ceiling_high"]].to_numpy(np.float64)]  # fmt: skip
        out["score / ceiling"] = [f"{v:.2f}" if np.isfinite(v) else "masked"
                                  for v in board["normalized"]]  # fmt: skip
    for column in [c for c in board.columns if c.startswith("excess_") and c[-4:] not in
                   ("_low", "high")]:  # fmt: skip
        values = board[[column, f"{column}_low", f"{column}_high"]].to_numpy(np.float64)
        out[f"- {column[len('excess_') :]}"] = [_interval(*v) for v in values]
    return out


def board_notes(board: pd.DataFrame) -> list[str]:
    """Why a ROI x hemisphere's score / ceiling is masked, once per ROI x hemisphere."""
    notes = board.loc[board["note"].fillna("") != "", ["roi", "hemisphere", "note"]]
    return [f"{r} {h}: {n}" for r, h, n in notes.drop_duplicates(_SITE).itertuples(index=False)]


#: What stands for the leaderboard of a dataset with one subject.
NO_LEADERBOARD = (
    "No leaderboard: no ROI x hemisphere has scores of two subjects, and a best layer chosen out "
    "of sample needs the other subjects' scores."
)


def board_text(board: pd.DataFrame) -> str:
    """The leaderboard for a terminal: :func:`board_table`, then :func:`board_notes`."""
    if board.empty:
        return NO_LEADERBOARD + "\n"
    notes = "".join(f"masked {n}\n" for n in board_notes(board))
    return board_table(board).to_string(index=False) + "\n" + notes


def board_tsv(board: pd.DataFrame) -> str:
    """The leaderboard's numbers, tab-separated (every column of :func:`leaderboard`)."""
    return board.to_csv(sep="\t", index=False, float_format="%.6g")


def summary_text(info: Mapping, board: pd.DataFrame) -> str:
    """What ``brainshape summary`` prints: :func:`overview_lines`, then the leaderboard."""
    return "\n".join(overview_lines(info)) + "\n\n" + board_text(board)


_STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:80em;color:#222}
table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:2px 6px;
text-align:left;white-space:nowrap}th{background:#eee}img{max-width:100%}
.note{color:#555;font-size:0.9em}"""


def summary_html(
    info: Mapping,
    board: pd.DataFrame,
    *,
    notes: Sequence[str] = (),
    figures: Sequence[tuple[str, str | os.PathLike, str]] = (),
) -> str:
    """The report's first page: what was run (:func:`overview_lines`), ``notes`` (what is and is
    not mapped, ...), the leaderboard (:func:`board_table`) and the headline ``figures``
    (title, PNG path, caption), embedded. A standalone HTML page without scripts."""
    esc = html.escape
    parts = [
        f"<h1>Study summary: dataset {esc(info['dataset'])}</h1>",
        "<h2>What was run</h2>",
        "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in overview_lines(info)) + "</ul>",
    ]
    parts += [f"<p class='note'>{esc(n)}</p>" for n in notes]
    parts += ["<h2>Leaderboard</h2>", f"<p class='note'>{esc(LEADERBOARD_NOTE)}</p>"]
    if board.empty:
        parts.append(f"<p>{esc(NO_LEADERBOARD)}</p>")
    else:
        parts.append(board_table(board).to_html(index=False, escape=True, border=0))
    parts += [f"<p class='note'>masked {esc(n)}</p>" for n in board_notes(board)]
    for title, path, caption in figures:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        parts += [f"<h2>{esc(title)}</h2>", f"<p class='note'>{esc(caption)}</p>",
                  f"<img alt='{esc(title)}' src='data:image/png;base64,{data}'>"]  # fmt: skip
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>brainshape "
            f"summary: {esc(info['dataset'])}</title><style>{_STYLE}</style></head>\n<body>\n"
            f"{body}\n</body></html>\n")  # fmt: skip


#: What the leaderboard's columns mean (the page and the terminal say the same).
LEADERBOARD_NOTE = (
    "One row per model variant and ROI x hemisphere, best first within each ROI x hemisphere. "
    "layer: the layer chosen most often when each subject's best layer is chosen on the other "
    "subjects (out of sample; the range of those choices in brackets). score: the mean over "
    "subjects of each subject's held-out Pearson r at its own choice, with its 95% Student t "
    "interval over subjects (n). ceiling: the inter-subject noise ceiling with its 95% interval "
    "over subjects (leave-one-out ISCs, interval widened for their dependence); score / "
    "ceiling: masked where the ceiling is not reliably above 0 (note). - untrained, - <baseline>: "
    "the mean paired difference from the untrained twin (each at its own out-of-sample layer) "
    "and from each trivial-feature baseline, with 95% intervals over subjects."
)


#: The headline figures of the summary page (outputs of rule ``plot_regressions``): title and
#: what each shows.
HEADLINE = {
    "scaling": (
        "Scaling: brainscore against model size",
        "One point per model variant: the mean over subjects and ROI x hemispheres of each "
        "subject's score at the layer best on the other subjects; parameters on a log axis.",
    ),
    "contrasts": (
        "Quantisation and training: each variant against its twin",
        "Mean paired difference over subjects (each variant at its own out-of-sample best "
        "layer), averaged over ROI x hemispheres; bars: 95% bootstrap intervals over subjects "
        "that redo the layer choice in every draw.",
    ),
    "regressions": (
        "Shape regressions: brainscores explained by the shape of the representations",
        "Cross-validated R² of each feature set alone and its gain over the nuisance model "
        "(depth, size, variant kind); stars: q < 0.05 (permutations, Benjamini-Hochberg).",
    ),
}


def headline_figures(
    paths: Mapping[str, Sequence[str | os.PathLike]], counts: Mapping | None = None
) -> list[tuple[str, str | os.PathLike, str]]:
    """(title, path, caption) of each headline figure that exists (``paths``: name -> list of
    at most one PNG; empty where the regressions are not planned), its n in the caption."""
    from brainshape import figures

    n = figures.counts_text(counts)
    return [(HEADLINE[name][0], found[0], f"{HEADLINE[name][1]} {n}." if n else HEADLINE[name][1])
            for name, found in paths.items() if found]  # fmt: skip


def notes(targets: str, gridded: bool) -> list[str]:
    """What the maps of a dataset show, and what is not mapped (the summary says it)."""
    if not gridded:
        return [
            "Maps: not mapped as images. The responses are subject-native columns without a "
            "volume grid (as ds003020 ships them): maps/<model>/<variant>/subjects.parquet holds "
            "every column's score at its best layer with the response file's column "
            "(docs/outputs.md says how to draw them with pycortex)."
        ]
    if targets == "voxels":
        return [
            "Maps (category 2. Maps; NIfTI images under maps/): every voxel's score at its best "
            "layer chosen on the other subjects, per subject and as the group on the common "
            "grid, with the q-values of the group score and the score minus each baseline."
        ]
    return [
        "Maps (category 2. Maps; NIfTI images under maps/): ROI-mean targets, so each ROI x "
        "hemisphere is painted on its atlas voxels with its one value (set fmri.targets: voxels "
        "for voxel maps)."
    ]


# --- reading a results folder ------------------------------------------------------------------


def subject_stories(fmri_dirs: Sequence[str | os.PathLike]) -> dict[str, list[str]]:
    """Each subject's stories, from the ``runs.json`` of its fMRI folder."""
    out = {}
    for folder in fmri_dirs:
        path = Path(folder) / "runs.json"
        try:
            out[Path(folder).name.removeprefix("sub-")] = list(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise BrainshapeError(f"cannot read {path} ({error}); rerun the fmri stage") from None
    return out


def read_results(folder: str | os.PathLike) -> tuple[dict, pd.DataFrame]:
    """What ``brainshape summary FOLDER`` prints, from ``results/<dataset>/``: the overview and
    the leaderboard (with the noise ceiling where ``ceiling.parquet`` exists)."""
    folder = Path(folder)
    path = folder / BRAINSCORES
    if not path.is_file():
        raise BrainshapeError(
            f"{path} does not exist; give the results folder of a dataset (results/<dataset>) "
            "after its brainscores job ran (snakemake results/<dataset>/brainscores.parquet)"
        )
    scores = pd.read_parquet(path)
    ceiling = pd.read_parquet(folder / CEILING) if (folder / CEILING).is_file() else None
    words = pd.read_parquet(folder / WORDS, columns=["story"]) if (
        folder / WORDS).is_file() else None  # fmt: skip
    runs = (
        subject_stories(sorted((folder / FMRI).glob("sub-*"))) if (folder / FMRI).is_dir() else None
    )
    info = overview(scores, dataset=folder.name, words=words, runs=runs)
    board = leaderboard(scores, None if ceiling is None else ceiling_intervals(ceiling))
    return info, board
