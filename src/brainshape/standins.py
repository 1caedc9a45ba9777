"""Stand-ins of the published datasets: their layout, small, with planted signal.

:func:`generate` writes, for ds003020 (LeBel et al. 2023), Narratives (ds002345) or Alice
(ds002322), a dataset folder with the names, folders, formats and quirks the published one has
(see docs/datasets.md), small enough for a test: a few subjects, stories of about 100-250
volumes cut from the packaged demo stories and named after real stories, tens to a few hundred
voxels. What the importers never read is not written (audio, raw images, anatomy).

Planted signal: one layer of a language model (by default layer 2 of ``tiny-gpt2``, the demo's
planted model) drives one ROI x hemisphere (``STG`` left). Words are placed on the scan clock
at the dataset's real audio onset, the layer's features are resampled at the volume times,
projected on their principal components and convolved with the SPM HRF (the demo's machinery:
:func:`brainshape.demo.layer_scores`, :func:`brainshape.demo.voxel_signals`), then the dataset
removes volumes as the published one does. The true lag between word time and response rows
is therefore the dataset's real offset, which a test can recover.

Everything the dataset does not publish lives under ``standin/``: ``ground_truth.json`` (what
was planted, each run's audio onset, offset and volumes, exclusions), the ROI atlas of the
NIfTI datasets and the per-subject column tables of ds003020. Identical bytes for one seed.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainshape import demo, scoring
from brainshape import stimuli as stim
from brainshape.errors import BrainshapeError
from brainshape.io import atomic_path, save_json, save_text

STANDINS = ("ds003020", "narratives", "alice")

#: The planted (model, variant, layer) and where: tiny-gpt2's layer 2, as in the demo.
PLANTED = {"roi": "STG", "hemisphere": "L", "model": "tiny-gpt2", "variant": "fp32", "layer": 2}
NULL_ROIS = (("STG", "R"), ("IFG", "L"), ("IFG", "R"))
#: Voxels (or HDF5 columns) per ROI x hemisphere.
ROI_SIZES = {"STG": 24, "IFG": 16}

DEFAULT_SNR = 0.5
DEFAULT_AR1 = 0.3
#: Feature settings of the planted features; a workflow run must use the same to match them.
FEATURES = {"context_tokens": 128, "stride": 96, "batch_size": 8}

GROUND_TRUTH = "standin/ground_truth.json"
ATLAS_IMAGE = "standin/atlas/atlas-standin_dseg.nii.gz"
ATLAS_LABELS = "standin/atlas/atlas-standin_dseg.tsv"
LABELS = "standin/labels/{subject}.tsv"
SPACE = "MNI152NLin2009cAsym"

# The NIfTI grid: 10 x 8 x 6 voxels of 6 mm; x centres run -27 ... 27, so none is midline.
GRID = (10, 8, 6)
VOXEL_MM = 6.0
AFFINE = np.array([[6.0, 0, 0, -27.0], [0, 6.0, 0, -21.0], [0, 0, 6.0, -15.0], [0, 0, 0, 1.0]])
_ROI_TARGETS = {"STG": (0.75, 0.0, -0.2), "IFG": (0.6, 0.6, 0.3)}  # brain-normalised x, y, z


def _rng(seed: int, *names: str) -> np.random.Generator:
    """A random stream per purpose and name, independent of the order things are made in."""
    return np.random.default_rng([int(seed), *(zlib.crc32(str(n).encode()) for n in names)])


# --- stories ------------------------------------------------------------------------------------


def story_pieces() -> list[list[str]]:
    """The packaged demo stories, each cut in two at the sentence end nearest its middle: eight
    pieces of about 500 words (about 4 minutes of speech)."""
    pieces = []
    for name in demo.DEFAULT_STORIES:
        words = stim.story_words(demo.story_file(name))
        ends = [i + 1 for i, w in enumerate(words) if w.rstrip("\"')").endswith((".", "?", "!"))]
        cut = min(ends, key=lambda i: abs(i - len(words) / 2))
        pieces += [words[:cut], words[cut:]]
    return pieces


def _timed(words: Sequence[str], seed: int, story: str, lead: float = 0.0):
    """Demo word timings of ``words`` (seconds from the start of the audio), ``lead`` seconds
    later; returns (table, audio duration)."""
    table, duration = demo.word_timings(list(words), _rng(seed, "timing", story))
    table[["onset", "offset"]] += lead
    return table, duration + lead


# --- runs and planted signal --------------------------------------------------------------------


@dataclass
class Run:
    """One subject's hearing of one story, on the scan clock.

    ``onset``: seconds into the scan at which the audio (word time 0) starts; ``n_scan``:
    volumes acquired; ``removed_start``/``removed_end``: volumes the dataset removed.
    """

    subject: str
    story: str
    run: int
    onset: float | None
    n_scan: int
    removed_start: int = 0
    removed_end: int = 0
    repeats: int = 0
    excluded: str | None = None
    task: str = ""
    entity: int | None = None  # the BIDS run- entity, where the file name has one
    signal: np.ndarray | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return f"{self.subject}/{self.story}/{self.run}"

    @property
    def n_rows(self) -> int:
        return self.n_scan - self.removed_start - self.removed_end

    def offset(self, tr: float) -> float:
        return self.removed_start * tr - (self.onset or 0.0)


def plant(
    runs: Sequence[Run],
    words: Mapping[str, pd.DataFrame],
    features: Mapping[str, np.ndarray],
    n_voxels: int,
    tr: float,
    seed: int,
) -> None:
    """Set each run's ``signal``: (kept rows, n_voxels), unit variance per voxel over all runs.

    ``words[story]`` are the words as the pipeline reads them (seconds from the audio start),
    ``features[story]`` their planted layer (n_words, hidden). Words are moved onto each run's
    scan clock (``+ run.onset``), the features resampled at the volume times of the whole scan
    and projected on their principal components (over all runs at once, so every run shares
    the components), driven into the voxels with one set of weights and the HRF, and the
    removed volumes cut off.
    """
    live = [r for r in runs if r.onset is not None]
    scan_words = {
        r.key: words[r.story].assign(
            onset=words[r.story].onset + r.onset, offset=words[r.story].offset + r.onset
        )
        for r in live
    }
    scores = demo.layer_scores(
        {r.key: features[r.story] for r in live}, scan_words, {r.key: r.n_scan for r in live}, tr
    )
    signals = demo.voxel_signals(scores, n_voxels, tr, _rng(seed, "weights"))
    for r in live:
        r.signal = signals[r.key][r.removed_start : r.n_scan - r.removed_end]
    kept = np.concatenate([r.signal for r in live])
    mean, std = kept.mean(axis=0), kept.std(axis=0)
    for r in live:
        r.signal = (r.signal - mean) / std


def ar1_noise(rng: np.random.Generator, n: int, columns: int, coef: float) -> np.ndarray:
    """Stationary unit-variance AR(1) noise, (n, columns)."""
    out = np.empty((n, columns))
    out[0] = rng.standard_normal(columns)
    scale = math.sqrt(1.0 - coef**2)
    for t in range(1, n):
        out[t] = coef * out[t - 1] + scale * rng.standard_normal(columns)
    return out


def _expected_r(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """Pearson r between the noiseless and the observed ROI mean over runs (each run centred)."""
    truth = np.concatenate([t.mean(axis=1) - t.mean() for t, _ in pairs])
    seen = np.concatenate([o.mean(axis=1) - o.mean(axis=1).mean() for _, o in pairs])
    return round(float(scoring.pearson(truth[:, None], seen[:, None])[0]), 4)


def _features(
    planted: Mapping[str, Any],
    words: Mapping[str, pd.DataFrame],
    registry_path: str | os.PathLike,
    model_root: str | os.PathLike,
) -> dict[str, np.ndarray]:
    key = (planted["model"], planted["variant"], int(planted["layer"]))
    feats = demo.planted_features_for([planted], words, registry_path, model_root, **FEATURES)
    return feats[key]


# --- NIfTI grid and atlas -----------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """The stand-in's brain: mask (X, Y, Z), labels (0 none, i + 1 = ROIS[i]) and each ROI x
    hemisphere's voxels as flat indices into the grid (C order)."""

    mask: np.ndarray
    labels: np.ndarray
    voxels: dict[tuple[str, str], np.ndarray]

    rois = ("STG", "IFG")


