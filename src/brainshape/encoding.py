"""Encoding models: word features -> TR-rate design -> ridge -> held-out Pearson r.

The brainscore of a layer for one fMRI target is the Pearson correlation between the BOLD
signal of held-out stories (or blocks) and the prediction of a ridge regression fitted on the
rest. ``encode_variant`` computes it for every layer of one model variant and every subject of
a group in four steps:

1. **validate** (``_validate``): options, words, features and subjects agree (stories, word
   counts, run lengths, finite values); ``check_subject`` is the per-subject part.
2. **design** (``_groups``, ``_design``): subjects who heard the same stories with the same runs
   share one design and their targets are stacked. Word features, stamped at the middle of each
   word (``stimuli.word_times``), are Lanczos-resampled at the volume times of each run
   (``lanczos_matrix``; :mod:`brainshape.clock` places volume k of a run at word time ``offset +
   (k + 1/2) tr``), delayed by
   finite-impulse-response delays in TRs (``add_delays``, per run, so nothing leaks across
   stories) and trimmed to the kept volumes.
3. **solve** (``_solve``): ``ridge.cross_validate``, outer folds holding out one story or one
   contiguous block, the ridge penalty of each target chosen on the training rows by an inner
   contiguous cross-validation or by bootstrap draws of held-out chunks
   (``alpha_selection``); with permutations, block-permuted copies of the targets go through the
   same cross-validation for the pooled null (``scoring.null_copies``,
   ``scoring.target_p_values``).
4. **tabulate** (``scoring.tabulate``): one row per layer, subject and target with the score,
   alpha, the metrics of ``encoding.metrics`` (``scoring.METRICS``) and the p- and q-values.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from brainshape import ridge, scoring
from brainshape.clock import kept_rows, scan_end, volume_times
from brainshape.errors import BrainshapeError
from brainshape.stimuli import word_times
from brainshape.subjects import ALL_RUN_KEYS, RUN_DEFAULTS, SubjectData, subject_label

DEFAULT_DELAYS = (1, 2, 3, 4)
DEFAULT_ALPHAS = np.logspace(0, 6, 13)
#: How each target's alpha is chosen on an outer fold's training rows
#: (``encoding.alpha_selection``).
ALPHA_SELECTIONS = ("nested", "bootstrap")


# --- time axis and resampling ---------------------------------------------------------------


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
            "of one run in order, e.g. brainshape.clock.volume_times(run)."
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


def _as_times(times: np.ndarray, name: str) -> np.ndarray:
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1:
        raise BrainshapeError(f"{name} must be 1-D (seconds), got shape {times.shape}.")
    if not np.all(np.isfinite(times)):
        raise BrainshapeError(f"{name} contains NaN or infinite times.")
    return times


# --- validate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodeOptions:
    """The options of ``encode_variant`` (see there), checked."""

    delays: tuple[int, ...]
    alphas: np.ndarray
    window: float
    target_chunk: int
    folds: str
    n_blocks: int | None
    gap: int
    n_permutations: int
    permutation_block: int
    seed: int
    metrics: tuple[str, ...]
    segment_trs: int
    null_copies: int
    bootstrap: ridge.Bootstrap | None = None


def _check_options(options: EncodeOptions) -> EncodeOptions:
    if options.folds not in ("stories", "blocks"):
        raise BrainshapeError(
            f"encoding.folds must be 'stories' or 'blocks', got {options.folds!r}."
        )
    if options.folds == "blocks" and options.n_blocks is None:
        raise BrainshapeError("encoding.folds is 'blocks' but encoding.n_blocks is not set.")
    chunk = options.target_chunk
    if isinstance(chunk, bool) or int(chunk) != chunk or chunk < 1:
        raise BrainshapeError(
            f"target_chunk must be a positive whole number (encoding.target_chunk), got {chunk!r}."
        )
    if options.n_permutations == 1:
        raise BrainshapeError(
            "encoding.n_permutations is 1; p-values need the spread of the null: use 0 (no "
            "p-values) or at least 2."
        )
    if options.n_permutations and options.null_copies < 3:
        raise BrainshapeError(
            f"null_copies is {options.null_copies}; the pooled null of the p-values needs at "
            "least 3 permuted copies of the targets."
        )
    return dataclasses.replace(
        options,
        bootstrap=None if options.bootstrap is None else options.bootstrap.checked(),
        alphas=ridge.check_alphas(options.alphas),
        target_chunk=int(chunk),
        metrics=tuple(scoring.check_metrics(options.metrics)),
    )


def check_subject(sub: str, subject: SubjectData) -> None:
    """Raise a BrainshapeError unless ``subject``'s folder is consistent (how many stories
    cross-validation needs depends on the folds: :func:`segments_of`)."""
    subject.check(subject_label(sub))


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


def _validate(
    words: pd.DataFrame, features: Mapping[str, np.ndarray], subjects: Mapping[str, SubjectData]
) -> tuple[dict[str, np.ndarray], int]:
    """``(word times per story, number of layers)`` once every input agrees."""
    if not subjects:
        raise BrainshapeError("No subjects to encode; check the fMRI inputs of this dataset.")
    times = word_times(words)
    for sub in subjects:
        check_subject(sub, subjects[sub])
        for run in subjects[sub].runs.values():
            for key, value in RUN_DEFAULTS.items():
                run.setdefault(key, value)
    shape = None
    stories = sorted({story for sub in subjects for story in subjects[sub].runs})
    for story in stories:
        holders = ", ".join(subject_label(s) for s in subjects if story in subjects[s].runs)
        if story not in times:
            raise BrainshapeError(
                f"story {story}: there is fMRI for it ({holders}) but the words table has no "
                "such story; add it to the stimuli of this dataset or drop it from the fMRI."
            )
        if story not in features:
            raise BrainshapeError(
                f"story {story}: there is fMRI for it ({holders}) but no features (features "
                f"exist for {sorted(features)}); compute the features of this story."
            )
        shape = _check_features(story, np.asarray(features[story]), times[story].size, shape)
    _check_scan_covers_words(words, subjects)
    return times, shape[0]


def _check_scan_covers_words(words: pd.DataFrame, subjects: Mapping[str, SubjectData]) -> None:
    # A run shorter than its story means the wrong BOLD file, TR or offset, not a detail to
    # paper over by dropping words.
    story_end = words.groupby("story")["offset"].max()
    for sub in subjects:
        for story, run in subjects[sub].runs.items():
            covered = scan_end(run)
            if story_end[story] > covered + 1e-6:
                raise BrainshapeError(
                    f"story {story}, {subject_label(sub)}: the words run to "
                    f"{story_end[story]:.1f} s but the BOLD run covers word time up to "
                    f"{covered:.1f} s ({run['n_trs']} volumes at TR {run['tr']:g} s from offset "
                    f"{run['offset']:g} s); check that this is the right BOLD file, TR and offset "
                    "for the story."
                )


# --- design -----------------------------------------------------------------------------------


@dataclass
class Group:
    """Subjects who heard the same stories with the same runs: one design serves them all.

    ``runs``: per story (sorted) ``{"story", "n_trs", "trim_start", "trim_end", "tr",
    "offset", "removed_end", "split"}``;
    ``resamplers``: the Lanczos weights (n_trs, n_words) of each run; ``Y`` (n_kept, m +
    copies): the stacked targets of ``subjects`` (``widths`` are the column offsets of each
    subject) followed by the null's copies; ``m`` the number of real targets; ``segments``:
    the held-out rows of the outer folds.
    """

    subjects: list[str]
    runs: list[dict]
    resamplers: list[np.ndarray]
    Y: np.ndarray
    m: int
    widths: np.ndarray
    segments: list[np.ndarray]
    test: list[int] | None = None


def _groups(
    subjects: Mapping[str, SubjectData], times: Mapping[str, np.ndarray], options: EncodeOptions
) -> list[Group]:
    """The groups of subjects, each with its resamplers, stacked targets and folds."""
    keys: dict[tuple, list[str]] = {}
    for sub in subjects:
        runs = subjects[sub].runs
        key = tuple((story, *(runs[story][k] for k in ALL_RUN_KEYS)) for story in sorted(runs))
        keys.setdefault(key, []).append(sub)
    groups = []
    for key, subs in keys.items():
        run_list = [dict(zip(("story", *ALL_RUN_KEYS), entry, strict=True)) for entry in key]
        resamplers = [
            lanczos_matrix(times[r["story"]], volume_times(r), window=options.window)
            for r in run_list
        ]
        labels = ", ".join(subject_label(s) for s in subs)
        segments, test = segments_of(run_list, options, labels)
        shortest = min(len(s) for s in segments)
        if options.n_permutations and shortest <= options.permutation_block:
            raise BrainshapeError(
                f"{labels}: a held-out fold of {shortest} TRs is one block of "
                f"encoding.permutation_block = {options.permutation_block} TRs, so permuting "
                "blocks cannot change it; lower permutation_block."
            )
        Y, m = _stacked_targets(subjects, subs, run_list, segments, options)
        widths = np.cumsum([0] + [len(subjects[sub].targets) for sub in subs])
        groups.append(Group(subs, run_list, resamplers, Y, m, widths, segments, test))
    return groups


@dataclass(frozen=True)
class FoldOptions:
    """What :func:`segments_of` reads of the options (planning passes these alone)."""

    folds: str
    n_blocks: int | None
    bootstrap: ridge.Bootstrap | None = None


def segments_of(
    runs: Sequence[Mapping], options: EncodeOptions | FoldOptions, labels: str
) -> tuple[list[np.ndarray], list[int] | None]:
    """The held-out segments (rows of the concatenated kept volumes) of one group's runs, and
    which of them form a fixed test set (None: every segment is held out in turn).

    ``folds: stories``: one segment per run, at least 3 (one scored, two to choose alphas; 2
    with bootstrap alpha selection, whose draws come from one story's rows); ``folds:
    blocks``: ``n_blocks`` contiguous blocks, so a single story will do. Runs whose ``split`` is
    ``test`` (a dataset's fixed test story) are the test segments; the folds are then cut from
    the other runs only, which train (at least 2 of them, or 1 with bootstrap).
    """
    lengths = [r["n_trs"] - r["trim_start"] - r["trim_end"] for r in runs]
    is_test = [r["split"] == "test" for r in runs]
    blocks = options.n_blocks if options.folds == "blocks" else None
    bootstrap = options.bootstrap is not None
    if not any(is_test):
        if blocks is None and len(runs) < 3 - bootstrap:
            raise BrainshapeError(
                f"{labels}: {len(runs)} stories; cross-validated brainscores need at least "
                f"{3 - bootstrap} with encoding.folds: stories. Use more stories, or "
                "encoding.folds: blocks."
            )
        return ridge.contiguous_folds(lengths, blocks), None
    if all(is_test):
        raise BrainshapeError(
            f"{labels}: every story is a test story (split: test); nothing is left to train on"
        )
    # Runs keep their order in time; train and test segments interleave as the runs do.
    starts = np.cumsum([0, *lengths])
    segments, test = [], []
    train_runs = [i for i, t in enumerate(is_test) if not t]
    train_rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in train_runs])
    for cut in ridge.contiguous_folds([len(train_rows)], blocks) if blocks else []:
        segments.append(train_rows[cut])
    if blocks is None:
        segments += [np.arange(starts[i], starts[i + 1]) for i in train_runs]
    for i, flag in enumerate(is_test):
        if flag:
            test.append(len(segments))
            segments.append(np.arange(starts[i], starts[i + 1]))
    if len(segments) - len(test) < 2 - bootstrap:
        raise BrainshapeError(
            f"{labels}: {len(segments) - len(test)} training stor(ies) beside the test story; "
            "choosing alphas needs at least 2 (1 with encoding.alpha_selection: bootstrap): use "
            "more stories, or encoding.folds: blocks"
        )
    return segments, test


def _stacked_targets(subjects, subs, run_list, segments, options) -> tuple[np.ndarray, int]:
    """The targets of ``subs`` side by side, runs one after another, then the null's copies.

    Filled into one array, a subject's story at a time, so that the stored arrays (memory-mapped
    by the encode job) are never held beside a second copy of the whole group.
    """
    blocks = [[subjects[sub].data[r["story"]] for sub in subs] for r in run_list]
    rows = np.cumsum([0] + [story[0].shape[0] for story in blocks])
    cols = np.cumsum([0] + [array.shape[1] for array in blocks[0]])
    m = int(cols[-1])
    copies = options.null_copies if options.n_permutations else 0
    dtype = np.result_type(*[array.dtype for story in blocks for array in story])
    Y = np.empty((int(rows[-1]), m + copies), dtype=dtype)
    for i, story in enumerate(blocks):
        for j, array in enumerate(story):
            Y[rows[i] : rows[i + 1], cols[j] : cols[j + 1]] = array
    if copies:
        Y[:, m:] = scoring.null_copies(
            Y[:, :m], segments, copies, options.permutation_block, options.seed
        )
    return Y, m


def _design(features: Mapping[str, np.ndarray], layer: int, group: Group, delays) -> np.ndarray:
    """The delayed design (n_kept, hidden x delays) of one layer for ``group``'s runs."""
    X_runs = []
    for r, resampler in zip(group.runs, group.resamplers, strict=True):
        layer_features = np.asarray(features[r["story"]][layer], dtype=np.float64)
        delayed = add_delays(resampler @ layer_features, delays)
        X_runs.append(delayed[kept_rows(r)])
    return np.concatenate(X_runs)


# --- solve ------------------------------------------------------------------------------------


def _solve(
    X: np.ndarray, group: Group, options: EncodeOptions, solver, engine: str = "fast"
) -> tuple[ridge.CVResult, np.ndarray | None]:
    """Cross-validate the group's targets and copies: (result of the real targets, p-values)."""
    result = ridge.cross_validate(
        X,
        group.Y,
        options.alphas,
        group.segments,
        gap=options.gap if options.folds == "blocks" else 0,
        backend=solver,
        target_chunk=options.target_chunk,
        n_permutations=options.n_permutations,
        permutation_block=options.permutation_block,
        seed=options.seed,
        keep_predictions=scoring.needs_predictions(options.metrics),
        test=group.test,
        bootstrap=options.bootstrap,
        engine=engine,
    )
    m = group.m
    p_values = None
    if result.null is not None:
        p_values = scoring.target_p_values(
            result.scores[:m], result.null[:, :m], result.scores[m:], result.null[:, m:]
        )
    real = ridge.CVResult(
        scores=result.scores[:m],
        fold_scores=result.fold_scores[:, :m],
        alphas=result.alphas[:, :m],
        null=None if result.null is None else result.null[:, :m],
        predictions=None if result.predictions is None else result.predictions[:, :m],
        held_out=result.held_out,
    )
    return real, p_values


# --- tabulate ---------------------------------------------------------------------------------


def _tabulate(
    result: ridge.CVResult,
    p_values: np.ndarray | None,
    group: Group,
    subjects: Mapping[str, SubjectData],
    layer: int,
    options: EncodeOptions,
) -> list[pd.DataFrame]:
    """One table per subject of ``group`` at ``layer`` (``scoring.tabulate``)."""
    median_alpha = np.median(result.alphas, axis=0)
    tables = []
    for j, sub in enumerate(group.subjects):
        cols = slice(group.widths[j], group.widths[j + 1])
        fit = scoring.SubjectFit(
            scores=result.scores[cols],
            alphas=median_alpha[cols],
            p_values=None if p_values is None else p_values[cols],
            null=None if result.null is None else result.null[:, cols],
            predictions=None if result.predictions is None else result.predictions[:, cols],
            data=None if result.predictions is None else _held_rows(group.Y, result)[:, cols],
        )
        frame = scoring.tabulate(
            subjects[sub].targets,
            fit,
            options.metrics,
            segment_trs=options.segment_trs,
            seed=options.seed,
        )
        frame.insert(0, "subject", str(sub))
        frame.insert(0, "layer", np.int64(layer))
        tables.append(frame)
    return tables


def _held_rows(Y: np.ndarray, result: ridge.CVResult) -> np.ndarray:
    """The rows of ``Y`` the predictions cover: all, or a fixed test set's."""
    return Y if result.held_out is None else Y[result.held_out]


# --- the whole variant ------------------------------------------------------------------------


def encode_variant(
    words: pd.DataFrame,
    features: Mapping[str, np.ndarray],
    subjects: Mapping[str, SubjectData],
    *,
    delays: Sequence[int] = DEFAULT_DELAYS,
    alphas: np.ndarray | Sequence[float] = DEFAULT_ALPHAS,
    window: float = 3,
    target_chunk: int = ridge.DEFAULT_TARGET_CHUNK,
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
    null_copies: int = scoring.NULL_COPIES,
    alpha_selection: str = "nested",
    bootstrap: Mapping | None = None,
    engine: str = "fast",
) -> pd.DataFrame:
    """Brainscores of every layer of one model variant for every subject and target.

    ``words``: the words table (``stimuli.words_table``). ``features[story]``: (n_layers + 1,
    n_words, hidden) in word_index order (index 0 is the embeddings;
    ``features.read_features``). ``subjects[sub]``: a ``subjects.SubjectData``
    (``subjects.read_subject``), ``sub`` without the ``sub-`` prefix; subjects may have heard
    different stories.

    Returns one row per (layer, subject, target): ``layer`` (int64), ``subject`` (str), then
    the columns of ``scoring.tabulate``: ``target``, ``roi``, ``hemisphere``, ``score``
    (held-out Pearson r), ``alpha`` (median over outer folds of the chosen alpha), the columns
    of ``metrics`` (names in ``scoring.METRICS``; ``r`` is always computed), ``p_value``,
    ``q_value`` and ``p_value_roi`` (NaN when ``n_permutations`` is 0).

    Cross-validation (``ridge.cross_validate``): ``folds="stories"`` holds out one story at a
    time; ``folds="blocks"`` cuts the concatenated runs into ``n_blocks`` contiguous blocks and
    drops ``gap`` TRs of training data on each side of the held-out block. ``backend`` and
    ``dtype`` pick the solver's arrays (``ridge.get_backend``). ``n_permutations`` block
    permutations (``permutation_block`` TRs, ``seed``) per target, and ``null_copies``
    permuted copies of the targets in the pooled null, give the p-values
    (``scoring.target_p_values``). ``segment_trs``: TRs per segment for
    ``segment_identification``. ``alpha_selection``: ``nested`` (inner folds of the other
    training segments) or ``bootstrap`` (``bootstrap``: ``chunk_trs``, ``draws``, ``held_out``
    of ``ridge.Bootstrap``, seeded with ``seed``). ``engine``: ``fast``, or ``reference``
    for the previous ridge engine (``ridge.cross_validate``), to test and time against.
    """
    options = _check_options(
        EncodeOptions(
            tuple(delays),
            alphas,
            window,
            target_chunk,
            folds,
            n_blocks,
            gap,
            n_permutations,
            permutation_block,
            seed,
            tuple(metrics),
            segment_trs,
            null_copies,
            _bootstrap(alpha_selection, bootstrap),
        )  # fmt: skip
    )
    solver = ridge.get_backend(backend, dtype)
    times, n_layers = _validate(words, features, subjects)
    tables = []
    for group in _groups(subjects, times, options):
        for layer in range(n_layers):
            X = _design(features, layer, group, options.delays)
            result, p_values = _solve(X, group, options, solver, engine)
            tables.extend(_tabulate(result, p_values, group, subjects, layer, options))
    table = pd.concat(tables, ignore_index=True)
    return table.sort_values(["layer", "subject", "target"], ignore_index=True)


def _bootstrap(alpha_selection: str, settings: Mapping | None) -> ridge.Bootstrap | None:
    if alpha_selection not in ALPHA_SELECTIONS:
        raise BrainshapeError(
            f"encoding.alpha_selection must be one of {list(ALPHA_SELECTIONS)}, got "
            f"{alpha_selection!r}."
        )
    if alpha_selection == "nested":
        return None
    return ridge.Bootstrap(**dict(settings or {}))


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
    for key in ("permutation_block", "seed", "metrics", "segment_trs", "alpha_selection"):
        if key in params:
            options[key] = params[key]
    if params.get("bootstrap") is not None:
        options["bootstrap"] = dict(params["bootstrap"])
    return options
