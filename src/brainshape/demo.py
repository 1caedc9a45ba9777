"""The demo dataset: real BIDS + fMRIPrep-style files with planted, known signal.

``generate`` writes a small but complete dataset that the workflow reads like any other:

- **stimuli** (``generate_stimuli``): plausible word timings for the packaged stories (word
  duration from its length plus jitter, short gaps between words, longer pauses after
  ``, . ? !``, a few seconds of silence before the first word and at least 10 s after the last),
  written as Gentle JSON, Praat TextGrid and BIDS events; the BIDS raw dataset files.
- **BOLD** (``generate_bold``): per subject and story a 4-D float32 image on a 16 x 20 x 16 grid
  of 6 mm voxels, a brain mask, a confounds table, and one atlas of five bilateral ROIs. ROI x
  hemispheres named in ``planted`` carry a signal driven by one layer of one language model;
  the others carry none. ``ground_truth.json`` records what was planted and how well the best
  possible model can do.

Signal model of a planted ROI x hemisphere (``planted_signals``): the layer's word features
(one row per word, stamped at the word's midpoint) are Lanczos-resampled at the volume times
(``k * tr + tr / 2``), z-scored over all stories and projected on their top 16 principal
components. With ``relation: linear`` (the default) the components are scaled to unit variance
and voxel ``v`` is driven by ``scores @ (w_roi + 0.5 * w_v)`` (Gaussian weights, the same for
every subject), convolved within each run with the SPM canonical double-gamma HRF sampled at lags
``0, tr, 2 tr, ...`` and scaled to unit variance. With ``relation: shape`` the components keep
their variances and an orthonormal map whose first direction is uniform over the voxels carries
them onto the voxels (so the ROI mean is the first component), HRF-convolved and scaled to unit
variance on average over the voxels: the voxel patterns are a rotated copy of the layer's
geometry (:data:`RELATIONS`). Every in-mask
voxel then gets AR(1) noise of variance ``1 / snr``, a nuisance part (random weights on the
motion, CSF and white-matter columns of the confounds table, plus a linear drift) and a baseline
near 1000 with 0.5 % signal change per signal unit. Subjects differ only in noise, nuisance and
baseline, so they share the planted signal.
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
import logging
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from brainshape import __version__, scoring
from brainshape import stimuli as stim
from brainshape.clock import tr_times
from brainshape.encoding import lanczos_downsample
from brainshape.errors import BrainshapeError
from brainshape.io import atomic_path, save_json, save_text
from brainshape.subjects import zscore

log = logging.getLogger("brainshape.demo")

DEFAULT_STORIES = ("lighthouse", "orchard", "ferry", "glacier")

#: Which (model, variant, layer) drives which ROI x hemisphere in the default demo, and how
#: (``relation``: ``linear`` or ``shape``, see :data:`RELATIONS`).
DEFAULT_PLANTED: tuple[dict[str, Any], ...] = (
    {"roi": "STG", "hemisphere": "L", "model": "smollm2-135m", "variant": "fp32", "layer": 12},
    {"roi": "IFG", "hemisphere": "L", "model": "tiny-gpt2", "variant": "fp32", "layer": 2},
    {"roi": "AG", "hemisphere": "R", "model": "tiny-neox", "variant": "fp32", "layer": 1},
    {"roi": "MTG", "hemisphere": "R", "model": "smollm2-135m", "variant": "fp32", "layer": 18},
    {
        "roi": "PREC",
        "hemisphere": "L",
        "model": "tiny-gpt2",
        "variant": "fp32",
        "layer": 3,
        "relation": "shape",
    },
)

#: How a planted layer drives its ROI x hemisphere. ``linear``: a random linear map of the
#: layer's top principal components, each scaled to unit variance (an encoding relation: a
#: ridge model of the layer recovers it, but the map stretches some directions and adds one
#: shared by all voxels, so the voxels' geometry is not the layer's). ``shape``: the same
#: components with their own variances, mapped onto the voxels by an orthonormal map whose first
#: direction is the ROI mean (the voxel patterns are a rotated copy of the layer's geometry and
#: the ROI mean follows the layer's first component): a shape relation as well.
RELATIONS = ("linear", "shape")

#: Per-voxel signal-to-noise variance ratio. 0.5 lets a single voxel reach r near 0.58; ROI
#: means (36-48 voxels) reach about 0.97 before confound cleaning and 0.88-0.92 after it, which
#: leaves room to tell a planted layer from its neighbours (their scores differ by 0.01-0.05).
DEFAULT_SNR = 0.5
DEFAULT_AR1 = 0.3

SPACE = "MNI152NLin2009cAsym"
ROIS = ("IFG", "STG", "MTG", "AG", "PREC")
HEMISPHERES = ("L", "R")

ATLAS_IMAGE = f"derivatives/atlas/atlas-demo_space-{SPACE}_dseg.nii.gz"
ATLAS_LABELS = "derivatives/atlas/atlas-demo_dseg.tsv"
FMRIPREP = "derivatives/fmriprep"
MANIFEST = "ground_truth.json"

#: Confound columns written per run; the nuisance added to the BOLD is built from the first eight.
NUISANCE_CONFOUNDS = (
    "trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "csf", "white_matter",
)  # fmt: skip
CONFOUND_COLUMNS = (
    "global_signal", "csf", "white_matter", "framewise_displacement",
    "trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
)  # fmt: skip

# Grid: 16 x 20 x 16 voxels of 6 mm. x centres run from -45 to 45 mm in steps of 6, so no voxel
# centre lies on x == 0 and every voxel has a hemisphere.
GRID_SHAPE = (16, 20, 16)
VOXEL_MM = 6.0
AFFINE = np.array(
    [
        [VOXEL_MM, 0.0, 0.0, -45.0],
        [0.0, VOXEL_MM, 0.0, -72.0],
        [0.0, 0.0, VOXEL_MM, -30.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
_BRAIN_SEMI_AXES = np.array([7.8, 9.8, 7.6])  # voxels
# ROI centres in brain-normalised coordinates (|x| towards the ROI's hemisphere, y anterior,
# z superior; 1 = the edge of the ellipsoid) and voxels per ROI x hemisphere.
_ROI_LAYOUT = {
    "IFG": ((0.72, 0.55, 0.05), 36),
    "STG": ((0.85, 0.0, -0.05), 48),
    "MTG": ((0.80, -0.35, -0.40), 44),
    "AG": ((0.65, -0.60, 0.40), 36),
    "PREC": ((0.12, -0.55, 0.55), 40),
}

N_COMPONENTS = 16
VOXEL_WEIGHT = 0.5  # weight of the voxel-specific part of the voxel's feature weights
LANCZOS_WINDOW = 3
HRF_LENGTH_S = 32.0
BASELINE = 1000.0
PERCENT_PER_UNIT = 0.5  # % of baseline per unit of (unit-variance) signal
NUISANCE_RATIO = 1.0  # std of the confound-driven nuisance / std of the noise, per voxel
DRIFT_RATIO = 1.5  # mean half-range of the linear drift / std of the noise

HRF_DESCRIPTION = (
    "SPM canonical double gamma, own implementation: gamma.pdf(t, 6) - gamma.pdf(t, 16) / 6 "
    "(t in s, scale 1 s), sampled at lags 0, tr, 2 tr, ... up to 32 s and normalised to sum 1; "
    "convolved causally within each run"
)
TIME_CONVENTION = (
    "volume k of a run is stamped at k * tr + tr / 2 s from the start of the run; words are "
    "stamped at their midpoint (onset + offset) / 2 and Lanczos-resampled (window 3) at the "
    "volume times"
)

_FMRIPREP_DESCRIPTION = {
    "Name": "brainshape demo: fMRIPrep-style derivatives",
    "BIDSVersion": "1.10.0",
    "DatasetType": "derivative",
    "GeneratedBy": [
        {
            "Name": "brainshape",
            "Description": "synthetic BOLD with planted signal (brainshape.demo)",
        }
    ],
}
#: Names of the expected correlations of the manifest (expected_r_<name>).
_R_NAMES = ("roi_mean", "voxel", "roi_mean_cleaned", "voxel_cleaned")


# --- small helpers ------------------------------------------------------------------------------


def _code(text: str) -> int:
    """A stable integer for a name, so random streams do not depend on list order."""
    return zlib.crc32(str(text).encode("utf-8"))


def _rng(seed: int, stream: int, *names: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream, *(_code(n) for n in names)])


def subject_labels(subjects: int | Sequence[str]) -> list[str]:
    """Subject labels: ``n`` -> ``["01", ..., "n"]`` (zero-padded); a sequence is kept as is."""
    if isinstance(subjects, bool):
        raise BrainshapeError(f"subjects must be a count or a list of labels, got {subjects!r}")
    if isinstance(subjects, int | np.integer):
        if subjects < 1:
            raise BrainshapeError(f"subjects must be at least 1, got {subjects}")
        width = max(2, len(str(int(subjects))))
        return [f"{i:0{width}d}" for i in range(1, int(subjects) + 1)]
    labels = [str(s) for s in subjects]
    bad = [s for s in labels if not s.isalnum() or not s.isascii()]
    if not labels or bad:
        raise BrainshapeError(
            f"subject labels must be a non-empty list of letters and digits (BIDS sub-<label>); "
            f"got {labels!r}"
        )
    if len(set(labels)) != len(labels):
        raise BrainshapeError(f"subject labels repeat: {labels!r}; give each subject once")
    return labels


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise BrainshapeError(f"demo {name} must be a positive number, got {value}")
    return value


def story_file(story: str) -> Path:
    folder = importlib.resources.files("brainshape") / "data" / "stories"
    path = Path(str(folder / f"{story}.txt"))
    if not path.is_file():
        known = sorted(p.stem for p in Path(str(folder)).glob("*.txt"))
        raise BrainshapeError(
            f"no packaged story '{story}' (looked for {path}); choose among: {', '.join(known)}"
        )
    return path


def story_shape(story: str, seed: int, tr: float) -> tuple[int, int]:
    """(volumes of its run, words) of a packaged story as :func:`generate` times it."""
    words = stim.story_words(story_file(story))
    _, duration = word_timings(words, _rng(seed, 1, story))
    return n_volumes(duration, tr), len(words)


def n_volumes(duration: float, tr: float) -> int:
    """Volumes that cover ``duration`` seconds of audio: ``ceil(duration / tr)``."""
    # Rounding first keeps 300.0 / 2.0 from becoming 151 through a representation error.
    return int(math.ceil(round(duration / tr, 9)))


# --- stimuli ------------------------------------------------------------------------------------

_CLAUSE_END = (",", ";", ":")
_SENTENCE_END = (".", "?", "!")
_CLOSERS = "\"')]}\u201d\u2019"


def word_timings(words: Sequence[str], rng: np.random.Generator) -> tuple[pd.DataFrame, float]:
    """Synthetic timings for ``words``: (table with word, onset, offset in s; audio length in s).

    Times are whole centiseconds (as an aligner reports them). A word lasts 0.1 s plus 0.05 s
    per letter, times a jitter of +-15 %; words are 0.01-0.08 s apart, 0.25-0.45 s after a
    clause mark and 0.5-0.9 s after a sentence end. The audio starts with 2-4 s of silence and
    ends 10-12 s after the last word.
    """
    if not words:
        raise BrainshapeError("a story needs at least one word to be timed")
    t = int(rng.integers(200, 401))  # centiseconds
    onsets, offsets = [], []
    for word in words:
        letters = sum(ch.isalnum() for ch in word)
        duration = (0.10 + 0.05 * max(letters, 1)) * rng.uniform(0.85, 1.15)
        duration_cs = max(5, int(round(100 * duration)))
        onsets.append(t)
        offsets.append(t + duration_cs)
        end = word.rstrip(_CLOSERS)[-1:]  # "said." and 'said."' both end a sentence
        if end in _SENTENCE_END:
            gap = rng.uniform(0.5, 0.9)
        elif end in _CLAUSE_END:
            gap = rng.uniform(0.25, 0.45)
        else:
            gap = rng.uniform(0.01, 0.08)
        t = t + duration_cs + max(1, int(round(100 * gap)))
    tail = int(rng.integers(1000, 1201))
    table = pd.DataFrame(
        {
            "word": list(words),
            "onset": np.asarray(onsets, dtype=np.float64) / 100,
            "offset": np.asarray(offsets, dtype=np.float64) / 100,
        }
    )
    return table, (offsets[-1] + tail) / 100


def _dataset_description() -> dict[str, Any]:
    return {
        "Name": "brainshape demo: story listening with planted signal",
        "BIDSVersion": "1.10.0",
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["brainshape"],
        "GeneratedBy": [{"Name": "brainshape", "Version": __version__}],
    }


def _readme(stories: Sequence[str], subjects: Sequence[str], tr: float) -> str:
    return (
        "brainshape demo dataset\n"
        "=======================\n\n"
        "A synthetic story-listening fMRI dataset written by `brainshape demo-data`. The BOLD\n"
        "images are generated, not measured: selected ROI x hemispheres carry a signal driven by\n"
        "one layer of a language model, every in-mask voxel carries AR(1) noise and nuisance\n"
        "(motion/CSF/white-matter confounds, linear drift). ground_truth.json says what was\n"
        "planted where and the best correlation any model can reach.\n\n"
        f"Subjects: {', '.join('sub-' + s for s in subjects)}\n"
        f"Stories (tasks): {', '.join(stories)}\n"
        f"Repetition time: {tr:g} s\n\n"
        "stimuli/<story>/ holds the transcript and the word timings (Gentle align.json, Praat\n"
        "TextGrid); sub-<label>/func/ the BIDS events; derivatives/fmriprep/ the preprocessed\n"
        "BOLD, brain masks and confounds (MNI152NLin2009cAsym); derivatives/atlas/ the ROI\n"
        "atlas (hemisphere = sign of world x).\n"
    )


def generate_stimuli(
    root: str | os.PathLike,
    *,
    stories: Sequence[str] = DEFAULT_STORIES,
    subjects: int | Sequence[str] = 4,
    tr: float = 2.0,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Time the packaged stories and write the BIDS raw side of the dataset under ``root``.

    Returns story -> words table (columns ``word``, ``onset``, ``offset`` in seconds from the
    start of the run). Writes ``dataset_description.json``, ``participants.tsv``, ``README``,
    ``task-<story>_bold.json`` (TR), ``stimuli/<story>/{transcript.txt, align.json,
    <story>.TextGrid}``, ``sub-<label>/func/sub-<label>_task-<story>_events.tsv``, and a first
    ``ground_truth.json`` holding ``n_trs`` (volumes per story: ``ceil(audio length / tr)``) and
    ``audio_duration`` (s), which ``generate_bold`` reads and completes.
    """
    root = Path(root)
    tr = _check_positive("tr", tr)
    labels = subject_labels(subjects)
    stories = [str(s) for s in stories]
    if not stories or len(set(stories)) != len(stories):
        raise BrainshapeError(f"demo stories must be a non-empty list without repeats: {stories}")

    words: dict[str, pd.DataFrame] = {}
    n_trs: dict[str, int] = {}
    durations: dict[str, float] = {}
    for story in stories:
        source = story_file(story)
        table, duration = word_timings(stim.story_words(source), _rng(seed, 1, story))
        words[story] = table
        durations[story] = duration
        n_trs[story] = n_volumes(duration, tr)
        folder = root / "stimuli" / story
        save_text(folder / "transcript.txt", source.read_text(encoding="utf-8"))
        stim.write_gentle(table, folder / "align.json")
        stim.write_textgrid(table, folder / f"{story}.TextGrid", duration)
        for sub in labels:
            stim.write_events(
                table, root / f"sub-{sub}" / "func" / f"sub-{sub}_task-{story}_events.tsv"
            )
        save_json(root / f"task-{story}_bold.json", {"TaskName": story, "RepetitionTime": tr})

    save_json(root / "dataset_description.json", _dataset_description())
    save_text(root / "participants.tsv", "participant_id\n" + "".join(f"sub-{s}\n" for s in labels))
    save_text(root / "README", _readme(stories, labels, tr))
    save_json(
        root / MANIFEST,
        {
            "seed": int(seed),
            "tr": tr,
            "subjects": labels,
            "stories": stories,
            "n_trs": n_trs,
            "audio_duration": durations,
        },
    )
    return words