def grid() -> Grid:
    """The fixed stand-in grid (no randomness)."""
    ijk = np.indices(GRID).reshape(3, -1).T.astype(float)
    centre = (np.asarray(GRID) - 1) / 2
    semi = np.asarray(GRID) / 2 - 0.2
    inside = (((ijk - centre) / semi) ** 2).sum(axis=1) <= 1.0
    x_world = ijk @ AFFINE[0, :3] + AFFINE[0, 3]
    labels = np.zeros(len(ijk), dtype=np.int64)
    voxels = {}
    for label, roi in enumerate(Grid.rois, start=1):
        for hemi, side in (("L", -1.0), ("R", 1.0)):
            target = centre + np.asarray(_ROI_TARGETS[roi]) * [side, 1, 1] * semi
            free = np.flatnonzero(inside & (labels == 0) & (side * x_world > 0))
            dist = np.sqrt(((ijk[free] - target) ** 2).sum(axis=1))
            chosen = np.sort(free[np.argsort(dist, kind="stable")[: ROI_SIZES[roi]]])
            labels[chosen] = label
            voxels[(roi, hemi)] = chosen
    return Grid(inside.reshape(GRID), labels.reshape(GRID), voxels)


def _write_atlas(root: Path, g: Grid) -> None:
    demo.save_nifti(root / ATLAS_IMAGE, demo.mni_image(g.labels.astype(np.uint8), affine=AFFINE))
    table = pd.DataFrame({"index": range(1, len(Grid.rois) + 1), "name": list(Grid.rois)})
    _save_tsv(root / ATLAS_LABELS, table)


def _save_tsv(path: Path, table: pd.DataFrame) -> None:
    save_text(path, table.to_csv(sep="\t", index=False, na_rep="n/a", lineterminator="\n"))


