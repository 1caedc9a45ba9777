"""Stand-ins of the published datasets: their layout, small, with planted signal.

:func:`generate` writes, for ds003020 (LeBel et al. 2023), Narratives (ds002345) or Alice
(ds002322), a dataset folder with the names, folders, formats and quirks the published one has
(see docs/datasets.md), small enough for a test: a few subjects and runs named after real ones,
stories of about 100-250 volumes cut from the packaged demo stories and named after real stories,
tens to a few hundred voxels. The small files the importers read (sidecars, events onsets,
scans and participants tables, Narratives' code/scan_exclude.json) are the published ones,
carried in ``data/published`` (:data:`PUBLISHED`). What the importers never read is not written
(audio, raw images, anatomy).

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

import json
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

#: Small files of the published datasets, byte for byte, that the stand-ins carry over.
PUBLISHED = Path(__file__).resolve().parent / "data" / "published"

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


def _published(dataset: str, rel: str) -> Path:
    return PUBLISHED / dataset / rel


def _copy_published(dataset: str, rel: str, root: Path) -> None:
    """A file of the published dataset, byte for byte, at its own path under ``root``."""
    with atomic_path(root / rel) as tmp:
        tmp.write_bytes(_published(dataset, rel).read_bytes())


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
#: The dataset holding them. Its published name is not in the public sources (the HDF5 files are
#: annexed); the importer takes any 3-D dataset of repeats x rows x voxels.
LEBEL_REPEATS_KEY = "individual_repeats"
#: Stories respdict.json lists that no stand-in subject has (the real one lists many).
LEBEL_UNFETCHED = {"haveyoumethimyet": 516, "inamoment": 225}  # their published counts
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
            f.create_dataset(LEBEL_REPEATS_KEY, data=repeats, track_times=False)


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
        path = root / "derivative" / "preprocessed_data" / subject / f"{run.story}.hf5"
        _write_hdf5(path, data, np.stack(takes) if run.repeats else None)
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
    for rel in ("dataset_description.json", "participants.tsv"):
        _copy_published("ds003020", rel, root)
    for story in (*LEBEL_STORIES, LEBEL_TEST):
        _copy_published("ds003020", f"task-{story}_bold.json", root)
    extra = {
        "test_story": LEBEL_TEST,
        "labels": LABELS,
        "repeats_key": LEBEL_REPEATS_KEY,
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
#: The stand-in's runs, (subject, task, run entity or None), named after real runs: their
#: sidecars, scans.tsv and events onsets are the published ones (data/published/ds002345).
NARRATIVES_RUNS = (
    ("001", "pieman", 1), ("001", "pieman", 2), ("001", "tunnel", None),
    ("002", "pieman", 1), ("002", "pieman", 2),
    ("038", "milkyway", None), ("038", "pieman", None), ("038", "prettymouth", None),
    ("049", "schema", 1),
    ("053", "lucy", None), ("053", "pieman", None), ("053", "tunnel", None),
    ("116", "milkyway", None), ("127", "milkyway", None), ("127", "black", None),
    ("146", "merlin", None),
)  # fmt: skip
#: Task -> the demo story piece its audio is cut from (milkyway's conditions vary one piece).
NARRATIVES_PIECES = {
    "pieman": 0, "lucy": 1, "tunnel": 2, "prettymouth": 3, "merlin": 4, "black": 5, "milkyway": 6,
}  # fmt: skip
#: Runs whose story row the authors moved (the audio was started early by hand; snastase/
#: narratives staging/compile_events.py): (subject, task) -> seconds; the first (music) row
#: kept its onset, so the audio really started this much before it.
NARRATIVES_MOVED = {("038", "milkyway"): -6.0, ("038", "prettymouth"): -6.0}
#: Volumes of the schema run (no transcript: excluded; written short).
NARRATIVES_SCHEMA_VOLUMES = 20
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


def _stem(sub: str, task: str, entity: int | None) -> str:
    return f"sub-{sub}_task-{task}" + (f"_run-{entity}" if entity else "")


def _events(sub: str, task: str, entity: int | None) -> pd.DataFrame:
    """The published events of one Narratives run."""
    rel = f"sub-{sub}/func/{_stem(sub, task, entity)}_events.tsv"
    return pd.read_csv(_published("ds002345", rel), sep="\t", dtype=str, keep_default_na=False)


def _story_start(events: pd.DataFrame) -> float:
    """Seconds from the first events row to the story row."""
    story = events[events.trial_type == "story"].iloc[0]
    return float(story.onset) - float(events.onset.iloc[0])


def _milkyway_variant(words: list[str], condition: str) -> list[str]:
    """Milkyway's conditions differ in a few words: vodka and synonyms replace every 40th and
    every 30th word."""
    step, new = {"original": (0, ""), "vodka": (40, "vodka"), "synonyms": (30, "indeed")}[condition]
    return [new if step and i % step == step - 1 else w for i, w in enumerate(words)]


def _narratives_words(root: Path, seed: int) -> dict[str, pd.DataFrame]:
    """Write stimuli/gentle/<story>/{align.json, transcript.txt}, the words starting where the
    story row of the task's published events starts in its audio; return the words as read."""
    pieces = story_pieces()
    starts = {}
    for sub, task, entity in NARRATIVES_RUNS:
        if task in NARRATIVES_PIECES:  # where the story starts in the audio file
            moved = NARRATIVES_MOVED.get((sub, task), 0.0)
            starts[task] = _story_start(_events(sub, task, entity)) - moved
    texts = {t: (t, pieces[i]) for t, i in NARRATIVES_PIECES.items() if t != "milkyway"}
    for condition in ("original", "vodka", "synonyms"):
        milkyway = _milkyway_variant(pieces[NARRATIVES_PIECES["milkyway"]], condition)
        texts[f"milkyway{condition}"] = ("milkyway", milkyway)
    words = {}
    for story, (task, text) in texts.items():
        table, _ = _timed(text, seed, story, lead=starts[task])
        folder = root / "stimuli" / "gentle" / story
        save_text(folder / "transcript.txt", " ".join(text) + "\n")
        stim.write_gentle(table, folder / "align.json")
        words[story] = stim.read_words(folder / "align.json", "gentle")
    return words


