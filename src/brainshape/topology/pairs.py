"""Every layer of a model variant paired with every brain cloud (rule ``topology_pairs``):
Wasserstein distances between their diagrams, diagram summaries, and the geometry measures
beside their null."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainshape.errors import BrainshapeError
from brainshape.topology.clouds import (
    Cloud,
    landmark_resamplers,
    layer_cloud,
    prepare,
    time_base_resamplers,
)
from brainshape.topology.dimension import DIMENSIONS
from brainshape.topology.measures import MEASURES
from brainshape.topology.nulls import (
    PLAN_COLUMNS,
    NullSettings,
    autocorrelation_time,
    geometry_values,
    null_maxima,
    null_rows,
    plan_null,
    shiftable,
    story_parts,
)
from brainshape.topology.persistence import (
    SUMMARIES,
    diagram_summaries,
    load_diagrams,
    wasserstein,
)
from brainshape.topology.timebase import read_stability, read_time_base, restrict

log = logging.getLogger("brainshape")


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
    whole series (the null's clouds are cut from it)."""

    info: object
    dgms: list[np.ndarray]
    series: np.ndarray


def _brains(brain_dir: Path, index: np.ndarray) -> Iterator[_Brain]:
    """Every brain cloud of ``brain_dir``, one at a time, checked against the time base."""
    for row in pd.read_parquet(brain_dir / "clouds.parquet").itertuples():
        path = brain_dir / f"{row.cloud}.npz"
        dgms, extra = load_diagrams(path)
        _same_landmarks(extra["index"], index, path, "topology_brain")
        yield _Brain(info=row, dgms=dgms, series=extra["series"].astype(np.float64))


@dataclass
class _Layer:
    """One layer of the variant: its prepared cloud at the landmarks, its stored diagrams, the
    columns that describe it alone (``layer_*``), its autocorrelation time (s) and its clouds at
    the extra landmark draws (``others``)."""

    number: int
    cloud: Cloud
    dgms: list[np.ndarray]
    columns: dict
    tau_s: float
    others: list[Cloud]


def _spread(values: Sequence[float]) -> float:
    """Standard deviation over landmark draws (the first value the table's own)."""
    return float(np.std(values, ddof=1))


def _landmark_columns(dgms, extra, cloud, others, summaries) -> dict:
    """``*_landmark_sd`` of a layer's own columns over the landmark draws: its diagram summaries
    (from its diagrams job) and its intrinsic dimension."""
    out = {}
    for dim, g in enumerate(dgms):
        for k, v in diagram_summaries(g, summaries).items():
            key = f"stability_{k}_h{dim}"
            if key in extra:
                out[f"layer_{k}_h{dim}_landmark_sd"] = _spread([v, *extra[key]])
    for k, f in DIMENSIONS.items():
        out[f"layer_{k}_landmark_sd"] = _spread([f(c) for c in [cloud, *others]])
    return out


def _layers(layers_dir, features, words, base, index, stored, window, settings) -> list[_Layer]:
    """Every layer of the variant (``settings``: metric, components, summaries, the extra
    landmark draws ``stability``), its cloud at the landmarks ``index`` of ``base``;
    ``stored``: the landmarks its diagrams were made at."""
    draws = [landmark_resamplers(words, base, d, window) for d in settings["stability"]]
    resamplers = landmark_resamplers(words, base, index, window)
    whole = time_base_resamplers(words, base, window)
    out = []
    for layer in range(next(iter(features.values())).shape[0]):
        path = Path(layers_dir) / f"layer-{layer}.npz"
        if not path.is_file():
            raise BrainshapeError(f"{path} is missing; rerun rule layer_diagrams for this variant")
        dgms, extra = load_diagrams(path)
        _same_landmarks(extra["index"], stored, path, "layer_diagrams")
        cloud = prepare(
            layer_cloud(features, resamplers, layer), settings["metric"], settings["components"]
        )
        tau = autocorrelation_time(
            story_parts(layer_cloud(features, whole, layer), base), base.seconds_per_point()
        )
        values = {
            f"layer_{k}_h{dim}": v
            for dim, g in enumerate(dgms)
            for k, v in diagram_summaries(g, settings["summaries"]).items()
        }
        values.update({f"layer_{k}": f(cloud) for k, f in DIMENSIONS.items()})
        m, c = settings["metric"], settings["components"]
        others = [prepare(layer_cloud(features, r, layer), m, c) for r in draws]
        if others:
            values.update(_landmark_columns(dgms, extra, cloud, others, settings["summaries"]))
        out.append(_Layer(layer, cloud, dgms, {**values, "layer_tau_s": tau}, tau, others))
    return out