def _volumes(
    g: Grid, run: Run, baseline: np.ndarray, rng: np.random.Generator, snr: float, ar1: float
) -> tuple[np.ndarray, np.ndarray]:
    """A run's BOLD on the grid (X, Y, Z, rows) float32 and its planted ROI's observed signal
    units (rows, voxels): baseline * (1 + 0.5 % * (signal + noise)), zero outside the brain."""
    flat = np.flatnonzero(g.mask.ravel())
    units = ar1_noise(rng, run.n_rows, flat.size, ar1) / math.sqrt(snr)
    planted = np.searchsorted(flat, g.voxels[(PLANTED["roi"], PLANTED["hemisphere"])])
    units[:, planted] += run.signal
    bold = np.zeros((int(np.prod(GRID)), run.n_rows), dtype=np.float32)
    bold[flat] = (baseline[:, None] * (1.0 + demo.PERCENT_PER_UNIT / 100 * units.T)).astype(
        np.float32
    )
    return bold.reshape(*GRID, run.n_rows), units[:, planted]


# --- ground truth -------------------------------------------------------------------------------


def _truth(
    dataset: str,
    runs: Sequence[Run],
    tr: float,
    seed: int,
    snr: float,
    ar1: float,
    observed: Mapping[str, list],
    n_voxels: Mapping[tuple[str, str], int],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    planted = {
        **PLANTED,
        "n_voxels": n_voxels[(PLANTED["roi"], PLANTED["hemisphere"])],
        "expected_r_roi_mean": _expected_r([p for pairs in observed.values() for p in pairs]),
        "expected_r_by_subject": {s: _expected_r(pairs) for s, pairs in observed.items()},
    }
    return {
        "dataset": dataset,
        "description": (
            "Planted signal of a brainshape stand-in. expected_r_roi_mean: Pearson r between "
            "the noiseless ROI-mean signal and the observed ROI mean (signal + noise, each run "
            "centred, kept rows only): the best any model can reach, before any cleaning."
        ),
        "seed": int(seed),
        "tr": tr,
        "snr": snr,
        "ar1": ar1,
        "features": FEATURES,
        "planted": [planted],
        "null": [{"roi": r, "hemisphere": h, "n_voxels": n_voxels[(r, h)]} for r, h in NULL_ROIS],
        "runs": [
            {
                "subject": r.subject,
                "story": r.story,
                "run": r.run,
                "audio_onset": r.onset,
                "offset": None if r.onset is None else round(r.offset(tr), 9),
                "removed_start": r.removed_start,
                "removed_end": r.removed_end,
                "n_scan": r.n_scan,
                "n_rows": r.n_rows,
                "repeats": r.repeats,
                "excluded": r.excluded,
            }
            for r in runs
        ],
        **extra,
    }


# --- ds003020 -----------------------------------------------------------------------------------

LEBEL_STORIES = (
    "alternateithicatom",
    "souls",
    "avatar",
    "legacy",
    "odetostepfather",
    "undertheinfluence",
)
LEBEL_TEST = "wheretheressmoke"
LEBEL_HEARD = {
    "UTS01": ("alternateithicatom", "souls", "avatar", "legacy"),
    "UTS02": ("alternateithicatom", "souls", "odetostepfather"),
    "UTS03": ("avatar", "legacy", "odetostepfather", "undertheinfluence"),
    "UTS04": ("souls", "undertheinfluence"),
}
#: How often each subject heard the test story (its data is their average), and the subjects
#: whose copy also holds the individual repeats.
LEBEL_REPEATS = {"UTS01": 3, "UTS02": 3, "UTS03": 2, "UTS04": 2}
LEBEL_WITH_REPEATS = ("UTS01", "UTS02")
#: Stories respdict.json lists that no stand-in subject has (the real one lists many).
LEBEL_UNFETCHED = {"haveyoumethimyet": 507, "inamoment": 181}
LEBEL_COLUMNS = {"UTS01": 120, "UTS02": 136, "UTS03": 112, "UTS04": 128}
_MARKERS = ("sp", "SP", "{BR}", "{br}", "{LG}", "{NS}", "{LS}", "br", "ns", "lg", "ls", "Sp")
#: How the ds003020 stand-in can write its TextGrids' words: ``text`` as the story's text (case
#: and punctuation), ``lower`` lower-cased without punctuation (as the published TextGrids
#: are), ``upper`` in capitals without punctuation (as CMU-dictionary aligners write them).
LEBEL_WORD_STYLES = ("text", "lower", "upper")
#: Each story's text (with ``transcripts``): what the published dataset does not hold.
TRANSCRIPTS = "standin/transcripts/{story}.txt"


def _lebel_tiers(
    table: pd.DataFrame, duration: float, rng: np.random.Generator, labels=None
) -> tuple[list, list]:
    """(phone tier, word tier) intervals of a LeBel-style TextGrid: every gap between words is
    filled with markers (sp, {BR}, ...; sentence_end/sentence_start around sentence ends), in
    varied case; phones split each word. ``labels``: the words as the tier writes them (default
    the table's words, which say where sentences end)."""
    words, phones, t, previous = [], [], 0.0, ""
    labels = table.word if labels is None else labels
    for word, label, a, b in zip(table.word, labels, table.onset, table.offset, strict=True):
        if a > t:
            gap = a - t
            if previous.rstrip("\"')").endswith((".", "?", "!")) and gap > 0.3:
                words += [
                    (t, t + gap / 3, "sentence_end"),
                    (t + gap / 3, t + 2 * gap / 3, "sp"),
                    (t + 2 * gap / 3, a, str(rng.choice(["sentence_start", "SENTENCE_START"]))),
                ]
            else:
                words.append((t, a, "" if t == 0 else str(rng.choice(_MARKERS))))
            phones.append((t, a, "sp" if t else ""))
        words.append((a, b, label))
        letters = [c.upper() for c in word if c.isalpha()][:3] or ["AH"]
        edges = np.linspace(a, b, len(letters) + 1)
        phones += [(float(edges[i]), float(edges[i + 1]), p) for i, p in enumerate(letters)]
        t, previous = b, word
    words.append((t, duration, "sp"))
    phones.append((t, duration, "sp"))
    return phones, words


def _write_hdf5(path: Path, data: np.ndarray, repeats: np.ndarray | None) -> None:
    import h5py

    with atomic_path(path, suffix=".hf5") as tmp, h5py.File(tmp, "w", track_order=True) as f:
        f.create_dataset("data", data=data.astype(np.float64), track_times=False)
        if repeats is not None:
            f.create_dataset("individual_repeats", data=repeats, track_times=False)


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / x.std(axis=0)


def aligner_word(word: str, style: str) -> str:
    """``word`` of a story's text as a TextGrid of ``style`` (:data:`LEBEL_WORD_STYLES`) writes
    it: ``text`` unchanged; ``lower`` and ``upper`` without punctuation (apostrophes and
    hyphens inside the word kept), lower-cased or in capitals."""
    if style == "text":
        return word
    bare = "".join(ch for ch in word if ch.isalnum() or ch in "'-").strip("'-") or word
    return bare.upper() if style == "upper" else bare.lower()


def _lebel_transcript(words: Sequence[str]) -> str:
    """A story's text as a transcript file: the words, a line per sentence."""
    ends = [w.rstrip("\"')").endswith((".", "?", "!")) for w in words]
    return "".join(w + ("\n" if end else " ") for w, end in zip(words, ends, strict=True)).strip()


def _lebel_words(
    root: Path, seed: int, style: str = "text", transcripts: bool = False
) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """Write the TextGrids (long and short format alternating; words written in ``style``),
    respdict.json and, with ``transcripts``, each story's text at :data:`TRANSCRIPTS`; return
    the words the signal is planted from (the story's text at the TextGrid's times: for
    ``text``, the words as read back, tier 2, markers dropped) and each story's volume count."""
    stories, words, respdict = (*LEBEL_STORIES, LEBEL_TEST), {}, {}
    for i, (story, piece) in enumerate(zip(stories, story_pieces(), strict=False)):
        table, duration = _timed(piece, seed, story)
        path = root / "derivative" / "TextGrids" / f"{story}.TextGrid"
        labels = [aligner_word(w, style) for w in table.word]
        phones, marked = _lebel_tiers(table, duration, _rng(seed, "markers", story), labels)
        stim.write_textgrid_tiers(
            path, [("phone", phones), ("word", marked)], duration, short=bool(i % 2)
        )
        if transcripts:
            save_text(root / TRANSCRIPTS.format(story=story), _lebel_transcript(piece) + "\n")
        read = stim.read_words(path, "textgrid", tier="2")
        words[story] = read if style == "text" else table.assign(aligned=True)
        # The audio starts 10 s into the scan and the scan runs about 10 s past its end.
        respdict[story] = math.ceil((10.0 + duration + 10.0) / 2.0)
    save_json(root / "derivative" / "respdict.json", {**respdict, **LEBEL_UNFETCHED})
    return words, respdict


def _lebel_subject(
    root: Path, subject: str, runs: list[Run], seed: int, snr: float, ar1: float
) -> list:
    """Write one subject's HDF5 responses and column table; return (truth, observed) pairs."""
    n = LEBEL_COLUMNS[subject]
    order = _rng(seed, "columns", subject).permutation(n)  # the subject's own voxel order
    names = [(PLANTED["roi"], PLANTED["hemisphere"]), *NULL_ROIS]
    sizes = [ROI_SIZES[r] for r, _ in names]
    bounds = np.cumsum([0, *sizes])
    roi = np.full(n, "other", dtype=object)
    hemi = np.full(n, "L", dtype=object)
    hemi[order[bounds[-1] :]] = np.where(np.arange(n - bounds[-1]) % 2, "R", "L")
    for (r, h), a, b in zip(names, bounds[:-1], bounds[1:], strict=True):
        roi[order[a:b]], hemi[order[a:b]] = r, h
    planted = order[: sizes[0]]
    _save_tsv(
        root / LABELS.format(subject=subject),
        pd.DataFrame({"column": range(n), "roi": roi, "hemisphere": hemi}),
    )
    pairs = []
    for run in runs:
        rng = _rng(seed, "noise", run.key)
        takes = []
        for _ in range(max(run.repeats, 1)):
            units = ar1_noise(rng, run.n_rows, n, ar1) / math.sqrt(snr)
            units[:, planted] += run.signal
            takes.append(_zscore(units))
        data = np.mean(takes, axis=0)
        keep = run.repeats and subject in LEBEL_WITH_REPEATS
        path = root / "derivative" / "preprocessed_data" / subject / f"{run.story}.hf5"
        _write_hdf5(path, data, np.stack(takes) if keep else None)
        pairs.append((run.signal, data[:, planted]))
    return pairs


def ds003020(root: Path, words, features, respdict, seed: int, snr: float, ar1: float) -> dict:
    """Write the responses of the ds003020 stand-in; return its ground truth."""
    runs = [
        Run(
            subject,
            story,
            1,
            10.0,
            respdict[story],
            10,
            10,
            repeats=LEBEL_REPEATS[subject] if story == LEBEL_TEST else 0,
        )
        for subject, heard in LEBEL_HEARD.items()
        for story in (*heard, LEBEL_TEST)
    ]
    plant(runs, words, features, ROI_SIZES[PLANTED["roi"]], 2.0, seed)
    observed = {
        s: _lebel_subject(root, s, [r for r in runs if r.subject == s], seed, snr, ar1)
        for s in LEBEL_HEARD
    }
    save_json(
        root / "dataset_description.json",
        {"Name": "brainshape stand-in of ds003020 (LeBel et al. 2023)", "BIDSVersion": "1.6.0"},
    )
    extra = {
        "test_story": LEBEL_TEST,
        "labels": LABELS,
        "repeats_in": list(LEBEL_WITH_REPEATS),
        "respdict_unfetched": sorted(LEBEL_UNFETCHED),
    }
    return _truth(
        "ds003020",
        runs,
        2.0,
        seed,
        snr,
        ar1,
        observed,
        {k: ROI_SIZES[k[0]] for k in [(PLANTED["roi"], "L"), *NULL_ROIS]},
        extra,
    )


# --- Narratives ---------------------------------------------------------------------------------

NARRATIVES_TR = 1.5
#: Task -> (audio onset in the scan, s; seconds of music before the story in the audio file).
NARRATIVES_TASKS = {
    "pieman": (0.0, 6.0),
    "tunnel": (3.0, 0.0),
    "merlin": (4.5, 6.0),
    "milkyway": (0.0, 6.0),
    "black": (12.0, 0.0),
}
#: Subject -> [(task, run entity or None, condition)].
NARRATIVES_SCANS = {
    "001": [("pieman", 1, "n/a"), ("pieman", 2, "n/a"), ("tunnel", None, "n/a")],
    "002": [("pieman", None, "n/a"), ("tunnel", None, "n/a")],
    "003": [("pieman", None, "n/a"), ("milkyway", None, "original")],
    "004": [("merlin", None, "n/a"), ("tunnel", None, "n/a")],
    "005": [("milkyway", None, "original"), ("merlin", None, "n/a")],
    "006": [("milkyway", None, "vodka"), ("merlin", None, "n/a")],
    "007": [("milkyway", None, "vodka")],
    "008": [("black", None, "n/a")],
}
NARRATIVES_EXCLUDE = {"tunnel": {"sub-004": ["sub-004_task-tunnel"]}}
#: A sidecar that says 1.52 s where the images say 1.5 s.
NARRATIVES_ODD_SIDECAR = ("002", "tunnel", 1.52)
NARRATIVES_CONFOUNDS = (
    "global_signal",
    "csf",
    "white_matter",
    "framewise_displacement",
    "trans_x",
    "trans_y",
    "trans_z",
    "rot_x",
    "rot_y",
    "rot_z",
)


def _milkyway_variant(words: list[str], condition: str) -> list[str]:
    """Milkyway's conditions differ in a few words: vodka and synonyms replace every 40th and
    every 30th word."""
    step, new = {"original": (0, ""), "vodka": (40, "vodka"), "synonyms": (30, "indeed")}[condition]
    return [new if step and i % step == step - 1 else w for i, w in enumerate(words)]


def _narratives_words(root: Path, seed: int) -> dict[str, pd.DataFrame]:
    """Write stimuli/gentle/<story>/{align.json, transcript.txt}; return the words as read."""
    pieces = story_pieces()
    base = {
        "pieman": pieces[0],
        "tunnel": pieces[2],
        "merlin": pieces[4],
        "milkyway": pieces[6],
        "black": pieces[5],
    }
    texts = {t: w for t, w in base.items() if t != "milkyway"}
    for condition in ("original", "vodka", "synonyms"):
        texts[f"milkyway{condition}"] = _milkyway_variant(base["milkyway"], condition)
    words = {}
    for story, text in texts.items():
        task = "milkyway" if story.startswith("milkyway") else story
        table, _ = _timed(text, seed, story, lead=NARRATIVES_TASKS[task][1])
        folder = root / "stimuli" / "gentle" / story
        save_text(folder / "transcript.txt", " ".join(text) + "\n")
        stim.write_gentle(table, folder / "align.json")
        words[story] = stim.read_words(folder / "align.json", "gentle")
    return words


def _narratives_runs(words: Mapping[str, pd.DataFrame]) -> list[Run]:
    runs = []
    for sub, scans in NARRATIVES_SCANS.items():
        for task, run_entity, condition in scans:
            story = f"milkyway{condition}" if task == "milkyway" else task
            onset = NARRATIVES_TASKS[task][0]
            n_scan = math.ceil((onset + words[story].offset.max() + 12.0) / NARRATIVES_TR)
            excluded = (
                "listed in code/scan_exclude.json"
                if (task in NARRATIVES_EXCLUDE and f"sub-{sub}" in NARRATIVES_EXCLUDE[task])
                else None
            )
            runs.append(
                Run(
                    sub,
                    story,
                    run_entity or 1,
                    onset,
                    n_scan,
                    excluded=excluded,
                    task=task,
                    entity=run_entity,
                )
            )
    return runs


def _motion(rng: np.random.Generator, n: int) -> pd.DataFrame:
    walk = 0.15 * ar1_noise(rng, n, 6, 0.9) * [1, 1, 1, 0.01, 0.01, 0.01]
    table = pd.DataFrame(walk, columns=["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"])
    table["csf"] = 1200.0 + 15.0 * ar1_noise(rng, n, 1, 0.8)[:, 0]
    table["white_matter"] = 950.0 + 6.0 * ar1_noise(rng, n, 1, 0.9)[:, 0]
    return table.round(6)


def _narratives_run(
    root: Path, g: Grid, run: Run, baseline: np.ndarray, seed: int, snr: float, ar1: float
) -> np.ndarray:
    """Write one fMRIPrep run (BOLD, confounds) and its events; return the planted ROI's
    observed signal units (rows, voxels)."""
    task = run.task
    stem = f"sub-{run.subject}_task-{task}" + (f"_run-{run.entity}" if run.entity else "")
    rng = _rng(seed, "noise", run.key)
    bold, seen = _volumes(g, run, baseline, rng, snr, ar1)
    confounds = _motion(rng, run.n_rows)
    z = (confounds - confounds.mean()) / confounds.std()
    nuisance = z.to_numpy() @ rng.normal(0.0, 0.3, (z.shape[1], 1))  # shared by the brain
    bold[g.mask] *= (1.0 + demo.PERCENT_PER_UNIT / 100 * nuisance[:, 0] / math.sqrt(snr)).astype(
        np.float32
    )
    func = root / "derivatives" / "fmriprep" / f"sub-{run.subject}" / "func"
    name = f"{stem}_space-{SPACE}_res-native_desc-preproc_bold.nii.gz"
    demo.save_nifti(func / name, demo.mni_image(bold, NARRATIVES_TR, AFFINE))
    confounds["global_signal"] = bold[g.mask].mean(axis=0)
    motion = confounds[["trans_x", "trans_y", "trans_z"]].diff().abs().sum(axis=1)
    confounds["framewise_displacement"] = motion.where(confounds.index > 0)
    _save_tsv(
        func / f"{stem}_desc-confounds_regressors.tsv",
        confounds[list(NARRATIVES_CONFOUNDS)].round(6),
    )
    lead = NARRATIVES_TASKS[task][1]
    length = run.n_scan * NARRATIVES_TR - run.onset - lead - 12.0
    events = [(run.onset, lead, "music")] if lead else []
    events.append((run.onset + lead, round(length, 1), "story"))
    _save_tsv(
        root / f"sub-{run.subject}" / "func" / f"{stem}_events.tsv",
        pd.DataFrame(
            [(o, d, t, f"{run.story}_audio.wav") for o, d, t in events],
            columns=["onset", "duration", "trial_type", "stim_file"],
        ),
    )
    return seen


def _narratives_metadata(root: Path) -> None:
    rows, subjects = [], {}
    for sub, scans in NARRATIVES_SCANS.items():
        tasks = list(dict.fromkeys(t for t, _, _ in scans))
        conds = [next(c for t2, _, c in scans if t2 == t) for t in tasks]
        rows.append((f"sub-{sub}", ",".join(tasks), ",".join(conds)))
        names = [
            f"func/sub-{sub}_task-{t}" + (f"_run-{r}" if r else "") + "_bold.nii.gz"
            for t, r, _ in scans
        ]
        subjects[sub] = pd.DataFrame({"filename": names, "condition": [c for *_, c in scans]})
    _save_tsv(
        root / "participants.tsv",
        pd.DataFrame(rows, columns=["participant_id", "task", "condition"]),
    )
    for sub, table in subjects.items():
        _save_tsv(root / f"sub-{sub}" / f"sub-{sub}_scans.tsv", table)
    exclude = {t: NARRATIVES_EXCLUDE.get(t, {}) for t in NARRATIVES_TASKS}
    save_json(root / "code" / "scan_exclude.json", exclude)
    for task in NARRATIVES_TASKS:
        save_json(
            root / f"task-{task}_bold.json", {"TaskName": task, "RepetitionTime": NARRATIVES_TR}
        )
    sub, task, tr = NARRATIVES_ODD_SIDECAR
    save_json(
        root / f"sub-{sub}" / "func" / f"sub-{sub}_task-{task}_bold.json",
        {"TaskName": task, "RepetitionTime": tr},
    )
    save_json(
        root / "dataset_description.json",
        {"Name": "brainshape stand-in of Narratives (ds002345)", "BIDSVersion": "1.4.0"},
    )


def narratives(root: Path, words, features, seed: int, snr: float, ar1: float) -> dict:
    """Write the images, confounds, events and metadata of the Narratives stand-in."""
    g = grid()
    runs = _narratives_runs(words)
    plant(runs, words, features, ROI_SIZES[PLANTED["roi"]], NARRATIVES_TR, seed)
    _write_atlas(root, g)
    mask = demo.mni_image(g.mask.astype(np.uint8), affine=AFFINE)
    for task in NARRATIVES_TASKS:
        name = f"tpl-{SPACE}_res-{task}_desc-brain_mask.nii.gz"
        demo.save_nifti(root / "derivatives" / "afni-nosmooth" / f"tpl-{SPACE}" / name, mask)
    observed: dict[str, list] = {}
    for run in runs:
        baseline = _rng(seed, "baseline", run.subject).standard_normal(int(g.mask.sum()))
        seen = _narratives_run(root, g, run, 1000.0 * (1 + 0.05 * baseline), seed, snr, ar1)
        if not run.excluded:
            observed.setdefault(run.subject, []).append((run.signal, seen))
    _narratives_metadata(root)
    extra = {
        "atlas": {"image": ATLAS_IMAGE, "labels": ATLAS_LABELS},
        "only_story_nobody_else_heard": {"subject": "008", "story": "black"},
        "sidecar_disagrees": {
            "subject": NARRATIVES_ODD_SIDECAR[0],
            "task": NARRATIVES_ODD_SIDECAR[1],
            "sidecar_tr": NARRATIVES_ODD_SIDECAR[2],
        },
    }
    return _truth(
        "narratives",
        runs,
        NARRATIVES_TR,
        seed,
        snr,
        ar1,
        observed,
        {k: v.size for k, v in g.voxels.items()},
        extra,
    )


# --- Alice --------------------------------------------------------------------------------------

ALICE_TR = 2.0
#: Subject -> audio onset in the scan (s), and the subjects whose events.tsv says n/a instead.
ALICE_ONSETS = {"18": 0.0, "22": 0.5, "23": 1.5, "24": 1.0, "26": 2.0, "28": 0.0}
ALICE_ONSET_NA = ("23", "28")
#: Subject -> voxels added to its grid (low x, high x, low y, high y, low z, high z).
ALICE_PADS = {
    "18": (0, 0, 0, 0, 0, 0),
    "22": (1, 0, 0, 1, 0, 0),
    "23": (0, 0, 0, 0, 0, 0),
    "24": (0, 2, 1, 0, 0, 1),
    "26": (2, 1, 0, 0, 1, 0),
    "28": (1, 1, 1, 1, 0, 0),
}
ALICE_SILENCE = 20.0  # leading silence of the audio file (s)


def _split_clitics(table: pd.DataFrame) -> pd.DataFrame:
    """Words with an apostrophe become two rows, the clitic (n't, 's, 'll, ...) untimed."""
    rows = []
    for word, a, b in zip(table.word, table.onset, table.offset, strict=True):
        stripped = word.rstrip(".,;:!?\"'")
        cut = len(stripped) - 3 if stripped.lower().endswith("n't") else word.find("'")
        if 0 < cut < len(word) - 1 and word.count("'") == 1:
            rows += [(word[:cut], a, b, True), (word[cut:], math.nan, math.nan, False)]
        else:
            rows.append((word, a, b, True))
    return pd.DataFrame(rows, columns=["word", "onset", "offset", "aligned"])


def _alice_words(root: Path, seed: int) -> tuple[dict[str, pd.DataFrame], float]:
    words = [w for s in ("lighthouse", "orchard") for w in stim.story_words(demo.story_file(s))]
    table, duration = _timed(words, seed, "alice")
    lead = ALICE_SILENCE - table.onset.iloc[0]
    table[["onset", "offset"]] += lead
    table = _split_clitics(table)
    path = root / "code" / "annotations.tsv"
    stim.write_annotations(table, path)
    return {"alice": stim.read_words(path, "annotations")}, duration + lead


def _alice_subject(root: Path, g: Grid, run: Run, seed: int, snr: float, ar1: float):
    """Write one subject's SPM-style image (its own grid; brain edges differ) and events."""
    sub = f"sub-{run.subject}"
    events = pd.DataFrame(
        {
            "onset": ["n/a" if run.excluded else run.onset],
            "duration": [run.n_scan * ALICE_TR],
            "trial_type": ["alice"],
        }
    )
    _save_tsv(root / sub / "func" / f"{sub}_task-alice_events.tsv", events)
    save_json(
        root / sub / "func" / f"{sub}_task-alice_bold.json",
        {"TaskName": "alice", "RepetitionTime": ALICE_TR},
    )
    rng = _rng(seed, "noise", run.key)
    baseline = 1000.0 * (1 + 0.05 * rng.standard_normal(int(g.mask.sum())))
    bold, seen = _volumes(g, run, baseline, rng, snr, ar1)
    in_roi = (g.labels > 0) | ~g.mask
    edge = np.flatnonzero((~in_roi & g.mask).ravel() & _edge(g.mask).ravel())
    dropped = rng.choice(edge, size=min(6, edge.size), replace=False)
    bold.reshape(-1, run.n_rows)[dropped] = 0.0
    lx, hx, ly, hy, lz, hz = ALICE_PADS[run.subject]
    padded = np.zeros(
        (GRID[0] + lx + hx, GRID[1] + ly + hy, GRID[2] + lz + hz, run.n_rows), dtype=np.float32
    )
    padded[lx : lx + GRID[0], ly : ly + GRID[1], lz : lz + GRID[2]] = bold
    affine = AFFINE.copy()
    affine[:3, 3] -= VOXEL_MM * np.array([lx, ly, lz])
    path = root / "derivatives" / sub / f"{sub}_task-alice_bold_preprocessed.nii.gz"
    demo.save_nifti(path, demo.mni_image(padded, ALICE_TR, affine))
    return seen


def _edge(mask: np.ndarray) -> np.ndarray:
    """Brain voxels with a face neighbour outside the brain."""
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask)