def _narratives_runs(words: Mapping[str, pd.DataFrame]) -> list[Run]:
    """The runs, on the scan clock their published events give: the audio starts at the first
    row's onset (earlier for the runs whose story row was moved)."""
    exclude = json.loads(_published("ds002345", "code/scan_exclude.json").read_text())
    listed = {p for subjects in exclude.values() for scans in subjects.values() for p in scans}
    runs = []
    for sub, task, entity in NARRATIVES_RUNS:
        events = _events(sub, task, entity)
        stem = _stem(sub, task, entity)
        reason = next((f"listed in code/scan_exclude.json ({p})" for p in sorted(listed)
                       if stem == p or stem.startswith(p + "_")), None)  # fmt: skip
        if task == "schema":
            onset, story, n_scan = None, task, NARRATIVES_SCHEMA_VOLUMES
            reason = reason or "the run holds several stories and movie clips (task schema)"
        else:
            onset = float(events.onset.iloc[0]) + NARRATIVES_MOVED.get((sub, task), 0.0)
            story = events[events.trial_type == "story"].stim_file.iloc[0].split("_audio")[0]
            n_scan = math.ceil((onset + words[story].offset.max() + 12.0) / NARRATIVES_TR)
        runs.append(Run(sub, story, entity or 1, onset, n_scan, excluded=reason, task=task,
                        entity=entity))  # fmt: skip
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
    """Write one fMRIPrep run (BOLD with its JSON, confounds) and the raw run's published
    sidecar and events (the story row's duration the stand-in's); return the planted ROI's
    observed signal units (rows, voxels)."""
    stem = _stem(run.subject, run.task, run.entity)
    rng = _rng(seed, "noise", run.key)
    if run.signal is None:
        run.signal = np.zeros((run.n_rows, ROI_SIZES[PLANTED["roi"]]))
    bold, seen = _volumes(g, run, baseline, rng, snr, ar1)
    confounds = _motion(rng, run.n_rows)
    z = (confounds - confounds.mean()) / confounds.std()
    nuisance = z.to_numpy() @ rng.normal(0.0, 0.3, (z.shape[1], 1))  # shared by the brain
    bold[g.mask] *= (1.0 + demo.PERCENT_PER_UNIT / 100 * nuisance[:, 0] / math.sqrt(snr)).astype(
        np.float32
    )
    raw = f"sub-{run.subject}/func/{stem}"
    _copy_published("ds002345", f"{raw}_bold.json", root)
    sidecar = json.loads(_published("ds002345", f"{raw}_bold.json").read_text())
    func = root / "derivatives" / "fmriprep" / f"sub-{run.subject}" / "func"
    name = f"{stem}_space-{SPACE}_res-native_desc-preproc_bold"
    # The scanner's TR in the header; fMRIPrep copies the raw sidecar's RepetitionTime.
    demo.save_nifti(func / f"{name}.nii.gz", demo.mni_image(bold, NARRATIVES_TR, AFFINE))
    save_json(func / f"{name}.json", {"RepetitionTime": sidecar["RepetitionTime"],
                                      "SkullStripped": False, "TaskName": run.task})  # fmt: skip
    confounds["global_signal"] = bold[g.mask].mean(axis=0)
    motion = confounds[["trans_x", "trans_y", "trans_z"]].diff().abs().sum(axis=1)
    confounds["framewise_displacement"] = motion.where(confounds.index > 0)
    _save_tsv(
        func / f"{stem}_desc-confounds_regressors.tsv",
        confounds[list(NARRATIVES_CONFOUNDS)].round(6),
    )
    events = _events(run.subject, run.task, run.entity)
    if run.task != "schema":
        story = events.trial_type == "story"
        end = run.n_scan * NARRATIVES_TR - 12.0
        events.loc[story, "duration"] = f"{end - float(events.onset[story].iloc[0]):.1f}"
    _save_tsv(root / f"{raw}_events.tsv", events)
    return seen