def _tag(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:g}"


def wasserstein_column(q: float, p: float, dim: int) -> str:
    """Column name of a Wasserstein distance: ``wasserstein_q<q>_p<p>_h<dim>``."""
    return f"wasserstein_q{_tag(q)}_p{_tag(p)}_h{dim}"


def _distances(layer: _Layer, brain: _Brain, orders) -> dict:
    """The Wasserstein distances between one layer's and one brain cloud's diagrams."""
    return {
        wasserstein_column(o["q"], o["p"], dim): wasserstein(g, h, o["q"], o["p"])
        for o in orders
        for dim, (g, h) in enumerate(zip(layer.dgms, brain.dgms, strict=True))
    }


def _geometry(brain, layers, base, index, null, settings) -> tuple[float, list[dict], np.ndarray]:
    """The brain cloud's autocorrelation time, per layer its geometry beside the null, and the
    null's per-draw maxima (:func:`~brainshape.topology.nulls.null_maxima`).

    One null serves the layers that can have one: its shifts are set by the slowest of them and
    the brain cloud. A layer too slow for any shift of these stories gets none (NaN), so that it
    does not take the null away from the others.
    """
    tau = autocorrelation_time(story_parts(brain.series, base), base.seconds_per_point())
    fits = [shiftable(base, max(tau, layer.tau_s), null) for layer in layers]
    slowest = max([tau, *(layer.tau_s for layer, ok in zip(layers, fits, strict=True) if ok)])
    plan = plan_null(base, index, slowest, null)
    if plan.scheme == "none" or not all(fits):
        why = plan.reason or f"{fits.count(False)} layer(s) change too slowly for these stories"
        log.warning("%s: layers without a null for the geometry: %s", brain.info.cloud, why)
    out: list = [None] * len(layers)
    maxima = np.full(null.draws, np.nan)
    for ok, group_plan in ((True, plan), (False, plan.without_draws())):
        members = [k for k, fit in enumerate(fits) if fit == ok]
        values = geometry_values(
            [layers[k].cloud for k in members], brain.series, index, group_plan,
            settings["measures"], settings["metric"], settings["components"],
        )  # fmt: skip
        for k, v in zip(members, null_rows(values, group_plan, settings["measures"]), strict=True):
            out[k] = v
        if ok and len(group_plan.rows):
            maxima = null_maxima(values, settings["measures"])
    return tau, out, maxima


def _brain_rows(brain, layers, base, index, null, orders, settings) -> list[dict]:
    """The rows of one brain cloud: every layer against it, with the null of its geometry; the
    distances between diagrams and the brain's summaries with ``orders`` (none for a part of
    the time base, whose brain cloud has no diagram of its own)."""
    tau, geometry, maxima = _geometry(brain, layers, base, index, null, settings)
    if brain.info.subject == "group":
        settings["maxima"].append(maxima)
    site = {k: getattr(brain.info, k) for k in ("subject", "roi", "hemisphere")}
    bsum = {
        f"brain_{k}_h{dim}": v
        for dim, g in enumerate(brain.dgms if orders is not None else [])
        for k, v in diagram_summaries(g, settings["summaries"]).items()
    }
    spread = _geometry_spread(brain, layers, settings)
    return [
        {"layer": layer.number, **site, **_distances(layer, brain, orders or []),
         **layer.columns, **bsum, "brain_tau_s": tau, **values, **sd}
        for layer, values, sd in zip(layers, geometry, spread, strict=True)
    ]  # fmt: skip


