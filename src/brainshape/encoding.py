"""Encoding models: word features -> TR-rate design -> ridge -> held-out Pearson r.

The brainscore of a layer for one fMRI target is the Pearson correlation between the BOLD
signal of held-out stories and the prediction of a ridge regression fitted on the other
stories. The steps:

1. ``lanczos_downsample``: word-rate hidden states (one row per word, stamped at the middle of
   the word) are low-pass filtered and resampled at the volume times of the story's run
   (``tr_times``: volume k sits at ``k * tr + tr / 2`` seconds).
2. ``add_delays``: finite-impulse-response delays (in TRs) let the slow haemodynamic response
   see the stimulus of the previous few volumes. Applied per run, so nothing leaks across
   stories.
3. ``cross_validated_scores``: outer folds leave one story out; within the remaining stories
   the ridge penalty of each target is chosen by leaving one story out at a time (contiguous
   blocks, never shuffled); the held-out predictions of all folds are concatenated and
   correlated with the data.

``encode_variant`` runs the three steps for every layer of one model variant and every
subject, stacking subjects who share stories and run lengths so one design serves them all.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainshape import ridge, scoring
from brainshape.errors import BrainshapeError

DEFAULT_DELAYS = (1, 2, 3, 4)
DEFAULT_ALPHAS = np.logspace(0, 6, 13)
# Targets per block in the ridge solves: memory grows with (rank of the design) x chunk.
DEFAULT_TARGET_CHUNK = 20000

_RUN_KEYS = ("n_trs", "trim_start", "trim_end", "tr")
_WORD_COLUMNS = ("story", "word_index", "onset", "offset")
_TARGET_COLUMNS = ("target", "roi", "hemisphere")


# --- time axis and resampling ---------------------------------------------------------------


def tr_times(n_trs: int, tr: float) -> np.ndarray:
    """Times in seconds of the volumes of one run, shape (n_trs,).

    Volume k is stamped at ``k * tr + tr / 2``: the middle of its acquisition, measured from
    the start of the run (the same clock as the onsets in the words table).
    """
    if isinstance(n_trs, bool) or int(n_trs) != n_trs or n_trs < 0:
        raise BrainshapeError(f"n_trs must be a non-negative whole number of volumes, got {n_trs}.")
    if not (math.isfinite(tr) and tr > 0):
        raise BrainshapeError(f"tr must be a positive number of seconds, got {tr}.")
    return np.arange(int(n_trs), dtype=np.float64) * float(tr) + float(tr) / 2


def lanczos_matrix(
    word_times: np.ndarray,
    new_times: np.ndarray,
    window: float = 3,
    cutoff_mult: float = 1.0,
) -> np.ndarray:
    """Lanczos interpolation weights from word times to volume times, shape (n_trs, n_words).

    ``word_times`` (n_words,) and ``new_times`` (n_trs,) are in seconds. The cut-off frequency
    is ``f_c = cutoff_mult / median spacing of new_times`` (1 / TR for a run). With the lag
    ``t = new_time - word_time`` and ``x = f_c * t`` the weight is
    ``window * sin(pi x) * sin(pi x / window) / (pi^2 x^2)``, 1 at ``x = 0`` and 0 where
    ``|x| > window``. Rows are not normalised: a volume during which more words were heard
    gets a larger value, because word rate is part of the signal the brain responds to.
    """
    word_times = _as_times(word_times, "word_times")
    new_times = _as_times(new_times, "new_times")
    if new_times.size < 2:
        raise BrainshapeError(
            f"new_times needs at least 2 volume times to set the cut-off frequency, "
            f"got {new_times.size}."
        )
    spacing = float(np.median(np.diff(new_times)))
    if not spacing > 0:
        raise BrainshapeError(
            "new_times must increase (median spacing is not positive); pass the volume times "
            "of one run in order, e.g. tr_times(n_trs, tr)."
        )
    if not (math.isfinite(window) and window > 0):
        raise BrainshapeError(f"Lanczos window must be a positive number of lobes, got {window}.")
    if not (math.isfinite(cutoff_mult) and cutoff_mult > 0):
        raise BrainshapeError(f"cutoff_mult must be positive, got {cutoff_mult}.")
    cutoff = cutoff_mult / spacing
    x = cutoff * (new_times[:, None] - word_times[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = window * np.sin(np.pi * x) * np.sin(np.pi * x / window) / (np.pi**2 * x**2)
    weights[x == 0] = 1.0
    weights[np.abs(x) > window] = 0.0
    return weights


def lanczos_downsample(
    features: np.ndarray,
    word_times: np.ndarray,
    new_times: np.ndarray,
    window: float = 3,
    cutoff_mult: float = 1.0,
) -> np.ndarray:
    """Resample word-rate features (n_words, d) at ``new_times`` (seconds): (n_trs, d) float64."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise BrainshapeError(
            f"features must be a 2-D array (n_words, d), got shape {features.shape}."
        )
    word_times = _as_times(word_times, "word_times")
    if features.shape[0] != word_times.size:
        raise BrainshapeError(
            f"features have {features.shape[0]} rows but there are {word_times.size} word "
            "times; pass one time per word."
        )
    weights = lanczos_matrix(word_times, new_times, window=window, cutoff_mult=cutoff_mult)
    return weights @ features.astype(np.float64, copy=False)