def alice(root: Path, words, features, duration: float, seed: int, snr: float, ar1: float):
    """Write the images, events and sidecars of the Alice stand-in."""
    g = grid()
    runs = []
    for sub, onset in ALICE_ONSETS.items():
        n_scan = math.ceil((onset + duration) / ALICE_TR) + 2
        reason = "the audio onset is n/a in its events.tsv" if sub in ALICE_ONSET_NA else None
        runs.append(Run(sub, "alice", 1, onset, n_scan, removed_start=10, excluded=reason))
    plant(runs, words, features, ROI_SIZES[PLANTED["roi"]], ALICE_TR, seed)
    _write_atlas(root, g)
    observed = {}
    for run in runs:
        seen = _alice_subject(root, g, run, seed, snr, ar1)
        if not run.excluded:
            observed[run.subject] = [(run.signal, seen)]
    save_json(root / "task-alice_bold.json", {"TaskName": "alice", "RepetitionTime": ALICE_TR})
    _save_tsv(
        root / "participants.tsv",
        pd.DataFrame({"participant_id": [f"sub-{s}" for s in ALICE_ONSETS]}),
    )
    save_json(
        root / "dataset_description.json",
        {"Name": "brainshape stand-in of Alice (ds002322)", "BIDSVersion": "1.2.0"},
    )
    extra = {
        "atlas": {"image": ATLAS_IMAGE, "labels": ATLAS_LABELS},
        "grids": {s: list(p) for s, p in ALICE_PADS.items()},
        "onset_na": list(ALICE_ONSET_NA),
        "untimed_words": int((~words["alice"].aligned).sum()),
    }
    return _truth(
        "alice",
        runs,
        ALICE_TR,
        seed,
        snr,
        ar1,
        observed,
        {k: v.size for k, v in g.voxels.items()},
        extra,
    )