# --- atlas --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoAtlas:
    """The demo grid: brain mask, ROI labels and where each ROI x hemisphere lies.

    ``mask`` is boolean ``(X, Y, Z)``; ``labels`` int ``(X, Y, Z)`` with 0 = no ROI and ``i + 1``
    for ``rois[i]``; ``voxels[(roi, hemi)]`` the indices of that ROI x hemisphere's voxels into
    ``mask``'s in-mask voxels (C order, as ``data[mask]``).
    """

    affine: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    rois: tuple[str, ...]
    voxels: dict[tuple[str, str], np.ndarray]

    @property
    def n_mask(self) -> int:
        return int(self.mask.sum())


def demo_atlas() -> DemoAtlas:
    """Build the fixed demo grid (no randomness: the same for every seed)."""
    ijk = np.indices(GRID_SHAPE).reshape(3, -1).T.astype(np.float64)  # C order
    centre = (np.asarray(GRID_SHAPE) - 1) / 2
    norm = (ijk - centre) / _BRAIN_SEMI_AXES
    inside = (norm**2).sum(axis=1) <= 1.0
    mask = inside.reshape(GRID_SHAPE)
    x_world = ijk @ AFFINE[0, :3] + AFFINE[0, 3]

    flat_labels = np.zeros(ijk.shape[0], dtype=np.int64)
    mask_index = np.cumsum(inside) - 1  # flat voxel -> position among in-mask voxels
    voxels: dict[tuple[str, str], np.ndarray] = {}
    for label, roi in enumerate(ROIS, start=1):
        centre_norm, size = _ROI_LAYOUT[roi]
        for hemi in HEMISPHERES:
            side = -1.0 if hemi == "L" else 1.0
            target = centre + np.asarray(centre_norm) * [side, 1.0, 1.0] * _BRAIN_SEMI_AXES
            free = inside & (flat_labels == 0) & (side * x_world > 0)
            candidates = np.flatnonzero(free)
            dist = np.sqrt(((ijk[candidates] - target) ** 2).sum(axis=1))
            chosen = np.sort(candidates[np.argsort(dist, kind="stable")[:size]])
            flat_labels[chosen] = label
            voxels[(roi, hemi)] = mask_index[chosen]
    return DemoAtlas(
        affine=AFFINE.copy(),
        mask=mask,
        labels=flat_labels.reshape(GRID_SHAPE),
        rois=ROIS,
        voxels=voxels,
    )