def _narratives_metadata(root: Path, tasks: set[str]) -> None:
    for rel in ("code/scan_exclude.json", "dataset_description.json", "participants.tsv"):
        _copy_published("ds002345", rel, root)
    for sub in sorted({sub for sub, _, _ in NARRATIVES_RUNS}):
        _copy_published("ds002345", f"sub-{sub}/sub-{sub}_scans.tsv", root)
    g = grid()
    mask = demo.mni_image(g.mask.astype(np.uint8), affine=AFFINE)
    for task in sorted(tasks):
        name = f"tpl-{SPACE}_res-{task}_desc-brain_mask.nii.gz"
        demo.save_nifti(root / "derivatives" / "afni-nosmooth" / f"tpl-{SPACE}" / name, mask)


def narratives(root: Path, words, features, seed: int, snr: float, ar1: float) -> dict:
    """Write the images, confounds, events and metadata of the Narratives stand-in."""
    g = grid()
    runs = _narratives_runs(words)
    heard = [r for r in runs if r.task != "schema"]
    plant(heard, words, features, ROI_SIZES[PLANTED["roi"]], NARRATIVES_TR, seed)
    _write_atlas(root, g)
    observed: dict[str, list] = {}
    for run in runs:
        baseline = _rng(seed, "baseline", run.subject).standard_normal(int(g.mask.sum()))
        seen = _narratives_run(root, g, run, 1000.0 * (1 + 0.05 * baseline), seed, snr, ar1)
        if not run.excluded:
            observed.setdefault(run.subject, []).append((run.signal, seen))
    _narratives_metadata(root, {r.task for r in runs})
    extra = {
        "atlas": {"image": ATLAS_IMAGE, "labels": ATLAS_LABELS},
        "story_row_moved": [f"sub-{s}_task-{t}" for s, t in NARRATIVES_MOVED],
        "only_story_nobody_else_heard": {"subject": "146", "story": "merlin"},
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
#: Subjects with a preprocessed image, named after real ones (their events onsets and sidecars
#: are the published ones: the 3 mm group 18-23, the 3.75 mm echo-2 group 39-42), and the TR
#: its header says: SPM writes 0 or 1 into its 4-D images where the sidecars say 2.
ALICE_HEADER_TR = {"18": 2.0, "22": 2.0, "23": 0.0, "39": 0.0, "41": 1.0, "42": 1.0}
#: Subjects with raw data and no preprocessed image: sub-38 has only its .mat, sub-46 and sub-52
#: nothing (their events onsets are n/a).
ALICE_MAT_ONLY = ("38",)
ALICE_RAW_ONLY = ("46", "52")
#: Subject -> voxels added to its grid (low x, high x, low y, high y, low z, high z).
ALICE_PADS = {
    "18": (0, 0, 0, 0, 0, 0),
    "22": (1, 0, 0, 1, 0, 0),
    "23": (0, 2, 1, 0, 0, 1),
    "39": (2, 1, 0, 0, 1, 0),
    "41": (1, 1, 1, 1, 0, 0),
    "42": (0, 0, 0, 0, 0, 0),
}
ALICE_SILENCE = 20.0  # leading silence of the audio file (s)


def _split_clitics(table: pd.DataFrame) -> pd.DataFrame:
    """Words with an apostrophe become two rows, the clitic untimed and written as the
    published annotations write them: without its apostrophe (``would`` ``nt``, ``they``
    ``ll``), a few with a curly one (``what`` ``’s``)."""
    rows, n = [], 0
    for word, a, b in zip(table.word, table.onset, table.offset, strict=True):
        stripped = word.rstrip(".,;:!?\"'")
        cut = len(stripped) - 3 if stripped.lower().endswith("n't") else word.find("'")
        if 0 < cut < len(word) - 1 and word.count("'") == 1:
            clitic = word[cut:].replace("'", "’" if n % 4 == 0 else "")
            rows += [(word[:cut], a, b, True), (clitic, math.nan, math.nan, False)]
            n += 1
        else:
            rows.append((word, a, b, True))
    return pd.DataFrame(rows, columns=["word", "onset", "offset", "aligned"])


def _alice_words(root: Path, seed: int) -> tuple[dict[str, pd.DataFrame], float]:
    """Write code/annotations.tsv with the published columns and line endings (CRLF); return
    the words as read and the audio's length."""
    words = [w for s in ("lighthouse", "orchard") for w in stim.story_words(demo.story_file(s))]
    table, duration = _timed(words, seed, "alice")
    lead = ALICE_SILENCE - table.onset.iloc[0]
    table[["onset", "offset"]] += lead
    path = root / "code" / "annotations.tsv"
    stim.write_annotations(_split_clitics(table), path)
    written = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    header = _published("ds002322", "code/annotations_header.tsv").read_text().strip("\r\n")
    columns = header.split("\t")
    out = written.reindex(columns=columns, fill_value="")
    save_text(path, out.to_csv(sep="\t", index=False, lineterminator="\r\n", quoting=3))
    return {"alice": stim.read_words(path, "annotations")}, duration + lead


def _alice_subject(root: Path, g: Grid, run: Run, seed: int, snr: float, ar1: float):
    """Write one subject's SPM-style image (its own grid; brain edges differ; the header's TR
    as SPM leaves it) and its .mat; return the planted ROI's observed signal units."""
    sub = f"sub-{run.subject}"
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
    demo.save_nifti(path, demo.mni_image(padded, ALICE_HEADER_TR[run.subject], affine))
    _alice_mat(root, run.subject)
    return seen


def _alice_mat(root: Path, subject: str) -> None:
    """derivatives/sub-XX/sub-XX_preprocess.mat: where the published file keeps SPM's inputs,
    a MATLAB file saying it stands in for them."""
    import io

    from scipy.io import savemat

    buffer = io.BytesIO()  # MATLAB 4 format: no creation time in its bytes
    text = "brainshape stand-in of the SPM8 preprocessing parameters"
    savemat(buffer, {"standin": text}, format="4")
    path = root / "derivatives" / f"sub-{subject}" / f"sub-{subject}_preprocess.mat"
    with atomic_path(path, suffix=".mat") as tmp:
        tmp.write_bytes(buffer.getvalue())


def _edge(mask: np.ndarray) -> np.ndarray:
    """Brain voxels with a face neighbour outside the brain."""
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask)