def add_delays(X: np.ndarray, delays: Sequence[int] = DEFAULT_DELAYS) -> np.ndarray:
    """Stack delayed copies of one run's design: (n_trs, p) -> (n_trs, p * len(delays)).

    Column block j is ``X`` moved down by ``delays[j]`` TRs (row i holds the stimulus of row
    ``i - delays[j]``, so an earlier stimulus predicts later BOLD); rows shifted in from
    outside the run are zero. A negative delay moves the block up. Call it once per run:
    the zero fill is what keeps one story's stimulus out of another story's volumes.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise BrainshapeError(f"add_delays needs a 2-D design (n_trs, p), got shape {X.shape}.")
    delays = tuple(delays)
    if not delays:
        raise BrainshapeError("delays is empty; give at least one delay in TRs, e.g. [1, 2, 3, 4].")
    for d in delays:
        if isinstance(d, bool) or not float(d).is_integer():
            raise BrainshapeError(f"delays must be whole numbers of TRs, got {d!r}.")
    n, p = X.shape
    out = np.zeros((n, p * len(delays)), dtype=X.dtype)
    for j, d in enumerate(int(d) for d in delays):
        block = out[:, j * p : (j + 1) * p]
        if abs(d) >= n:
            continue
        if d >= 0:
            block[d:] = X[: n - d]
        else:
            block[: n + d] = X[-d:]
    return out


# --- ridge ------------------------------------------------------------------------------------


@dataclass
class RidgeFit:
    """Ridge regression on z-scored features with one alpha per target.

    ``coef`` (p, m) applies to features z-scored with ``x_mean`` / ``x_scale`` (p,);
    ``y_mean`` (m,) is the intercept. ``alphas`` (m,) are the chosen penalties,
    ``alpha_grid`` (n_alphas,) the candidates in increasing order and ``cv_scores``
    (n_alphas, m) the mean held-out Pearson r of each candidate over the inner folds.
    """

    coef: np.ndarray
    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: np.ndarray
    alphas: np.ndarray
    alpha_grid: np.ndarray
    cv_scores: np.ndarray

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions (n, m) for raw features ``X`` (n, p)."""
        Xz = (np.asarray(X, dtype=np.float64) - self.x_mean) / self.x_scale
        return Xz @ self.coef + self.y_mean


@dataclass
class EncodingScores:
    """Cross-validated encoding scores, one outer fold per held-out run.

    ``scores`` (n_targets,): Pearson r between the held-out predictions of all folds,
    concatenated in run order, and the data. ``fold_scores`` (n_folds, n_targets): r within
    each held-out run. ``alphas`` (n_folds, n_targets): the penalty chosen in each fold.
    Targets without variance get r = 0.
    """

    scores: np.ndarray
    fold_scores: np.ndarray
    alphas: np.ndarray