# --- signal -------------------------------------------------------------------------------------


def spm_hrf(tr: float, length: float = HRF_LENGTH_S) -> np.ndarray:
    """SPM canonical HRF sampled at lags ``0, tr, 2 tr, ...`` (<= ``length`` s), sum 1."""
    # scipy.stats and scipy.signal here, not at the top: every Snakemake start imports this
    # module (its atlas names), and the two take about a second to import.
    from scipy.stats import gamma

    lags = np.arange(int(math.floor(length / tr)) + 1) * tr
    h = gamma.pdf(lags, 6.0) - gamma.pdf(lags, 16.0) / 6.0
    return h / h.sum()


def convolved(drives: Mapping[str, np.ndarray], tr: float) -> dict[str, np.ndarray]:
    """Each story's drive (n_trs, columns) convolved with the HRF (:func:`spm_hrf`) within the
    story's run."""
    from scipy.signal import lfilter

    hrf = spm_hrf(tr)
    return {s: lfilter(hrf, [1.0], drive, axis=0) for s, drive in drives.items()}


def layer_scores(
    features: Mapping[str, np.ndarray],
    words: Mapping[str, pd.DataFrame],
    n_trs: Mapping[str, int],
    tr: float,
    n_components: int = N_COMPONENTS,
    whiten: bool = True,
) -> dict[str, np.ndarray]:
    """Principal-component scores of one layer at the volume times.

    ``features[story]`` is (n_words, hidden); the result per story is (n_trs, k) float64 with
    ``k = min(n_components, rank)``. Columns are z-scored over all stories together (constant
    columns dropped) before the PCA, so the components are the layer's own dominant directions.
    ``whiten``: each score has unit variance; otherwise each keeps its component's variance (the
    share of the z-scored columns' variance it explains, times their number).
    """
    stories = list(words)
    # Stamped as the encoding stage stamps them: the middle of each word.
    times = stim.word_times(stim.stack_words(words))
    resampled = []
    for story in stories:
        feats = np.asarray(features[story], dtype=np.float64)
        if feats.ndim != 2 or feats.shape[0] != len(words[story]):
            raise BrainshapeError(
                f"planted features of story '{story}' have shape {feats.shape}; expected "
                f"({len(words[story])}, hidden): one row per word"
            )
        volumes = tr_times(int(n_trs[story]), tr)
        resampled.append(lanczos_downsample(feats, times[story], volumes, window=LANCZOS_WINDOW))
    stacked = np.concatenate(resampled, axis=0)
    std = stacked.std(axis=0)
    keep = std > 1e-12 * max(1.0, float(np.abs(stacked).max()))
    if not keep.any():
        raise BrainshapeError("planted features are constant over time; no signal can be planted")
    z = (stacked[:, keep] - stacked[:, keep].mean(axis=0)) / std[keep]
    u, singular, vt = np.linalg.svd(z, full_matrices=False)
    rank = int((singular > singular[0] * 1e-10).sum())
    k = min(n_components, rank)
    # Fix the sign of each component (SVD leaves it free) so reruns give the same data.
    signs = np.sign(vt[np.arange(k), np.abs(vt[:k]).argmax(axis=1)])
    scores = u[:, :k] * signs * math.sqrt(z.shape[0])
    if not whiten:
        scores = scores * singular[:k] / math.sqrt(z.shape[0])
    bounds = np.cumsum([0] + [int(n_trs[s]) for s in stories])
    return {story: scores[bounds[i] : bounds[i + 1]] for i, story in enumerate(stories)}


