"""Every layer of a model variant paired with every brain cloud (rule ``topology_pairs``):
Wasserstein distances between their diagrams, diagram summaries, and the geometry measures
beside their null."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainshape.errors import BrainshapeError
from brainshape.topology.clouds import Cloud, landmark_resamplers, layer_cloud, prepare
from brainshape.topology.measures import MEASURES
from brainshape.topology.nulls import against_null, shifted
from brainshape.topology.persistence import (
    SUMMARIES,
    diagram_summaries,
    load_diagrams,
    wasserstein,
)
from brainshape.topology.timebase import read_time_base


def check_settings(topology: Mapping, targets: str) -> None:
    """Refuse, in one line, settings under which a brain cloud cannot carry the stimulus, and
    measure or summary names that are not registered."""
    emb = topology["embedding"]
    if targets == "roi_mean" and int(emb["dimension"]) < 2:
        raise BrainshapeError(
            f"topology.embedding.dimension is {emb['dimension']}: with fmri.targets roi_mean each "
            "brain cloud would be one column (one number per volume), which has no geometry; "
            "set topology.embedding.dimension to 2 or more (default 4), or fmri.targets: voxels"
        )
    if targets == "roi_mean" and topology["metric"] == "correlation":
        raise BrainshapeError(
            "topology.metric correlation centres each point of an ROI-mean cloud across its "
            "embedding lags, which removes the response level the subjects share; set "
            "topology.metric: euclidean, or fmri.targets: voxels"
        )
    for key, table in (("measures", MEASURES), ("summaries", SUMMARIES)):
        unknown = [n for n in topology[key] if n not in table]
        if unknown:
            raise BrainshapeError(
                f"topology.{key} lists {unknown}, not known; use some of {sorted(table)}"
            )


def _same_landmarks(found: np.ndarray, expected: np.ndarray, path: Path, rule: str) -> None:
    if found.shape != expected.shape or not np.array_equal(found, expected):
        raise BrainshapeError(
            f"{path} was computed at other landmark volumes than the dataset's time base; rerun "
            f"rule {rule} (snakemake -R {rule})"
        )


@dataclass
class _Brain:
    """One brain cloud of ``topology_brain``: its row of ``clouds.parquet``, its diagrams and its
    whole series (the shifted clouds of the null are cut from it)."""

    info: object
    dgms: list[np.ndarray]
    series: np.ndarray


def _brains(brain_dir: Path, index: np.ndarray, shifts: Sequence[int]) -> Iterator[_Brain]:
    """Every brain cloud of ``brain_dir``, one at a time, checked against the time base."""
    for row in pd.read_parquet(brain_dir / "clouds.parquet").itertuples():
        path = brain_dir / f"{row.cloud}.npz"
        dgms, extra = load_diagrams(path)
        _same_landmarks(extra["index"], index, path, "topology_brain")
        _same_landmarks(extra["shifts"], np.asarray(shifts), path, "topology_brain")
        yield _Brain(info=row, dgms=dgms, series=extra["series"].astype(np.float64))


def _layers(layers_dir, features, resamplers, index, metric, components, summary_names) -> list:
    """Every layer: (layer, prepared cloud, diagrams, ``layer_<summary>_h<k>`` values)."""
    out = []
    for layer in range(next(iter(features.values())).shape[0]):
        path = Path(layers_dir) / f"layer-{layer}.npz"
        if not path.is_file():
            raise BrainshapeError(f"{path} is missing; rerun rule layer_diagrams for this variant")
        dgms, extra = load_diagrams(path)
        _same_landmarks(extra["index"], index, path, "layer_diagrams")
        cloud = prepare(layer_cloud(features, resamplers, layer), metric, components)
        values = {
            f"layer_{k}_h{dim}": v
            for dim, g in enumerate(dgms)
            for k, v in diagram_summaries(g, summary_names).items()
        }
        out.append((layer, cloud, dgms, values))
    return out


def _tag(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:g}"


def wasserstein_column(q: float, p: float, dim: int) -> str:
    """Column name of a Wasserstein distance: ``wasserstein_q<q>_p<p>_h<dim>``."""
    return f"wasserstein_q{_tag(q)}_p{_tag(p)}_h{dim}"


def _pair_row(layer, brain: _Brain, versions: Sequence[Cloud], orders, measures) -> dict:
    """Wasserstein distances and geometry (with its null) of one layer against one brain cloud.

    ``versions[0]`` is the brain cloud at the landmarks, the others its shifted copies.
    """
    number, cloud, ldgms, lsum = layer
    row: dict = {"layer": int(number)}
    row.update({k: getattr(brain.info, k) for k in ("subject", "roi", "hemisphere")})
    for o in orders:
        for dim, (g, h) in enumerate(zip(ldgms, brain.dgms, strict=True)):
            row[wasserstein_column(o["q"], o["p"], dim)] = wasserstein(g, h, o["q"], o["p"])
    row.update(lsum)
    for name in measures:
        m = MEASURES[name]
        row.update(against_null(name, [m.function(cloud, v) for v in versions], m.closer))
    return row


def pair_variant(
    layers_dir: str | os.PathLike,
    brain_dir: str | os.PathLike,
    features: Mapping[str, np.ndarray],
    words: pd.DataFrame,
    time_base: str | os.PathLike,
    *,
    orders: Sequence[Mapping[str, float]],
    metric: str,
    components: int | None,
    measures: Sequence[str],
    summaries: Sequence[str],
    window: float = 3,
) -> pd.DataFrame:
    """One row per (layer, brain cloud): Wasserstein distances, diagram summaries, geometry.

    ``orders`` lists ``{"q": q, "p": p}`` pairs; ``measures`` and ``summaries`` name entries of
    :data:`MEASURES` and :data:`SUMMARIES`. Columns: ``layer``, ``subject``, ``roi``,
    ``hemisphere``; ``wasserstein_q<q>_p<p>_h<k>`` per order and dimension (between the two
    clouds' diagrams, which do not know which volume is which: no time-shift null can move
    them); ``layer_<summary>_h<k>``; ``brain_<summary>_h<k>``; and the five columns of
    :func:`null_columns` per measure (the layer cloud against the brain cloud and against each
    shifted copy). Each layer cloud is rebuilt from the features (a resampling, cheap next to
    its diagram).
    """
    base, index, shifts = read_time_base(time_base)
    unknown = [n for n in measures if n not in MEASURES]
    if unknown:
        raise BrainshapeError(
            f"topology.measures lists {unknown}, not known; use some of {sorted(MEASURES)}"
        )
    resamplers = landmark_resamplers(words, base, index, window)
    layers = _layers(layers_dir, features, resamplers, index, metric, components, summaries)
    rows = []
    for brain in _brains(Path(brain_dir), index, shifts):
        versions = [
            prepare(shifted(brain.series, index, s), metric, components) for s in [0, *shifts]
        ]
        bsum = {
            f"brain_{k}_h{dim}": v
            for dim, g in enumerate(brain.dgms)
            for k, v in diagram_summaries(g, summaries).items()
        }
        for layer in layers:
            row = _pair_row(layer, brain, versions, orders, measures)
            row.update(bsum)
            rows.append(row)
    table = pd.DataFrame(rows)
    front = ["layer", "subject", "roi", "hemisphere"]
    wcols = [c for c in table.columns if c.startswith("wasserstein_")]
    summ = [c for c in table.columns if c.startswith(("layer_", "brain_"))]
    rest = [c for c in table.columns if c not in front + wcols + summ]
    table = table[front + wcols + summ + rest]
    table["layer"] = table["layer"].astype("int64")
    return table