def ridge_cv(
    X_runs: Sequence[np.ndarray],
    Y_runs: Sequence[np.ndarray],
    alphas: np.ndarray | Sequence[float] = DEFAULT_ALPHAS,
    target_chunk: int = DEFAULT_TARGET_CHUNK,
) -> RidgeFit:
    """Fit ridge with a per-target alpha chosen by leave-one-run-out cross-validation.

    ``X_runs[i]`` (n_i, p) and ``Y_runs[i]`` (n_i, m) hold run i in time order (TRs); at
    least 2 runs. Features are z-scored with the mean and standard deviation of all rows
    given (constant columns keep scale 1), targets centred with their means; there is no
    other intercept. The alphas are chosen by ``ridge.solve_ridge_cv`` with one fold per run:
    each fold re-centres features and targets on its own training rows and keeps the full
    scale, so an alpha means the same penalty during selection and in the final fit (as in
    himalaya's ``solve_ridge_cv_svd(..., fit_intercept=True)`` on a z-scored design). Per
    target, the alpha with the highest mean held-out Pearson r wins; exact ties go to the
    larger alpha.
    """
    X_runs, Y_runs = _check_runs(X_runs, Y_runs, min_runs=2, purpose="ridge_cv")
    alpha_grid = _check_alphas(alphas)
    target_chunk = _check_chunk(target_chunk)
    X = np.concatenate(X_runs).astype(np.float64, copy=False)
    x_mean, x_scale = ridge.standardise(ridge.get_backend("numpy"), X)
    segments = ridge.contiguous_folds([len(x) for x in X_runs])
    fit = ridge.solve_ridge_cv(
        (X - x_mean) / x_scale,
        np.concatenate(Y_runs),
        alpha_grid,
        ridge.folds_from_segments(segments),
        target_chunk=target_chunk,
    )
    return RidgeFit(
        coef=fit.coef,
        x_mean=x_mean,
        x_scale=x_scale,
        y_mean=fit.intercept,
        alphas=fit.alphas,
        alpha_grid=alpha_grid,
        cv_scores=fit.cv_scores,
    )


def cross_validated_scores(
    X_runs: Sequence[np.ndarray],
    Y_runs: Sequence[np.ndarray],
    alphas: np.ndarray | Sequence[float] = DEFAULT_ALPHAS,
    target_chunk: int = DEFAULT_TARGET_CHUNK,
) -> EncodingScores:
    """Held-out Pearson r of ridge encoding models, leaving one run (story) out at a time.

    ``X_runs[i]`` (n_i, p) is the design of run i (already delayed and trimmed, in TRs),
    ``Y_runs[i]`` (n_i, m) its data. Needs at least 3 runs: in each outer fold one run is
    held out and the alphas are chosen by leave-one-run-out ridge (``ridge_cv``) on the
    others. Predictions never see the held-out run, not even through the feature z-scoring.
    Memory stays bounded by ``target_chunk``: the concatenated score is accumulated from
    per-fold sums, so predictions of all runs are never held at once.
    """
    X_runs, Y_runs = _check_runs(X_runs, Y_runs, min_runs=3, purpose="cross_validated_scores")
    alpha_grid = _check_alphas(alphas)
    target_chunk = _check_chunk(target_chunk)
    result = ridge.cross_validate(
        np.concatenate(X_runs),
        np.concatenate(Y_runs),
        alpha_grid,
        ridge.contiguous_folds([len(X) for X in X_runs]),
        target_chunk=target_chunk,
    )
    return EncodingScores(
        scores=result.scores, fold_scores=result.fold_scores, alphas=result.alphas
    )


def _constant_columns(A: np.ndarray) -> np.ndarray:
    return A.max(axis=0) == A.min(axis=0)


def _check_alphas(alphas: np.ndarray | Sequence[float]) -> np.ndarray:
    grid = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise BrainshapeError(
            "alphas must be a non-empty list of positive numbers (encoding.alphas), "
            f"got {alphas!r}."
        )
    return np.unique(grid)


def _check_chunk(target_chunk: int) -> int:
    if isinstance(target_chunk, bool) or int(target_chunk) != target_chunk or target_chunk < 1:
        raise BrainshapeError(
            f"target_chunk must be a positive whole number (encoding.target_chunk), "
            f"got {target_chunk!r}."
        )
    return int(target_chunk)