def voxel_signals(
    scores: Mapping[str, np.ndarray],
    n_voxels: int,
    tr: float,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Noiseless voxel signals of one ROI x hemisphere, story -> (n_trs, n_voxels) float64.

    Drive ``scores @ (w_roi + 0.5 * w_v)`` (Gaussian weights from ``rng``), convolved with the
    HRF within each run, then z-scored per voxel over all stories.
    """
    k = next(iter(scores.values())).shape[1]
    w_roi = rng.standard_normal(k)
    w_vox = rng.standard_normal((k, n_voxels))
    weights = w_roi[:, None] + VOXEL_WEIGHT * w_vox
    runs = convolved({s: sc @ weights for s, sc in scores.items()}, tr)
    stacked = np.concatenate(list(runs.values()), axis=0)
    mean, std = stacked.mean(axis=0), stacked.std(axis=0)
    return {s: (r - mean) / std for s, r in runs.items()}


def shape_voxel_signals(
    scores: Mapping[str, np.ndarray],
    n_voxels: int,
    tr: float,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Noiseless voxel signals of a ``shape`` relation, story -> (n_trs, n_voxels) float64.

    ``scores`` keep their components' variances (``layer_scores(..., whiten=False)``). An
    orthonormal map (k directions in voxel space, the first uniform) carries them onto the
    voxels, times ``sqrt(n_voxels)`` so the ROI mean equals the first component; convolved with
    the HRF within each run, then scaled by one factor so the voxels' mean variance over all
    stories is 1 (one factor keeps the geometry).
    """
    k = next(iter(scores.values())).shape[1]
    if n_voxels < k:
        raise BrainshapeError(f"a shape relation needs at least {k} voxels, got {n_voxels}")
    basis = np.concatenate([np.ones((n_voxels, 1)), rng.standard_normal((n_voxels, k - 1))], 1)
    q, _ = np.linalg.qr(basis)
    q *= np.sign(q[0, 0])  # the first direction +1/sqrt(n), not -1/sqrt(n)
    runs = convolved({s: sc @ q.T * math.sqrt(n_voxels) for s, sc in scores.items()}, tr)
    stacked = np.concatenate(list(runs.values()), axis=0)
    centre = stacked.mean(axis=0)
    scale = math.sqrt(float(((stacked - centre) ** 2).mean()))
    return {s: (r - centre) / scale for s, r in runs.items()}


def _check_planted(planted: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    entries = []
    seen = set()
    for i, entry in enumerate(planted):
        missing = [k for k in ("roi", "hemisphere", "model", "variant", "layer") if k not in entry]
        if missing:
            raise BrainshapeError(f"demo planted[{i}] lacks key(s) {missing}")
        roi, hemi = str(entry["roi"]), str(entry["hemisphere"])
        if roi not in ROIS:
            raise BrainshapeError(
                f"demo planted[{i}].roi '{roi}' is not a demo ROI; choose among {', '.join(ROIS)}"
            )
        if hemi not in HEMISPHERES:
            raise BrainshapeError(f"demo planted[{i}].hemisphere '{hemi}' must be 'L' or 'R'")
        if (roi, hemi) in seen:
            raise BrainshapeError(
                f"demo planted[{i}] plants {roi} {hemi} a second time; give each ROI x "
                "hemisphere at most one entry"
            )
        seen.add((roi, hemi))
        relation = str(entry.get("relation", "linear"))
        if relation not in RELATIONS:
            raise BrainshapeError(
                f"demo planted[{i}].relation '{relation}' is not one of {', '.join(RELATIONS)}"
            )
        entries.append(
            {
                "roi": roi,
                "hemisphere": hemi,
                "model": str(entry["model"]),
                "variant": str(entry["variant"]),
                "layer": int(entry["layer"]),
                "relation": relation,
            }
        )
    return entries


def _key(entry: Mapping[str, Any]) -> tuple[str, str, int]:
    return (str(entry["model"]), str(entry["variant"]), int(entry["layer"]))


def planted_signals(
    words: Mapping[str, pd.DataFrame],
    planted_features: Mapping[tuple[str, str, int], Mapping[str, np.ndarray]],
    planted: Sequence[Mapping[str, Any]],
    n_trs: Mapping[str, int],
    tr: float,
    seed: int,
    atlas: DemoAtlas | None = None,
) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """Noiseless signal of every voxel of every planted ROI x hemisphere.

    Returns (roi, hemisphere) -> story -> (n_trs, n_voxels) float64, unit variance per voxel
    over all stories, voxels in the order of ``atlas.voxels[(roi, hemisphere)]``. The same for
    every subject.
    """
    atlas = atlas or demo_atlas()
    out: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    scores_cache: dict[tuple[str, str, int, bool], dict[str, np.ndarray]] = {}
    for entry in _check_planted(planted):
        key = _key(entry)
        if key not in planted_features:
            raise BrainshapeError(
                f"no planted features for model '{key[0]}' variant '{key[1]}' layer {key[2]} "
                f"({entry['roi']} {entry['hemisphere']}); compute them with planted_features_for"
            )
        missing = [s for s in words if s not in planted_features[key]]
        if missing:
            raise BrainshapeError(
                f"planted features of model '{key[0]}' variant '{key[1]}' layer {key[2]} lack "
                f"stories {missing}"
            )
        linear = entry["relation"] == "linear"
        if (*key, linear) not in scores_cache:
            scores_cache[(*key, linear)] = layer_scores(
                planted_features[key], words, n_trs, tr, whiten=linear
            )
        roi_hemi = (entry["roi"], entry["hemisphere"])
        make = voxel_signals if linear else shape_voxel_signals
        out[roi_hemi] = make(
            scores_cache[(*key, linear)],
            atlas.voxels[roi_hemi].size,
            tr,
            _rng(seed, 2, entry["roi"], entry["hemisphere"]),
        )
    return out


# --- nuisance -----------------------------------------------------------------------------------


def _ar1(rng: np.random.Generator, n_trs: int, n: int, coef: float) -> np.ndarray:
    """Stationary unit-variance AR(1) series, (n_trs, n)."""
    innovations = rng.standard_normal((n_trs, n))
    out = np.empty_like(innovations)
    out[0] = innovations[0]
    scale = math.sqrt(1.0 - coef**2)
    for t in range(1, n_trs):
        out[t] = coef * out[t - 1] + scale * innovations[t]
    return out


def _motion_and_tissue(rng: np.random.Generator, n_trs: int) -> pd.DataFrame:
    """Motion (mm, rad), CSF and white-matter mean signals of one run, rounded as written."""
    # Head position wanders around a fixed offset (AR(1) close to a random walk, as in scans).
    trans = 0.15 * _ar1(rng, n_trs, 3, 0.9) + rng.normal(0.0, 0.2, 3)
    rot = 2e-3 * _ar1(rng, n_trs, 3, 0.9) + rng.normal(0.0, 2e-3, 3)
    csf = 1200.0 + 15.0 * _ar1(rng, n_trs, 1, 0.8)[:, 0]
    wm = 950.0 + 6.0 * _ar1(rng, n_trs, 1, 0.9)[:, 0]
    table = pd.DataFrame(
        {
            "trans_x": trans[:, 0],
            "trans_y": trans[:, 1],
            "trans_z": trans[:, 2],
            "rot_x": rot[:, 0],
            "rot_y": rot[:, 1],
            "rot_z": rot[:, 2],
            "csf": csf,
            "white_matter": wm,
        }
    )
    # The nuisance is built from the values exactly as the table stores them.
    return table.round(6)


def _framewise_displacement(table: pd.DataFrame) -> np.ndarray:
    """Power et al. FD (mm): rotations as arc length on a 50 mm sphere; n/a (NaN) first."""
    trans = table[["trans_x", "trans_y", "trans_z"]].to_numpy()
    rot = table[["rot_x", "rot_y", "rot_z"]].to_numpy()
    fd = np.abs(np.diff(trans, axis=0)).sum(axis=1) + 50.0 * np.abs(np.diff(rot, axis=0)).sum(
        axis=1
    )
    return np.concatenate([[np.nan], fd])


@dataclass
class _Run:
    """One generated run, in signal units before the baseline (n_trs, n_mask)."""

    signal: np.ndarray  # noiseless planted signal (0 outside planted ROIs)
    noise: np.ndarray
    nuisance: np.ndarray
    confounds: pd.DataFrame  # the eight nuisance columns


def _simulate_run(
    rng: np.random.Generator,
    signal: np.ndarray,
    snr: float,
    ar1: float,
) -> _Run:
    n_trs, n_mask = signal.shape
    noise_sd = 1.0 / math.sqrt(snr)
    confounds = _motion_and_tissue(rng, n_trs)
    conf = zscore(confounds[list(NUISANCE_CONFOUNDS)].to_numpy())
    n_conf = conf.shape[1]
    shared = rng.standard_normal(n_conf)
    own = rng.standard_normal((n_conf, n_mask))
    beta = (shared[:, None] + VOXEL_WEIGHT * own) / math.sqrt(n_conf * (1 + VOXEL_WEIGHT**2))
    ramp = np.linspace(-1.0, 1.0, n_trs)[:, None]
    drift = ramp * rng.normal(DRIFT_RATIO, 0.5 * DRIFT_RATIO, n_mask)
    nuisance = noise_sd * (NUISANCE_RATIO * conf @ beta + drift)
    noise = noise_sd * _ar1(rng, n_trs, n_mask, ar1)
    return _Run(signal=signal, noise=noise, nuisance=nuisance, confounds=confounds)


def _baseline(rng: np.random.Generator, atlas: DemoAtlas) -> np.ndarray:
    """Per-voxel baseline near 1000 (smooth +-5 % pattern), (n_mask,)."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(GRID_SHAPE), sigma=2.0)
    field = field / field[atlas.mask].std()
    return BASELINE * (1.0 + 0.05 * field[atlas.mask])


# --- writing ------------------------------------------------------------------------------------


def save_nifti(path: str | os.PathLike, img: nib.Nifti1Image) -> None:
    """Write ``img`` as .nii.gz with reproducible bytes (gzip header time 0) atomically."""
    data = gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def mni_image(
    data: np.ndarray, tr: float | None = None, affine: np.ndarray = AFFINE
) -> nib.Nifti1Image:
    """A NIfTI image of ``data`` in MNI space (sform and qform), mm and s units, and with ``tr``
    the repetition time as its fourth zoom: how the demo and the stand-ins write images."""
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code="mni")
    img.set_qform(affine, code="mni")
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm", "sec")
    if tr is not None:
        img.header.set_zooms((VOXEL_MM, VOXEL_MM, VOXEL_MM, float(tr)))
    return img


def _save_tsv(path: Path, table: pd.DataFrame, float_format: str | None = None) -> None:
    text = table.to_csv(
        sep="\t", index=False, na_rep="n/a", lineterminator="\n", float_format=float_format
    )
    save_text(path, text)


def _write_atlas(root: Path, atlas: DemoAtlas) -> None:
    save_nifti(root / ATLAS_IMAGE, mni_image(atlas.labels.astype(np.uint8)))
    labels = pd.DataFrame({"index": np.arange(1, len(atlas.rois) + 1), "name": list(atlas.rois)})
    _save_tsv(root / ATLAS_LABELS, labels)
    save_json(
        root / "derivatives" / "atlas" / "dataset_description.json",
        {
            "Name": "brainshape demo atlas",
            "BIDSVersion": "1.10.0",
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "brainshape"}],
        },
    )


def _regress_out(data: np.ndarray, confounds: pd.DataFrame) -> np.ndarray:
    """Residuals of ``data`` (n_trs, n) after an intercept, a linear trend and the confounds."""
    n_trs = data.shape[0]
    design = np.column_stack(
        [np.ones(n_trs), np.linspace(-1.0, 1.0, n_trs), zscore(confounds.to_numpy())]
    )
    coef, *_ = np.linalg.lstsq(design, data, rcond=None)
    return data - design @ coef


def _centred(runs: Sequence[np.ndarray]) -> np.ndarray:
    # Each run is centred on its own, as the fMRI stage cleans runs one at a time.
    return np.concatenate([r - r.mean(axis=0) for r in runs], axis=0)


def generate_bold(
    root: str | os.PathLike,
    words: Mapping[str, pd.DataFrame],
    planted_features: Mapping[tuple[str, str, int], Mapping[str, np.ndarray]],
    *,
    subjects: int | Sequence[str] = 4,
    tr: float = 2.0,
    seed: int = 0,
    snr: float = DEFAULT_SNR,
    ar1: float = DEFAULT_AR1,
    planted: Sequence[Mapping[str, Any]] = DEFAULT_PLANTED,
    n_trs: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Write the fMRIPrep-style derivatives, the atlas and ``ground_truth.json``; return it.

    ``words``: story -> words table (``generate_stimuli``); ``planted_features``: (model,
    variant, layer) -> story -> (n_words, hidden) for every entry of ``planted`` (dicts with
    roi, hemisphere, model, variant, layer). ``n_trs``: volumes per story; by default read
    from the ``ground_truth.json`` that ``generate_stimuli`` wrote under ``root``. ``snr`` is
    the per-voxel signal-to-noise variance ratio, ``ar1`` the noise's AR(1) coefficient.
    """
    root = Path(root)
    tr = _check_positive("tr", tr)
    snr = _check_positive("snr", snr)
    ar1 = float(ar1)
    if not 0 <= ar1 < 1:
        raise BrainshapeError(f"demo ar1 must lie in [0, 1), got {ar1}")
    labels = subject_labels(subjects)
    entries = _check_planted(planted)
    stories = list(words)
    manifest_path = root / MANIFEST
    previous = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    n_trs = _story_volumes(stories, n_trs, previous, manifest_path, root)

    atlas = demo_atlas()
    signals = planted_signals(words, planted_features, entries, n_trs, tr, seed, atlas)
    _write_atlas(root, atlas)
    save_json(root / FMRIPREP / "dataset_description.json", _FMRIPREP_DESCRIPTION)
    r: dict[str, dict[tuple[str, str], list[float]]] = {
        n: {k: [] for k in signals} for n in _R_NAMES
    }
    for sub in labels:
        for name, values in _simulate_subject(
            root, sub, n_trs, signals, atlas, tr=tr, seed=seed, snr=snr, ar1=ar1
        ).items():
            for roi_hemi, value in values.items():
                r[name][roi_hemi].append(value)
    _write_signal_series(root, stories, n_trs, signals)
    manifest = {
        **_manifest_text(),
        "seed": int(seed),
        "tr": tr,
        "snr": snr,
        "ar1": ar1,
        "subjects": labels,
        "stories": stories,
        "n_trs": n_trs,
        **({"audio_duration": previous["audio_duration"]} if "audio_duration" in previous else {}),
        "space": SPACE,
        "rois": list(atlas.rois),
        "atlas": {"image": ATLAS_IMAGE, "labels": ATLAS_LABELS},
        "signal_timeseries": "derivatives/groundtruth/task-<story>_desc-signal_timeseries.tsv "
        "(noiseless ROI-mean signal per volume, column <roi>-<hemisphere>)",
        "planted": _planted_manifest(entries, atlas, r, labels),
        "null": [
            {"roi": roi, "hemisphere": hemi, "n_voxels": int(atlas.voxels[(roi, hemi)].size)}
            for roi in atlas.rois
            for hemi in HEMISPHERES
            if (roi, hemi) not in signals
        ],
    }
    save_json(manifest_path, manifest)
    return manifest


def _story_volumes(stories, n_trs, previous, manifest_path, root) -> dict[str, int]:
    """Volumes per story: ``n_trs`` as given, else what ``generate_stimuli`` recorded."""
    if n_trs is None:
        if "n_trs" not in previous:
            raise BrainshapeError(
                f"{manifest_path} holds no n_trs; run generate_stimuli on {root} first or pass "
                "n_trs (volumes per story)"
            )
        n_trs = previous["n_trs"]
    missing = [s for s in stories if s not in n_trs]
    if missing:
        raise BrainshapeError(f"n_trs lacks stories {missing}; give the volumes of every story")
    return {s: int(n_trs[s]) for s in stories}


def _write_signal_series(root: Path, stories, n_trs, signals) -> None:
    for story in stories:
        series = {f"{roi}-{hemi}": s[story].mean(axis=1) for (roi, hemi), s in signals.items()}
        table = pd.DataFrame(series, index=range(n_trs[story]))
        _save_tsv(
            root / "derivatives" / "groundtruth" / f"task-{story}_desc-signal_timeseries.tsv",
            table.round(8),
        )


def _planted_manifest(entries, atlas, r, labels) -> list[dict[str, Any]]:
    out = []
    for entry in entries:
        roi_hemi = (entry["roi"], entry["hemisphere"])
        out.append(
            {
                **entry,
                "n_voxels": int(atlas.voxels[roi_hemi].size),
                **{f"expected_r_{n}": round(float(np.mean(r[n][roi_hemi])), 4) for n in _R_NAMES},
                "expected_r_by_subject": {
                    sub: {n: round(r[n][roi_hemi][i], 4) for n in _R_NAMES}
                    for i, sub in enumerate(labels)
                },
            }
        )
    return out


def _manifest_text() -> dict[str, str]:
    """The ground truth's descriptions of what was planted and how."""
    return {
        "description": (
            "Planted signal of the brainshape demo dataset. expected_r_roi_mean: mean over "
            "subjects of the Pearson r between the noiseless ROI-mean signal and the ROI mean "
            "of the generated BOLD with the added nuisance and baseline removed (all volumes, "
            "each run centred): the best any model can reach. expected_r_voxel: the same for "
            "single voxels, averaged over the ROI's voxels. The *_cleaned values instead "
            "regress the eight nuisance confound columns and a linear trend out of the BOLD of "
            "each run (as the fMRI stage does), which also removes the part of the signal those "
            "slow regressors happen to share: what a pipeline can reach in practice. "
            "expected_r_by_subject gives all four per subject."
        ),
        "time_convention": TIME_CONVENTION,
        "hrf": HRF_DESCRIPTION,
        "signal": (
            f"per story: Lanczos-resampled layer features, z-scored over all stories, top "
            f"{N_COMPONENTS} principal components. relation linear: the components as "
            f"unit-variance scores; voxel v is driven by scores @ (w_roi + {VOXEL_WEIGHT} * w_v) "
            "(Gaussian w, same for all subjects), convolved with the HRF within each run, unit "
            "variance per voxel over all stories (an encoding relation; the voxels' geometry is "
            "not the layer's). relation shape: the components keep their variances and an "
            "orthonormal map (first direction uniform over the voxels, so the ROI mean is the "
            "first component) carries them onto the voxels, convolved with the HRF, one scale "
            "factor for unit mean variance per voxel (the voxel patterns are a rotated copy of "
            "the layer's geometry, up to the HRF's smoothing)"
        ),
        "noise": "AR(1) with coefficient ar1, variance 1 / snr per voxel, independent voxels",
        "nuisance": (
            "random per-voxel weights (shared part + voxel part) on the z-scored confound "
            f"columns {', '.join(NUISANCE_CONFOUNDS)}, plus a linear drift; then "
            f"bold = baseline * (1 + {PERCENT_PER_UNIT / 100} * (signal + noise + nuisance)) "
            f"with a baseline near {BASELINE:g}"
        ),
    }


def _simulate_subject(
    root: Path,
    sub: str,
    n_trs: Mapping[str, int],
    signals: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
    atlas: DemoAtlas,
    *,
    tr: float,
    seed: int,
    snr: float,
    ar1: float,
) -> dict[str, dict[tuple[str, str], float]]:
    """Write every run of one subject; return the subject's r values (see the manifest)."""
    baseline = _baseline(_rng(seed, 4, sub), atlas)
    mask_img = mni_image(atlas.mask.astype(np.uint8))
    truth: dict[tuple[str, str], list[np.ndarray]] = {k: [] for k in signals}
    clean: dict[tuple[str, str], list[np.ndarray]] = {k: [] for k in signals}
    cleaned: dict[tuple[str, str], list[np.ndarray]] = {k: [] for k in signals}
    for story, n in n_trs.items():
        signal = np.zeros((n, atlas.n_mask))
        for roi_hemi, per_story in signals.items():
            signal[:, atlas.voxels[roi_hemi]] = per_story[story]
        run = _simulate_run(_rng(seed, 3, sub, story), signal, snr, ar1)
        units = run.signal + run.noise + run.nuisance
        bold = (baseline * (1.0 + PERCENT_PER_UNIT / 100 * units)).astype(np.float32)
        for roi_hemi in signals:
            idx = atlas.voxels[roi_hemi]
            truth[roi_hemi].append(run.signal[:, idx])
            clean[roi_hemi].append(run.signal[:, idx] + run.noise[:, idx])
            cleaned[roi_hemi].append(_regress_out(units[:, idx], run.confounds))
        _write_run(root / FMRIPREP, sub, story, bold, run.confounds, atlas, mask_img, tr)
    r: dict[str, dict[tuple[str, str], float]] = {n: {} for n in _R_NAMES}
    for roi_hemi in signals:
        t = _centred(truth[roi_hemi])
        for suffix, observed in (("", clean), ("_cleaned", cleaned)):
            o = _centred(observed[roi_hemi])
            r_mean = scoring.pearson(t.mean(axis=1, keepdims=True), o.mean(axis=1, keepdims=True))[
                0
            ]
            r["roi_mean" + suffix][roi_hemi] = float(r_mean)
            r["voxel" + suffix][roi_hemi] = float(scoring.pearson(t, o).mean())
    return r


def _write_run(
    fmriprep: Path,
    sub: str,
    story: str,
    bold: np.ndarray,
    confounds: pd.DataFrame,
    atlas: DemoAtlas,
    mask_img: nib.Nifti1Image,
    tr: float,
) -> None:
    n_trs = bold.shape[0]
    func = fmriprep / f"sub-{sub}" / "func"
    stem = f"sub-{sub}_task-{story}"
    volume = np.zeros((*GRID_SHAPE, n_trs), dtype=np.float32)
    volume[atlas.mask] = bold.T
    save_nifti(func / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz", mni_image(volume, tr))
    save_json(
        func / f"{stem}_space-{SPACE}_desc-preproc_bold.json",
        {"RepetitionTime": tr, "TaskName": story, "SkullStripped": False},
    )
    save_nifti(func / f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz", mask_img)
    table = confounds.copy()
    table["global_signal"] = bold.astype(np.float64).mean(axis=1)
    table["framewise_displacement"] = _framewise_displacement(confounds)
    _save_tsv(
        func / f"{stem}_desc-confounds_timeseries.tsv",
        table[list(CONFOUND_COLUMNS)].round(6),
        float_format="%.6f",
    )


# --- features -----------------------------------------------------------------------------------


def planted_features_for(
    planted: Sequence[Mapping[str, Any]],
    words: Mapping[str, pd.DataFrame],
    registry_path: str | os.PathLike,
    model_root: str | os.PathLike,
    *,
    context_tokens: int = 128,
    stride: int | None = 96,
    batch_size: int = 8,
    word_token: str = "last",
) -> dict[tuple[str, str, int], dict[str, np.ndarray]]:
    """Hidden states of the planted layers: (model, variant, layer) -> story -> (n_words, hidden).

    Models with an offline source that ``model_root/<model>`` does not hold yet are prepared
    there first. Each (model, variant) runs once over every story, with the settings the
    features stage uses (``context_tokens``, ``stride`` and ``batch_size`` as in the config's
    ``features``, the registry's ``arch`` and ``context``), on the CPU so that the demo data do
    not depend on the machine's accelerator.
    """
    from brainshape import features, models

    entries = _check_planted(planted)
    registry = models.load_registry(registry_path)
    wanted: dict[tuple[str, str], list[int]] = {}
    for entry in entries:
        wanted.setdefault((entry["model"], entry["variant"]), []).append(entry["layer"])
    out: dict[tuple[str, str, int], dict[str, np.ndarray]] = {}
    for (name, variant), layers in wanted.items():
        spec = models.get_model(registry, name)
        spec.variant(variant)
        model_dir: Path | None = Path(model_root) / name
        if spec.source["kind"] in ("tiny", "gguf_package"):
            if not model_dir.exists():
                log.info("preparing model '%s' in %s", name, model_dir)
                models.prepare(spec, model_dir)
        elif not model_dir.exists():
            model_dir = None  # a hub model from the local cache
        model, tokenizer = models.load(spec, variant, model_dir, device="cpu")
        n_states = model.config.num_hidden_layers + 1
        for layer in layers:
            if not 0 <= layer < n_states:
                raise BrainshapeError(
                    f"demo planted layer {layer} of model '{name}' does not exist: it has "
                    f"layers 0 (embeddings) to {n_states - 1}"
                )
            out[(name, variant, layer)] = {}
        # The layers above the deepest planted one change none of its states: not run.
        models.first_layers(model, max(layers) + 1)
        for story, table in words.items():
            states = features.extract_words(
                model,
                tokenizer,
                list(table["word"]),
                context_tokens=context_tokens,
                stride=stride,
                batch_size=batch_size,
                word_token=word_token,
                arch=spec.arch,
                max_context=spec.context,
            )
            for layer in layers:
                out[(name, variant, layer)][story] = np.array(states[layer], dtype=np.float32)
        del model
        log.info("planted features of '%s' (%s): layers %s", name, variant, layers)
    return out


# --- everything ---------------------------------------------------------------------------------


def generate(
    root: str | os.PathLike,
    *,
    registry_path: str | os.PathLike,
    model_root: str | os.PathLike,
    planted: Sequence[Mapping[str, Any]] = DEFAULT_PLANTED,
    subjects: int | Sequence[str] = 4,
    stories: Sequence[str] = DEFAULT_STORIES,
    tr: float = 2.0,
    seed: int = 0,
    snr: float = DEFAULT_SNR,
    ar1: float = DEFAULT_AR1,
    context_tokens: int = 128,
    stride: int | None = 96,
    batch_size: int = 8,
    word_token: str = "last",
) -> dict[str, Any]:
    """Write the whole demo dataset under ``root``: stimuli, planted features, BOLD, manifest.

    ``subjects`` is a count (labels ``01``, ``02``, ...) or a list of labels. Returns the
    manifest written to ``root/ground_truth.json``. Identical bytes for the same arguments.
    """
    entries = _check_planted(planted)
    words = generate_stimuli(root, stories=stories, subjects=subjects, tr=tr, seed=seed)
    feats = planted_features_for(
        entries,
        words,
        registry_path,
        model_root,
        context_tokens=context_tokens,
        stride=stride,
        batch_size=batch_size,
        word_token=word_token,
    )
    manifest = generate_bold(
        root, words, feats, subjects=subjects, tr=tr, seed=seed, snr=snr, ar1=ar1, planted=entries
    )
    for entry in manifest["planted"]:
        log.info(
            "planted %s %s <- %s %s layer %d: best possible r %.2f (ROI mean; %.2f after "
            "confound cleaning), %.2f (voxel)",
            entry["roi"],
            entry["hemisphere"],
            entry["model"],
            entry["variant"],
            entry["layer"],
            entry["expected_r_roi_mean"],
            entry["expected_r_roi_mean_cleaned"],
            entry["expected_r_voxel"],
        )
    return manifest
