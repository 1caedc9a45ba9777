"""The brain clouds of a dataset (rule ``topology_brain``): one per ROI x hemisphere (and subject),
with its diagrams and its whole series, from which the null's time-shifted copies are cut."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brainshape.errors import BrainshapeError
from brainshape.io import save_parquet
from brainshape.topology.clouds import brain_clouds, prepare
from brainshape.topology.persistence import diagrams, save_diagrams
from brainshape.topology.timebase import base_members, read_time_base


def _cloud_name(key: tuple[str, str, str]) -> str:
    who, roi, hemi = key
    who = who if who == "group" else f"sub-{who}"
    return f"{who}_{roi}_{hemi}"


def compute_brain(
    fmri_dirs: Sequence[str | os.PathLike],
    time_base: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    metric: str,
    components: int | None,
    embedding: Mapping[str, float],
    maxdim: int,
    backend: str,
    per_subject: bool,
    n_threads: int = 1,
) -> pd.DataFrame:
    """Diagrams of every brain cloud, one ``<who>_<roi>_<hemi>.npz`` each in ``out_dir``.

    The clouds are taken at the landmarks of ``time_base`` (:func:`write_time_base`), which must
    still describe the subjects' runs. Each file holds ``dgm_<k>`` (the cloud's diagrams, in
    units of its median distance), ``scale`` (that median), ``series`` (the whole cloud before
    standardisation, one row per point of the time base: the null's clouds are cut from it)
    and ``index``. Returns (and writes as ``clouds.parquet``) the list:
    ``cloud``, ``subject``, ``roi``, ``hemisphere``, ``n_points``, ``n_columns``.
    """
    base, index = read_time_base(time_base)
    fmri_dirs = base_members(fmri_dirs, base)
    if not fmri_dirs:
        raise BrainshapeError(
            f"{time_base} no longer matches the subjects' runs (a replaced derivative with "
            f"another length, or changed trimming?); delete it so that rule topology_timebase "
            "computes it again, with every layer's diagrams"
        )
    subjects = {Path(d).name.removeprefix("sub-"): d for d in fmri_dirs}
    clouds = brain_clouds(subjects, base, embedding=embedding, per_subject=per_subject)
    rows = []
    for key, series in clouds.items():
        cloud = prepare(series[index], metric, components)
        name = _cloud_name(key)
        save_diagrams(
            Path(out_dir) / f"{name}.npz",
            diagrams(cloud.distances, maxdim, backend, n_threads),
            scale=np.float64(cloud.scale),
            series=series.astype(np.float32),
            index=index,
        )
        rows.append((name, key[0], key[1], key[2], len(index), series.shape[1]))
    table = pd.DataFrame(
        rows, columns=["cloud", "subject", "roi", "hemisphere", "n_points", "n_columns"]
    )
    save_parquet(Path(out_dir) / "clouds.parquet", table)
    return table