def _check_runs(
    X_runs: Sequence[np.ndarray], Y_runs: Sequence[np.ndarray], *, min_runs: int, purpose: str
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    X_runs = [np.asarray(X) for X in X_runs]
    Y_runs = [np.asarray(Y) for Y in Y_runs]
    if len(X_runs) != len(Y_runs):
        raise BrainshapeError(
            f"{purpose}: {len(X_runs)} feature runs but {len(Y_runs)} data runs; pass one "
            "design and one data array per story."
        )
    if len(X_runs) < min_runs:
        held = "one held out for scoring, and " if min_runs == 3 else ""
        raise BrainshapeError(
            f"{purpose} needs at least {min_runs} runs (stories) to cross-validate "
            f"({held}two more so the ridge penalty can be chosen by leaving one out), got "
            f"{len(X_runs)}. Use more stories."
        )
    p = m = None
    for i, (X, Y) in enumerate(zip(X_runs, Y_runs, strict=True)):
        if X.ndim != 2 or Y.ndim != 2:
            raise BrainshapeError(
                f"{purpose}: run {i} must have a 2-D design and 2-D data, got shapes "
                f"{X.shape} and {Y.shape}."
            )
        if X.shape[0] != Y.shape[0]:
            raise BrainshapeError(
                f"{purpose}: run {i} has {X.shape[0]} design rows but {Y.shape[0]} data rows; "
                "design and data must cover the same TRs."
            )
        if X.shape[0] < 2:
            raise BrainshapeError(
                f"{purpose}: run {i} has {X.shape[0]} TR; a correlation needs at least 2. "
                "Reduce the trimming or drop that story."
            )
        p = X.shape[1] if p is None else p
        m = Y.shape[1] if m is None else m
        if X.shape[1] != p or Y.shape[1] != m:
            raise BrainshapeError(
                f"{purpose}: run {i} has {X.shape[1]} features and {Y.shape[1]} targets but "
                f"run 0 has {p} and {m}; every run needs the same columns."
            )
        if not np.all(np.isfinite(X)) or not np.all(np.isfinite(Y)):
            raise BrainshapeError(
                f"{purpose}: run {i} contains NaN or infinite values; clean the features or "
                "the BOLD data first."
            )
    if m == 0:
        raise BrainshapeError(f"{purpose}: the data have no targets (0 columns).")
    all_constant = True
    for start in range(0, m, DEFAULT_TARGET_CHUNK):
        chunk = slice(start, start + DEFAULT_TARGET_CHUNK)
        if not np.all(_constant_columns(np.concatenate([Y[:, chunk] for Y in Y_runs]))):
            all_constant = False
            break
    if all_constant:
        raise BrainshapeError(
            f"{purpose}: every target is constant over all runs, so there is nothing to "
            "predict; check the fMRI preprocessing (mask, z-scoring)."
        )
    return X_runs, Y_runs


def _as_times(times: np.ndarray, name: str) -> np.ndarray:
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1:
        raise BrainshapeError(f"{name} must be 1-D (seconds), got shape {times.shape}.")
    if not np.all(np.isfinite(times)):
        raise BrainshapeError(f"{name} contains NaN or infinite times.")
    return times


# --- subjects and the whole variant -----------------------------------------------------------


@dataclass
class SubjectData:
    """The preprocessed fMRI of one subject.

    ``data[story]`` (n_kept_trs, n_targets): BOLD of the kept volumes of that story's run;
    ``targets``: one row per column (``target``, ``roi``, ``hemisphere``, ...);
    ``runs[story]``: ``{"n_trs", "trim_start", "trim_end", "tr"}`` where ``n_trs`` counts the
    volumes of the BOLD file, the kept ones are ``[trim_start, n_trs - trim_end)`` and ``tr``
    is in seconds.
    """

    data: dict[str, np.ndarray]
    targets: pd.DataFrame
    runs: dict[str, dict]


def load_subject(directory: str | os.PathLike) -> SubjectData:
    """Read ``fmri/sub-<sub>/``: ``runs.json``, ``targets.parquet`` and ``<story>.npy``."""
    directory = Path(directory)
    runs_path = directory / "runs.json"
    targets_path = directory / "targets.parquet"
    for path in (runs_path, targets_path):
        if not path.is_file():
            raise BrainshapeError(f"{path} is missing; run the fmri stage for this subject first.")
    try:
        runs = json.loads(runs_path.read_text())
    except json.JSONDecodeError as err:
        raise BrainshapeError(
            f"{runs_path} is not valid JSON ({err}); rerun the fmri stage."
        ) from err
    if not isinstance(runs, dict) or not runs:
        raise BrainshapeError(
            f"{runs_path} must map each story to its run; it is empty or not a mapping."
        )
    for story, run in runs.items():
        _check_run(run, f"{runs_path}, story {story!r}")
    targets = pd.read_parquet(targets_path)
    missing = [c for c in _TARGET_COLUMNS if c not in targets.columns]
    if missing:
        raise BrainshapeError(
            f"{targets_path} lacks column(s) {missing}; rerun the fmri stage for this subject."
        )
    if not np.array_equal(targets["target"].to_numpy(), np.arange(len(targets))):
        raise BrainshapeError(
            f"{targets_path}: column 'target' must be 0, 1, ..., n_targets - 1 in order; "
            "rerun the fmri stage for this subject."
        )
    data = {}
    for story in runs:
        path = directory / f"{story}.npy"
        if not path.is_file():
            raise BrainshapeError(
                f"{path} is missing but {runs_path} lists story {story!r}; rerun the fmri "
                "stage for this subject."
            )
        array = np.load(path)
        if array.ndim != 2 or array.shape[1] != len(targets):
            raise BrainshapeError(
                f"{path} has shape {array.shape} but {targets_path} lists {len(targets)} "
                "targets; rerun the fmri stage for this subject."
            )
        data[story] = array
    return SubjectData(data=data, targets=targets, runs=runs)


def _check_run(run: object, where: str) -> dict:
    if not isinstance(run, Mapping) or any(k not in run for k in _RUN_KEYS):
        raise BrainshapeError(f"{where}: the run needs keys {list(_RUN_KEYS)}, got {run!r}.")
    for key in ("n_trs", "trim_start", "trim_end"):
        value = run[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise BrainshapeError(f"{where}: {key} must be a non-negative integer, got {value!r}.")
    tr = run["tr"]
    if isinstance(tr, bool) or not isinstance(tr, (int, float)) or not (tr > 0):
        raise BrainshapeError(f"{where}: tr must be a positive number of seconds, got {tr!r}.")
    if run["trim_start"] + run["trim_end"] >= run["n_trs"]:
        raise BrainshapeError(
            f"{where}: trim_start + trim_end ({run['trim_start']} + {run['trim_end']}) leaves "
            f"no volume of the {run['n_trs']}; reduce the trimming."
        )
    return run


def _sub_label(sub: str) -> str:
    return sub if str(sub).startswith("sub-") else f"sub-{sub}"


def _word_times(words: pd.DataFrame) -> dict[str, np.ndarray]:
    """Midpoint of every word in seconds, per story, in word_index order."""
    missing = [c for c in _WORD_COLUMNS if c not in words.columns]
    if missing:
        raise BrainshapeError(f"The words table lacks column(s) {missing}; rerun the words stage.")
    times = {}
    for story, table in words.groupby("story", sort=False):
        table = table.sort_values("word_index")
        if not np.array_equal(table["word_index"].to_numpy(), np.arange(len(table))):
            raise BrainshapeError(
                f"Words table, story {story!r}: word_index must run 0, 1, ..., n_words - 1; "
                "rerun the words stage."
            )
        onset = table["onset"].to_numpy(dtype=np.float64)
        offset = table["offset"].to_numpy(dtype=np.float64)
        if not (np.all(np.isfinite(onset)) and np.all(np.isfinite(offset))):
            raise BrainshapeError(
                f"Words table, story {story!r}: onset or offset has NaN values; rerun the "
                "words stage (unaligned words must get interpolated times)."
            )
        # The middle of the word: its hidden state reflects the whole word having been heard.
        times[str(story)] = (onset + offset) / 2
    return times


def _check_subject(sub: str, subject: SubjectData) -> None:
    label = _sub_label(sub)
    if set(subject.data) != set(subject.runs):
        raise BrainshapeError(
            f"{label}: the BOLD stories {sorted(subject.data)} differ from the runs "
            f"{sorted(subject.runs)}; rerun the fmri stage for this subject."
        )
    n_targets = len(subject.targets)
    for story in sorted(subject.runs):
        run = _check_run(subject.runs[story], f"story {story}, {label}")
        bold = subject.data[story]
        expected = run["n_trs"] - run["trim_start"] - run["trim_end"]
        if bold.ndim != 2 or bold.shape[0] != expected:
            n_kept = bold.shape[0] if bold.ndim >= 1 else 0
            raise BrainshapeError(
                f"story {story}, {label}: BOLD has {n_kept} volumes after trimming but the run "
                f"should keep n_trs - trim_start - trim_end = {run['n_trs']} - "
                f"{run['trim_start']} - {run['trim_end']} = {expected}; rerun the fmri stage "
                "for this subject."
            )
        if bold.shape[1] != n_targets:
            raise BrainshapeError(
                f"story {story}, {label}: BOLD has {bold.shape[1]} targets but the targets "
                f"table lists {n_targets}; rerun the fmri stage for this subject."
            )
        if not np.all(np.isfinite(bold)):
            raise BrainshapeError(
                f"story {story}, {label}: BOLD contains NaN or infinite values; fix the mask "
                "or the preprocessing in the fmri stage so every kept target is finite."
            )
    if len(subject.runs) < 3:
        raise BrainshapeError(
            f"{label} has fMRI for {len(subject.runs)} stories ({sorted(subject.runs)}); "
            "cross-validated brainscores need at least 3. Use more stories."
        )


def _check_features(
    story: str, features: np.ndarray, n_words: int, shape: tuple[int, int] | None
) -> tuple[int, int]:
    if features.ndim != 3:
        raise BrainshapeError(
            f"Features of story {story!r} have shape {features.shape}; expected "
            "(n_layers + 1, n_words, hidden). Recompute the features."
        )
    if features.shape[1] != n_words:
        raise BrainshapeError(
            f"Features of story {story!r} have {features.shape[1]} words but the words table "
            f"has {n_words}; recompute the features from the current words table."
        )
    layers_hidden = (features.shape[0], features.shape[2])
    if shape is not None and layers_hidden != shape:
        raise BrainshapeError(
            f"Features of story {story!r} have {layers_hidden[0]} layers x {layers_hidden[1]} "
            f"hidden units but other stories have {shape[0]} x {shape[1]}; recompute the "
            "features of this variant."
        )
    for layer in range(features.shape[0]):
        # Layer by layer, so a memory-mapped array is never read in full at once.
        if not np.all(np.isfinite(features[layer])):
            raise BrainshapeError(
                f"Features of story {story!r}, layer {layer} contain NaN or infinite values; "
                "recompute the features (a NaN often means overflow in half precision)."
            )
    return layers_hidden


def encode_variant(
    words: pd.DataFrame,
    features: Mapping[str, np.ndarray],
    subjects: Mapping[str, SubjectData],
    *,
    delays: Sequence[int] = DEFAULT_DELAYS,
    alphas: np.ndarray | Sequence[float] = DEFAULT_ALPHAS,
    window: float = 3,
    target_chunk: int = DEFAULT_TARGET_CHUNK,
    folds: str = "stories",
    n_blocks: int | None = None,
    gap: int = 0,
    backend: str = "numpy",
    dtype: str | None = None,
    n_permutations: int = 0,
    permutation_block: int = 10,
    seed: int = 0,
    metrics: Sequence[str] = ("r", "mi"),
    segment_trs: int = 10,
) -> pd.DataFrame:
    """Brainscores of every layer of one model variant for every subject and target.

    ``features[story]``: (n_layers + 1, n_words, hidden) in word_index order (index 0 is the
    embeddings). ``subjects[sub]``: see ``SubjectData``; ``sub`` without the ``sub-`` prefix.
    For each layer and story, word features stamped at the middle of each word are
    Lanczos-resampled at that run's volume times, delayed by ``delays`` TRs and trimmed to
    the kept volumes. Subjects with the same stories and run lengths share one design (their
    targets are stacked). Returns one row per (layer, subject, target): ``layer`` (int64),
    ``subject`` (str), ``target`` (int64), ``roi``, ``hemisphere``, ``score`` (float64,
    held-out Pearson r) and ``alpha`` (float64, median over outer folds of the chosen alpha),
    ``mi`` (bits, Gaussian mutual information of that r), ``p_value`` (block-permutation
    p-value of the target's r), ``q_value`` (Benjamini-Hochberg over the targets of that layer
    and subject) and ``p_value_roi`` (permutation p-value of the mean r over the targets of
    that subject's ROI x hemisphere); the three are NaN when ``n_permutations`` is 0.

    Cross-validation (``ridge.cross_validate``): ``folds="stories"`` holds out one story at a
    time; ``folds="blocks"`` cuts the concatenated runs into ``n_blocks`` contiguous blocks and
    drops ``gap`` TRs of training data on each side of the held-out block. ``backend`` and
    ``dtype`` pick the solver's arrays (``ridge.get_backend``).

    ``metrics``: ``r`` (always computed: ``score``), ``mi`` (the ``mi`` column) and
    ``segment_identification`` (columns ``sensitivity``, ``specificity`` and ``invariance`` of
    ``scoring.segment_identification`` on the held-out predictions of each subject's ROI x
    hemisphere, segments of ``segment_trs`` TRs, repeated on its targets' rows).
    """
    unknown = [m for m in metrics if m not in scoring.METRICS]
    if unknown:
        raise BrainshapeError(
            f"encoding.metrics lists unknown metric(s) {unknown}; known: {list(scoring.METRICS)}."
        )
    identify = "segment_identification" in metrics
    if folds not in ("stories", "blocks"):
        raise BrainshapeError(f"encoding.folds must be 'stories' or 'blocks', got {folds!r}.")
    if folds == "blocks" and n_blocks is None:
        raise BrainshapeError("encoding.folds is 'blocks' but encoding.n_blocks is not set.")
    solver = ridge.get_backend(backend, dtype)
    alphas = _check_alphas(alphas)
    target_chunk = _check_chunk(target_chunk)
    if not subjects:
        raise BrainshapeError("No subjects to encode; check the fMRI inputs of this dataset.")
    word_times = _word_times(words)
    for sub in subjects:
        _check_subject(sub, subjects[sub])

    shape = None
    stories = sorted({story for sub in subjects for story in subjects[sub].runs})
    for story in stories:
        holders = ", ".join(_sub_label(s) for s in subjects if story in subjects[s].runs)
        if story not in word_times:
            raise BrainshapeError(
                f"story {story}: there is fMRI for it ({holders}) but the words table has no "
                "such story; add it to the stimuli of this dataset or drop it from the fMRI."
            )
        if story not in features:
            raise BrainshapeError(
                f"story {story}: there is fMRI for it ({holders}) but no features (features "
                f"exist for {sorted(features)}); compute the features of this story."
            )
        shape = _check_features(story, np.asarray(features[story]), word_times[story].size, shape)
    n_layers = shape[0]

    # A run shorter than its story means the wrong BOLD file or a wrong TR, not a detail to
    # paper over by dropping words.
    story_end = words.groupby("story")["offset"].max()
    for sub in subjects:
        for story, run in subjects[sub].runs.items():
            scan_end = run["n_trs"] * run["tr"]
            if story_end[story] > scan_end + 1e-6:
                raise BrainshapeError(
                    f"story {story}, {_sub_label(sub)}: the words run to {story_end[story]:.1f} s "
                    f"but the BOLD run has {run['n_trs']} volumes ({scan_end:.1f} s at TR "
                    f"{run['tr']:g} s); check that this is the right BOLD file and TR for the "
                    "story."
                )

    # Subjects who heard the same stories with the same runs share one design.
    groups: dict[tuple, list[str]] = {}
    for sub in subjects:
        runs = subjects[sub].runs
        key = tuple((story, *(runs[story][k] for k in _RUN_KEYS)) for story in sorted(runs))
        groups.setdefault(key, []).append(sub)

    tables = []
    for key, subs in groups.items():
        run_list = [dict(zip(("story", *_RUN_KEYS), entry, strict=True)) for entry in key]
        resamplers = [
            lanczos_matrix(word_times[r["story"]], tr_times(r["n_trs"], r["tr"]), window=window)
            for r in run_list
        ]
        Y_runs = [
            np.concatenate([subjects[sub].data[r["story"]] for sub in subs], axis=1)
            for r in run_list
        ]
        widths = np.cumsum([0] + [len(subjects[sub].targets) for sub in subs])
        Y = np.concatenate(Y_runs)
        lengths = [len(y) for y in Y_runs]
        segments = ridge.contiguous_folds(lengths, n_blocks if folds == "blocks" else None)
        if folds == "stories" and len(segments) < 3:
            raise BrainshapeError(
                f"{', '.join(_sub_label(s) for s in subs)}: {len(segments)} stories; "
                "cross-validated brainscores need at least 3. Use more stories."
            )
        for layer in range(n_layers):
            X_runs = []
            for r, resampler in zip(run_list, resamplers, strict=True):
                layer_features = np.asarray(features[r["story"]][layer], dtype=np.float64)
                delayed = add_delays(resampler @ layer_features, delays)
                X_runs.append(delayed[r["trim_start"] : r["n_trs"] - r["trim_end"]])
            result = ridge.cross_validate(
                np.concatenate(X_runs),
                Y,
                alphas,
                segments,
                gap=gap if folds == "blocks" else 0,
                backend=solver,
                target_chunk=target_chunk,
                n_permutations=n_permutations,
                permutation_block=permutation_block,
                seed=seed,
                keep_predictions=identify,
            )
            median_alpha = np.median(result.alphas, axis=0)
            for j, sub in enumerate(subs):
                cols = slice(widths[j], widths[j + 1])
                targets = subjects[sub].targets
                frame = pd.DataFrame(
                    {
                        "layer": np.full(len(targets), layer, dtype=np.int64),
                        "subject": [str(sub)] * len(targets),
                        "target": targets["target"].to_numpy(dtype=np.int64),
                        "roi": targets["roi"].to_numpy(),
                        "hemisphere": targets["hemisphere"].to_numpy(),
                        "score": result.scores[cols].astype(np.float64),
                        "alpha": median_alpha[cols].astype(np.float64),
                        "mi": scoring.gaussian_mutual_information(result.scores[cols]),
                        "p_value": np.nan,
                        "q_value": np.nan,
                        "p_value_roi": np.nan,
                    }
                )
                if result.null is not None:
                    frame["p_value"] = result.p_values[cols]
                    frame["q_value"] = scoring.fdr(result.p_values[cols])
                    null = result.null[:, cols]
                    for _, rows in frame.groupby(["roi", "hemisphere"], sort=False).groups.items():
                        idx = frame.index.get_indexer(rows)
                        frame.loc[rows, "p_value_roi"] = scoring.permutation_p_value(
                            frame["score"].to_numpy()[idx].mean(), null[:, idx].mean(axis=1)
                        )
                if "mi" not in metrics:
                    frame = frame.drop(columns="mi")
                if identify:
                    by_roi = frame.groupby(["roi", "hemisphere"], sort=False).groups
                    for _, rows in by_roi.items():
                        idx = widths[j] + frame.index.get_indexer(rows)
                        found = scoring.segment_identification(
                            result.predictions[:, idx], Y[:, idx], segment_trs, seed=seed
                        )
                        for key in ("sensitivity", "specificity", "invariance"):
                            frame.loc[rows, key] = found[key]
                tables.append(frame)
    table = pd.concat(tables, ignore_index=True)
    return table.sort_values(["layer", "subject", "target"], ignore_index=True)


def variant_options(params: Mapping) -> dict:
    """``encode_variant`` keyword arguments from the encode job's params (``encoding:`` keys)."""
    options = {
        "delays": tuple(params["delays"]),
        "alphas": np.asarray(params["alphas"], dtype=np.float64),
        "window": params["lanczos_window"],
        "target_chunk": params["target_chunk"],
    }
    for key in ("folds", "n_blocks", "gap", "backend", "dtype", "n_permutations"):
        if key in params:
            options[key] = params[key]
    for key in ("permutation_block", "seed", "metrics", "segment_trs"):
        if key in params:
            options[key] = params[key]
    return options