def _geometry_spread(brain, layers, settings) -> list[dict]:
    """Per layer, ``<measure>_landmark_sd``: the measure's standard deviation over the landmark
    draws (the brain cloud and the layer cloud both taken at each draw); none without draws."""
    draws = settings["stability"]
    if not draws:
        return [{} for _ in layers]
    m, c = settings["metric"], settings["components"]
    brains = [prepare(brain.series[d], m, c) for d in [settings["index"], *draws]]
    out = []
    for layer in layers:
        clouds = [layer.cloud, *layer.others]
        out.append({
            f"{name}_landmark_sd": _spread([MEASURES[name].function(a, b)
                                            for a, b in zip(clouds, brains, strict=True)])
            for name in settings["measures"]
        })  # fmt: skip
    return out


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
    null: NullSettings | None = None,
    window: float = 3,
    only_stories: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per (layer, brain cloud): Wasserstein distances, diagram summaries, geometry.

    ``orders`` lists ``{"q": q, "p": p}`` pairs; ``measures`` and ``summaries`` name entries of
    :data:`MEASURES` and :data:`SUMMARIES`; ``null`` sets the null of the geometry (default
    :class:`NullSettings`). Columns: ``layer``, ``subject``, ``roi``, ``hemisphere``;
    ``wasserstein_q<q>_p<p>_h<k>`` per order and dimension (between the two clouds' diagrams,
    which do not know which volume is which: no time-shift null can move them);
    ``layer_<summary>_h<k>``, ``layer_participation_ratio`` and ``layer_twonn`` (its intrinsic
    dimension, :mod:`~brainshape.topology.dimension`), ``layer_tau_s`` (the layer cloud's
    autocorrelation time);
    ``brain_<summary>_h<k>``, ``brain_tau_s``; the five columns of :func:`null_columns` per
    measure; and how the null was made (:data:`PLAN_COLUMNS`). Each layer cloud is rebuilt from
    the features (a resampling, cheap next to its diagram). ``table.attrs["null_max_z"]``: per
    null draw the largest standardised null value over the layers, group brain clouds and
    measures (:func:`~brainshape.topology.nulls.null_maxima`; empty without a null), for the
    family-wise p-values of :func:`~brainshape.topology.nulls.family_wise`.

    ``only_stories`` (a half of cross-fitting, :mod:`brainshape.crossfit`): the clouds, their
    geometry, null, autocorrelation and dimension on those stories' landmarks alone; the
    layer's diagram summaries stay those of the whole time base (they involve no fMRI), and the
    Wasserstein distances and brain summaries, whose brain diagrams hold every story, are left
    out.
    """
    base, stored = read_time_base(time_base)
    index, kept = stored, None
    if only_stories is not None:
        base, index, kept = restrict(base, stored, only_stories)
    unknown = [n for n in measures if n not in MEASURES]
    if unknown:
        raise BrainshapeError(
            f"topology.measures lists {unknown}, not known; use some of {sorted(MEASURES)}"
        )
    null = null or NullSettings()
    null.check()
    settings = {"metric": metric, "components": components}
    settings.update(measures=list(measures), summaries=list(summaries), maxima=[])
    # The extra landmark draws (none on a half of the stories: they hold every story).
    settings.update(index=index, stability=read_stability(time_base) if kept is None else [])
    layers = _layers(layers_dir, features, words, base, index, stored, window, settings)
    rows = []
    for brain in _brains(Path(brain_dir), stored):
        if kept is not None:
            brain.series = brain.series[kept]
        whole = orders if kept is None else None
        rows += _brain_rows(brain, layers, base, index, null, whole, settings)
    table = pd.DataFrame(rows)
    front = ["layer", "subject", "roi", "hemisphere"]
    wcols = [c for c in table.columns if c.startswith("wasserstein_")]
    summ = [c for c in table.columns if c.startswith(("layer_", "brain_"))]
    plan = [c for c in PLAN_COLUMNS if c in table.columns]
    rest = [c for c in table.columns if c not in front + wcols + summ + plan]
    table = table[front + wcols + summ + rest + plan]
    table["layer"] = table["layer"].astype("int64")
    table["null_draws"] = table["null_draws"].astype("int64")
    table["null_stories"] = table["null_stories"].astype("int64")
    found = [m for m in settings["maxima"] if np.isfinite(m).any()]
    table.attrs["null_max_z"] = np.nanmax(np.vstack(found), axis=0) if found else np.zeros(0)
    return table
