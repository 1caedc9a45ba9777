"""The one clock: where each row of a run's responses sits on its story's word-timing clock.

Word timings (``words.parquet``: ``onset``, ``offset``) are seconds on the clock of the file
that gave them (an aligner's output, relative to the audio). A run of responses is placed on
that clock by its ``offset`` in ``runs.json`` (the word time at the start of the response
file's first row, from the runs sheet), its ``tr`` and its trimming: row ``k`` of the file
covers word time ``[offset + k tr, offset + (k + 1) tr)`` and is stamped at its middle. Every
stage that pairs words with volumes (encoding, baselines, noise ceilings, the shape stage's
clouds, and whatever comes next) asks this module, so that a dataset whose runs start 10 s
before its words (ds003020) or 3 s after them (Narratives) is read the same way everywhere.

A run here is a mapping with ``n_trs``, ``tr`` and, where they apply, ``offset`` (default 0),
``trim_start``, ``trim_end`` (default 0) and ``removed_end`` (default 0): one entry of a
subject folder's ``runs.json`` (:mod:`brainshape.subjects`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from brainshape.errors import BrainshapeError


def tr_times(n_trs: int, tr: float) -> np.ndarray:
    """Times in seconds of the volumes of one run, from the start of its first volume, shape
    (n_trs,).

    Volume k is stamped at ``k * tr + tr / 2``: the middle of its acquisition. Add the run's
    ``offset`` to put them on the word clock (:func:`volume_times`).
    """
    if isinstance(n_trs, bool) or int(n_trs) != n_trs or n_trs < 0:
        raise BrainshapeError(f"n_trs must be a non-negative whole number of volumes, got {n_trs}.")
    if not (math.isfinite(tr) and tr > 0):
        raise BrainshapeError(f"tr must be a positive number of seconds, got {tr}.")
    return np.arange(int(n_trs), dtype=np.float64) * float(tr) + float(tr) / 2


def volume_times(run: Mapping) -> np.ndarray:
    """Word-clock times (s) of every volume of the run's response file, shape (n_trs,):
    ``offset + (k + 1/2) tr``."""
    return float(run.get("offset", 0.0)) + tr_times(int(run["n_trs"]), float(run["tr"]))


def kept_rows(run: Mapping) -> slice:
    """The rows of the response file that the fMRI stage keeps (``[trim_start, n_trs -
    trim_end)``): one per row of the subject's story array."""
    return slice(int(run.get("trim_start", 0)), int(run["n_trs"]) - int(run.get("trim_end", 0)))


def kept_times(run: Mapping) -> np.ndarray:
    """Word-clock times (s) of the kept volumes, one per row of the subject's story array."""
    return volume_times(run)[kept_rows(run)]


def run_start(run: Mapping) -> float:
    """Word time (s) at the start of the response file's first volume: the run's ``offset``."""
    return float(run.get("offset", 0.0))


def scan_end(run: Mapping) -> float:
    """Word time (s) up to which the scan lasted: the file's volumes and the ones the dataset
    removed after them (``removed_end``)."""
    n = int(run["n_trs"]) + int(run.get("removed_end", 0))
    return run_start(run) + n * float(run["tr"])