# --- everything ---------------------------------------------------------------------------------


def generate(
    name: str,
    root: str | os.PathLike,
    *,
    registry_path: str | os.PathLike,
    model_root: str | os.PathLike,
    seed: int = 0,
    snr: float = DEFAULT_SNR,
    ar1: float = DEFAULT_AR1,
    textgrid_words: str = "text",
    transcripts: bool = False,
) -> dict[str, Any]:
    """Write the stand-in of dataset ``name`` (one of :data:`STANDINS`) under ``root``; return
    its ground truth (also written to ``root/standin/ground_truth.json``).

    ``registry_path`` must hold the planted model (``tiny-gpt2``: config/models.demo.yaml); it
    is prepared under ``model_root`` if not there yet. ds003020 only: ``textgrid_words`` says
    how the TextGrids write the words (:data:`LEBEL_WORD_STYLES`), ``transcripts`` writes each
    story's text to :data:`TRANSCRIPTS`; the signal is planted from the story's text either way.
    """
    if name not in STANDINS:
        raise BrainshapeError(f"no stand-in of {name!r}; choose one of {', '.join(STANDINS)}")
    if textgrid_words not in LEBEL_WORD_STYLES:
        raise BrainshapeError(
            f"textgrid_words is {textgrid_words!r}; choose one of {', '.join(LEBEL_WORD_STYLES)}"
        )
    if name != "ds003020" and (textgrid_words != "text" or transcripts):
        raise BrainshapeError(
            f"textgrid_words and transcripts apply to the ds003020 stand-in only, not {name!r}"
        )
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise BrainshapeError(f"{root} is not empty; give a new folder for the stand-in")
    if name == "ds003020":
        words, respdict = _lebel_words(root, seed, textgrid_words, transcripts)
        feats = _features(PLANTED, words, registry_path, model_root)
        truth = ds003020(root, words, feats, respdict, seed, snr, ar1)
        truth["textgrid_words"] = textgrid_words
        truth["transcripts"] = TRANSCRIPTS if transcripts else None
    elif name == "narratives":
        words = _narratives_words(root, seed)
        feats = _features(PLANTED, words, registry_path, model_root)
        truth = narratives(root, words, feats, seed, snr, ar1)
    else:
        words, duration = _alice_words(root, seed)
        feats = _features(PLANTED, words, registry_path, model_root)
        truth = alice(root, words, feats, duration, seed, snr, ar1)
    save_json(root / GROUND_TRUTH, truth)
    return truth
