"""Which rows train and which are held out: contiguous folds, bootstrap chunks, permutations.

Time-ordered fMRI is never split by shuffled rows. An outer fold holds out one story
(``contiguous_folds(run_lengths)``) or one contiguous block of TRs (``contiguous_folds(run_lengths,
n_blocks=...)``), with ``gap`` TRs dropped from the training rows on either side of it
(``folds_from_segments``); ``check_time_ordered`` refuses splits whose held-out rows are not one
contiguous block, the signature of a shuffled K-fold. The alpha of each target is chosen on the
training rows of an outer fold, either by the inner folds of the other segments
(``nested_splits``) or by random held-out chunks of contiguous TRs (``bootstrap_splits``, as
ds003020's authors choose theirs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from brainshape.errors import BrainshapeError

Split = tuple[np.ndarray, np.ndarray]


def contiguous_folds(run_lengths: Sequence[int], n_blocks: int | None = None) -> list[np.ndarray]:
    """Held-out segments (row indices) of the concatenated runs, in time order.

    With ``n_blocks=None`` each run (story) is one segment: leave one story out. Otherwise the
    concatenated rows are cut into ``n_blocks`` contiguous blocks of near-equal length. Use
    ``folds_from_segments`` to turn segments into (train, test) splits with a gap.
    """
    lengths = [int(n) for n in run_lengths]
    n = sum(lengths)
    if n_blocks is None:
        edges = np.cumsum([0, *lengths])
    else:
        if isinstance(n_blocks, bool) or int(n_blocks) != n_blocks or n_blocks < 3:
            raise BrainshapeError(
                f"encoding.n_blocks must be a whole number of at least 3 (one block held out "
                f"for scoring, two to choose alphas), got {n_blocks!r}."
            )
        if n_blocks > n:
            raise BrainshapeError(f"encoding.n_blocks ({n_blocks}) exceeds the {n} TRs.")
        edges = np.linspace(0, n, int(n_blocks) + 1).round().astype(int)
    return [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def folds_from_segments(segments: Sequence[np.ndarray], gap: int = 0) -> list[Split]:
    """Leave-one-segment-out splits; training rows within ``gap`` rows of the test are dropped.

    ``segments`` hold row indices in increasing order. The gap is measured in rows of the
    concatenation (TRs), so it keeps the haemodynamic tail of the held-out block out of the
    training set of a block split.
    """
    if isinstance(gap, bool) or int(gap) != gap or gap < 0:
        raise BrainshapeError(f"encoding.gap must be a non-negative number of TRs, got {gap!r}.")
    splits = []
    for i, test in enumerate(segments):
        train = np.concatenate([s for j, s in enumerate(segments) if j != i])
        if gap and test.size:
            near = (train >= test[0] - gap) & (train <= test[-1] + gap)
            train = train[~near]
        splits.append((train, np.asarray(test)))
    return splits


def check_time_ordered(splits: Sequence[Split], n_rows: int) -> None:
    """Refuse splits that are not contiguous: time-ordered data never get shuffled folds.

    Every held-out set must be one run of consecutive rows in increasing order, disjoint from
    its training rows and inside ``[0, n_rows)``. A shuffled K-fold fails on the first fold.
    """
    for k, (train, test) in enumerate(splits):
        test = np.asarray(test)
        train = np.asarray(train)
        if test.size == 0:
            raise BrainshapeError(f"fold {k}: the held-out set is empty.")
        if test.min() < 0 or test.max() >= n_rows or (train.size and train.max() >= n_rows):
            raise BrainshapeError(f"fold {k}: row indices fall outside the {n_rows} TRs.")
        if not np.array_equal(test, np.arange(test[0], test[0] + test.size)):
            raise BrainshapeError(
                f"fold {k}: the held-out TRs are not one contiguous block in time order (a "
                "shuffled or interleaved split). fMRI time series are autocorrelated, so such "
                "a split leaks the held-out signal into training; hold out whole stories "
                "(encoding.folds: stories) or contiguous blocks with a gap (encoding.folds: "
                "blocks, encoding.gap)."
            )
        if np.intersect1d(train, test).size:
            raise BrainshapeError(f"fold {k}: training and held-out rows overlap.")


def nested_splits(
    segments: Sequence[np.ndarray], training: Sequence[int], i: int, train: np.ndarray, gap: int
) -> list[Split]:
    """The inner folds of outer fold ``i``: leave one of the other training segments out.

    ``train`` holds the fold's training rows (gap rows already dropped); the splits are
    positions in ``train`` (rows of ``X[train]``), with the same ``gap``.
    """
    inner = [segments[j][np.isin(segments[j], train)] for j in training if j != i]
    inner = [s for s in inner if s.size]
    position = np.full(int(train.max()) + 1, -1)
    position[train] = np.arange(train.size)
    return [(position[a], position[b]) for a, b in folds_from_segments(inner, gap)]


@dataclass(frozen=True)
class Bootstrap:
    """Alpha selection by random held-out chunks (``encoding.alpha_selection: bootstrap``).

    Each of ``draws`` draws holds out ``held_out`` of the fold's training TRs as chunks of
    ``chunk_trs`` contiguous TRs, chosen at random without replacement (seeded), fits on the
    rest and scores every alpha by the Pearson r over the held-out chunks; each target takes
    the alpha with the best mean r over the draws (ds003020's authors' ``bootstrap_ridge``).
    """

    chunk_trs: int = 40
    draws: int = 50
    held_out: float = 0.2

    def checked(self) -> Bootstrap:
        for key in ("chunk_trs", "draws"):
            value = getattr(self, key)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise BrainshapeError(
                    f"encoding.bootstrap.{key} must be a positive whole number, got {value!r}."
                )
        if not 0 < float(self.held_out) < 1:
            raise BrainshapeError(
                "encoding.bootstrap.held_out is the share of the training TRs held out in each "
                f"draw: a number between 0 and 1 (ds003020's authors hold out about 0.2), got "
                f"{self.held_out!r}."
            )
        return Bootstrap(int(self.chunk_trs), int(self.draws), float(self.held_out))

    def chunks_held(self, n_train: int) -> int:
        """Chunks held out per draw from ``n_train`` training TRs (at least one)."""
        return max(1, int(round(self.held_out * n_train / self.chunk_trs)))


def training_chunks(train: np.ndarray, chunk_trs: int) -> list[np.ndarray]:
    """Positions in ``train`` (sorted row indices) of its chunks of ``chunk_trs`` consecutive
    rows: each run of consecutive rows is cut from its start; the remainder of a run (fewer
    than ``chunk_trs`` rows) is never held out."""
    breaks = np.flatnonzero(np.diff(train) != 1) + 1
    chunks = []
    for start, stop in zip(np.r_[0, breaks], np.r_[breaks, train.size], strict=True):
        for a in range(start, stop - chunk_trs + 1, chunk_trs):
            chunks.append(np.arange(a, a + chunk_trs))
    return chunks


def bootstrap_splits(train: np.ndarray, spec: Bootstrap, seed: int, fold: int) -> list[Split]:
    """The ``spec.draws`` bootstrap splits of one outer fold's training rows ``train``.

    Returns (training, held-out) positions in ``train``; the held-out chunks of a draw are
    ``spec.chunks_held(train.size)`` chunks of :func:`training_chunks`, drawn without
    replacement by ``numpy.random.default_rng([seed, fold])``, so a draw depends only on the
    seed, the fold and its training rows.
    """
    chunks = training_chunks(np.asarray(train), spec.chunk_trs)
    held = spec.chunks_held(train.size)
    if held >= len(chunks):
        raise BrainshapeError(
            f"encoding.bootstrap: a fold's {train.size} training TRs hold {len(chunks)} chunks of "
            f"{spec.chunk_trs} contiguous TRs, and a held-out share of {spec.held_out:g} needs "
            f"{held} of them, leaving none to train on; lower encoding.bootstrap.chunk_trs or "
            "encoding.bootstrap.held_out."
        )
    rng = np.random.default_rng([int(seed), int(fold)])
    everything = np.arange(train.size)
    splits = []
    for _ in range(spec.draws):
        picked = np.sort(rng.choice(len(chunks), size=held, replace=False))
        test = np.concatenate([chunks[c] for c in picked])
        splits.append((np.setdiff1d(everything, test), test))
    return splits


def fold_sizes(
    segments: Sequence[np.ndarray],
    gap: int = 0,
    test: Sequence[int] | None = None,
    bootstrap: Bootstrap | None = None,
) -> tuple[tuple[int, int, tuple[tuple[int, int], ...]], ...]:
    """Per scored outer fold ``(training rows, held-out rows, inner splits)``, each inner split
    ``(training rows, validation rows)``: the shape of the work ``cross_validate`` does with
    these arguments (``ridge.cost``, ``resources.encode_flops``), without the data."""
    n = len(segments)
    scored = list(range(n)) if test is None else sorted({int(i) for i in test})
    training = [j for j in range(n) if j not in scored] if test is not None else scored
    outer = folds_from_segments(segments, gap)
    if test is not None:
        kept = np.concatenate([segments[j] for j in training])
        outer = [(train[np.isin(train, kept)], held) for train, held in outer]
    sizes = []
    for i in scored:
        train, held = outer[i]
        if bootstrap is None:
            splits = nested_splits(segments, training, i, train, gap)
            inner = tuple((a.size, b.size) for a, b in splits)
        else:
            out = bootstrap.chunks_held(train.size) * bootstrap.chunk_trs
            inner = ((train.size - out, out),) * bootstrap.draws
        sizes.append((int(train.size), int(held.size), inner))
    return tuple(sizes)


def block_permutations(
    lengths: Sequence[int], n_permutations: int, block: int, seed: int = 0
) -> list[np.ndarray]:
    """Per held-out fold, ``n_permutations`` row orders that shuffle blocks of ``block`` TRs.

    Returns one (n_permutations, n_i) integer array per fold of length ``n_i``. Blocks keep
    the autocorrelation of the data inside them, so the null respects it.
    """
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        starts = np.arange(0, n, block)
        blocks = [np.arange(s, min(s + block, n)) for s in starts]
        orders = np.empty((n_permutations, n), dtype=np.int64)
        for q in range(n_permutations):
            orders[q] = np.concatenate([blocks[i] for i in rng.permutation(len(blocks))])
        out.append(orders)
    return out