def alice(root: Path, words, features, duration: float, seed: int, snr: float, ar1: float):
    """Write the images, the published events and sidecars (in sub-XX/, no func/) and the
    metadata of the Alice stand-in."""
    g = grid()
    runs = []
    for sub in ALICE_HEADER_TR:
        events = pd.read_csv(_published("ds002322", f"sub-{sub}/sub-{sub}_task-alice_events.tsv"),
                             sep="\t")  # fmt: skip
        onset = float(events.onset.iloc[0])
        n_scan = math.ceil((onset + duration) / ALICE_TR) + 2
        runs.append(Run(sub, "alice", 1, onset, n_scan, removed_start=10))
    plant(runs, words, features, ROI_SIZES[PLANTED["roi"]], ALICE_TR, seed)
    _write_atlas(root, g)
    observed = {}
    for run in runs:
        seen = _alice_subject(root, g, run, seed, snr, ar1)
        observed[run.subject] = [(run.signal, seen)]
    for sub in (*ALICE_HEADER_TR, *ALICE_MAT_ONLY, *ALICE_RAW_ONLY):
        for suffix in ("bold.json", "events.tsv"):
            _copy_published("ds002322", f"sub-{sub}/sub-{sub}_task-alice_{suffix}", root)
    for sub in ALICE_MAT_ONLY:
        _alice_mat(root, sub)
    for rel in ("participants.tsv", "dataset_description.json"):
        _copy_published("ds002322", rel, root)
    extra = {
        "atlas": {"image": ATLAS_IMAGE, "labels": ATLAS_LABELS},
        "grids": {s: list(p) for s, p in ALICE_PADS.items()},
        "header_tr": ALICE_HEADER_TR,
        "raw_only": [f"sub-{s}" for s in (*ALICE_MAT_ONLY, *ALICE_RAW_ONLY)],
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
