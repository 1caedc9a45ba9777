"""Brain maps of the brainscores: NIfTI images in the dataset's space, and their figures.

Per model variant (rule ``maps``), every target of every subject gets its score at its best
layer, the layer **chosen on the other subjects** at the same site (out of sample, with
:func:`brainshape.analysis.held_out_best`, the choice the tables make), so that no map shows a
maximum over layers taken on the data it scores. From those:

- per subject, on the grid of its own images: the score and the layer chosen;
- on the common grid (the first subject's grid, extended to hold every subject's voxels): the
  group, that is the mean over subjects of those scores, the layer most subjects' choices
  picked, how many subjects have the site, the q-value of the group score and the score minus
  each baseline; with ``maps.per_layer`` also the group mean at every layer (a 4-D image).

**Sites.** A target is matched across subjects by its site: a voxel by its world position
(``x, y, z`` of ``targets.parquet`` to 0.1 mm, as the ceiling stage matches voxels), an ROI
mean by its ROI and hemisphere. ROI means are painted on the atlas's voxels of their ROI x
hemisphere (one value per region). Targets without a site (the subject-native columns of
response matrices, as ds003020 ships them) or whose site no other subject has take the layer
chosen on the other subjects' mean over the ROI x hemisphere instead (``choice`` says which);
columns have no grid, so they are mapped in the tables only (``subjects.parquet``, rows in the
response file's column order).

**Group q-values.** At each layer, the subjects' per-target p-values (the encoding table's
``p_value``, against the pooled null of cross-validated copies) are combined with Stouffer's z;
a site's p-value is the smallest over layers times the number of layers, and Benjamini-Hochberg
runs over the sites of the map (:func:`site_p_values`). Why not the p-values at the held-out
layers: docs/methods.md.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from brainshape import analysis, scoring
from brainshape.errors import BrainshapeError
from brainshape.io import atomic_dir

log = logging.getLogger("brainshape")

#: q-value below which a site counts as found (figures show only those).
FDR_LEVEL = 0.05

#: How far (in voxels) a world position may lie from a voxel centre of the common grid and still
#: be that voxel; ``x, y, z`` are stored to 0.001 mm.
ON_GRID = 0.01

#: p-values are floored here before Stouffer's z (the normal quantile of 0 is infinite).
P_FLOOR = 1e-300

#: Decimals (mm) of the world position that matches voxels across subjects (the ceiling
#: stage's).
SITE_DECIMALS = 1

_XYZ = ["x", "y", "z"]
_IJK = ["i", "j", "k"]


# --- grids ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` (3 ints), ``affine`` (4 x 4: voxel indices to world mm) and the
    NIfTI ``code`` of its space (the sform code of the image it was read from: 4 = MNI)."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    code: int = 2

    def locate(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Voxel indices ``(n, 3)`` of world positions ``(n, 3)`` mm, and whether each lies on
        a voxel centre of this grid (within :data:`ON_GRID` voxels)."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        inverse = np.linalg.inv(self.affine)
        ijk = xyz @ inverse[:3, :3].T + inverse[:3, 3]
        rounded = np.rint(ijk)
        return rounded.astype(np.int64), (np.abs(ijk - rounded) <= ON_GRID).all(axis=1)

    def image(self, data: np.ndarray) -> nib.Nifti1Image:
        """A float32 NIfTI image of ``data`` (3-D, or 4-D with volumes last) on this grid."""
        img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), self.affine)
        img.set_sform(self.affine, code=self.code)
        img.set_qform(self.affine, code=self.code)
        img.header.set_xyzt_units("mm")
        return img


def read_grid(path: str | os.PathLike) -> Grid:
    """The grid of a NIfTI image (its header only: a 4-D BOLD costs no more than a mask)."""
    try:
        img = nib.load(str(path))
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as error:
        raise BrainshapeError(f"cannot read the grid of image {path} ({error})") from None
    if len(img.shape) < 3:
        raise BrainshapeError(f"image {path} has shape {img.shape}; expected a 3-D or 4-D image")
    _, code = img.header.get_sform(coded=True)
    return Grid(tuple(int(n) for n in img.shape[:3]), np.asarray(img.affine), int(code) or 2)


def atlas_voxels(
    atlas: tuple[str | os.PathLike, str | os.PathLike], grid: Grid, rois: Sequence[str] | None
) -> pd.DataFrame:
    """Every voxel of the selected atlas ROIs on ``grid``: ``roi``, ``hemisphere``, ``i, j, k``
    and ``x, y, z`` (the fMRI stage's assignment, :func:`brainshape.fmri.atlas_targets`, without
    a brain mask): where an ROI-mean target is painted."""
    from brainshape import fmri

    reference = nib.Nifti1Image(np.zeros(grid.shape, dtype=np.uint8), grid.affine)
    mask = np.ones(grid.shape, dtype=bool)
    table = fmri.atlas_targets(atlas[0], atlas[1], reference, mask, rois, mode="voxels").targets
    return table[["roi", "hemisphere", *_IJK, *_XYZ]]


# --- subjects and their sites -----------------------------------------------------------------


@dataclass
class Subject:
    """One subject as the maps see it: its ``targets`` table (``targets.parquet``), the ``grid``
    its ``i, j, k`` index (None for response matrices) and its ``footprint``: one row per
    (target, voxel) it paints, with ``i, j, k`` on ``grid`` and world ``x, y, z`` (empty where
    nothing is painted)."""

    targets: pd.DataFrame
    grid: Grid | None
    footprint: pd.DataFrame

    @property
    def sites(self) -> np.ndarray:
        """:func:`site_keys` of the targets (computed once)."""
        if getattr(self, "_sites", None) is None:
            self._sites = site_keys(self.targets)
        return self._sites


def place_subject(
    targets: pd.DataFrame, grid: Grid | None, atlas: pd.DataFrame | None = None
) -> Subject:
    """A :class:`Subject`: voxel targets paint themselves; ROI-mean targets paint the voxels of
    their ROI x hemisphere in ``atlas`` (:func:`atlas_voxels` on ``grid``); columns nothing."""
    columns = ["target", *_IJK, *_XYZ]
    if grid is None:
        footprint = pd.DataFrame(columns=columns)
    elif set(_IJK + _XYZ) <= set(targets.columns):
        footprint = targets[columns]
    elif atlas is not None and "column" not in targets.columns:
        footprint = targets[["target", "roi", "hemisphere"]].merge(
            atlas, on=["roi", "hemisphere"], how="inner"
        )[columns]
    else:
        footprint = pd.DataFrame(columns=columns)
    return Subject(targets=targets, grid=grid, footprint=footprint.reset_index(drop=True))


def site_keys(targets: pd.DataFrame) -> np.ndarray:
    """What matches each target across subjects, as strings: the world position of a voxel, the
    ROI and hemisphere of an ROI mean, '' for a subject-native column (nothing matches it)."""
    if set(_XYZ) <= set(targets.columns):
        xyz = targets[_XYZ].to_numpy(np.float64).round(SITE_DECIMALS) + 0.0  # no '-0.0'
        return np.array(["|".join(f"{v:.{SITE_DECIMALS}f}" for v in row) for row in xyz])
    if "column" in targets.columns:
        return np.full(len(targets), "", dtype=object).astype(str)
    return (targets["roi"].astype(str) + "|" + targets["hemisphere"].astype(str)).to_numpy()


# --- the best layer of each target, out of sample ----------------------------------------------


def held_out_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (subject, target) of one model variant: the layer chosen on the other subjects and
    this subject's score (and per-target ``p_value``) there.

    ``rows`` are the variant's encoding rows with their sites (:func:`with_sites`). A target
    whose site other subjects have takes the layer that maximises their mean score at that site
    (``choice`` ``target``); otherwise the layer that maximises the other subjects' mean score
    over its ROI x hemisphere (``choice`` ``roi``); with no other subject, none (``choice`` '';
    NaN score). Columns: ``subject``, ``target``, ``roi``, ``hemisphere``, ``site``,
    ``choice``, ``layer`` (int64, -1 for none), ``score``, ``p_value``.
    """
    chosen = _site_choice(rows)
    fallback = _roi_choice(rows, chosen)
    keys = rows.drop_duplicates(["subject", "target"])[["subject", "target", "roi", "hemisphere",
                                                        "site"]]  # fmt: skip
    table = keys.merge(pd.concat([chosen, fallback], ignore_index=True),
                       on=["subject", "target"], how="left")  # fmt: skip
    table["choice"] = table["choice"].fillna("")
    table["layer"] = table["layer"].fillna(-1).astype("int64")
    values = rows[["subject", "target", "layer", "score", "p_value"]]
    table = table.merge(values, on=["subject", "target", "layer"], how="left")
    return table.sort_values(["subject", "target"], ignore_index=True)


def with_sites(encoding: pd.DataFrame, subjects: Mapping[str, Subject]) -> pd.DataFrame:
    """A variant's encoding rows (``layer``, ``subject``, ``target``, ``roi``, ``hemisphere``,
    ``score``, ``p_value``; NaN p-values without permutations) with each target's ``site``
    (:func:`site_keys`; '' for none)."""
    missing = sorted(set(encoding["subject"].astype(str)) - set(subjects))
    if missing:
        raise BrainshapeError(
            f"the encoding table has subjects {missing} without an fMRI folder among the "
            "inputs; rerun the encode jobs of the dataset"
        )
    columns = ["layer", "subject", "target", "roi", "hemisphere", "score"]
    rows = encoding[columns + (["p_value"] if "p_value" in encoding else [])]
    rows = rows.reset_index(drop=True)
    rows["subject"] = rows["subject"].astype(str)
    if "p_value" not in rows:
        rows["p_value"] = np.nan
    site = np.empty(len(rows), dtype=object)
    target = rows["target"].to_numpy()
    for sub, index in rows.groupby("subject", sort=False).indices.items():
        site[index] = subjects[sub].sites[target[index]]
    rows["site"] = site
    return rows


def _site_choice(rows: pd.DataFrame) -> pd.DataFrame:
    """Layers chosen per target on the other subjects at the same site: the sites that the same
    subjects have go to :func:`brainshape.analysis.held_out_best_sites` together."""
    rows = rows[rows["site"] != ""]
    subs, sub_index = np.unique(rows["subject"].to_numpy(), return_inverse=True)
    layers, layer_index = np.unique(rows["layer"].to_numpy(), return_inverse=True)
    site_index, sites = pd.factorize(rows["site"], sort=True)
    scores = np.full((len(subs), len(layers), len(sites)), np.nan, dtype=np.float32)
    scores[sub_index, layer_index, site_index] = rows["score"].to_numpy()
    present = np.isfinite(scores).all(axis=1)  # (subjects, sites)
    patterns, pattern = np.unique(present.T, axis=0, return_inverse=True)
    out = []
    for p, who in enumerate(patterns):
        where = np.flatnonzero(pattern.ravel() == p)
        if who.sum() < 2:
            continue
        index, _ = analysis.held_out_best_sites(scores[who][:, :, where].astype(np.float64))
        for w, chosen in zip(np.flatnonzero(who), index, strict=True):
            out.append(pd.DataFrame({"subject": subs[w], "site": np.asarray(sites)[where],
                                     "layer": layers[chosen]}))  # fmt: skip
    chosen = pd.concat(out, ignore_index=True) if out else pd.DataFrame(
        columns=["subject", "site", "layer"])  # fmt: skip
    targets = rows.drop_duplicates(["subject", "target"])[["subject", "target", "site"]]
    chosen = targets.merge(chosen, on=["subject", "site"], how="inner").drop(columns="site")
    return chosen.assign(choice="target")


def _roi_choice(rows: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """Layers chosen on the other subjects' ROI x hemisphere means, for targets without a
    site-level choice."""
    done = pd.MultiIndex.from_frame(chosen[["subject", "target"]])
    todo = rows[~pd.MultiIndex.from_frame(rows[["subject", "target"]]).isin(done)]
    if todo.empty:
        return pd.DataFrame(columns=["subject", "target", "layer", "choice"])
    keys = ["layer", "subject", "roi", "hemisphere"]
    means = rows.groupby(keys, as_index=False)["score"].mean()
    counts = means.groupby(["roi", "hemisphere"])["subject"].transform("nunique")
    means = means[counts >= 2].assign(model="", variant="")
    if means.empty:
        return pd.DataFrame(columns=["subject", "target", "layer", "choice"])
    best = analysis.best_layers(means)[["subject", "roi", "hemisphere", "layer"]]
    targets = todo.drop_duplicates(["subject", "target"])[["subject", "target", "roi",
                                                           "hemisphere"]]  # fmt: skip
    picked = targets.merge(best, on=["subject", "roi", "hemisphere"], how="inner")
    return picked[["subject", "target", "layer"]].assign(choice="roi")


# --- the group --------------------------------------------------------------------------------


def site_p_values(rows: pd.DataFrame) -> pd.Series:
    """Per site, the p-value that some layer of the variant predicts it in these subjects.

    At each layer the subjects' per-target p-values (``rows``: :func:`with_sites`) are combined
    with Stouffer's z, ``sum(Phi^-1(1 - p_s)) / sqrt(n)``: at one layer the subjects are
    independent, so this is a valid p-value. The site's p-value is the smallest over layers
    times the number of layers (Bonferroni: valid however alike the layers are). Combining
    each subject's p-value at its own held-out layer instead is not valid: each subject's
    layer is chosen on the others' data, which makes the subjects' values depend on one another
    (without signal, p < 0.05 at 9% of sites with 30 subjects; docs/methods.md). NaN where no
    subject has a p-value (``encoding.n_permutations`` 0).
    """
    rows = rows[(rows["site"] != "") & rows["p_value"].notna()]
    z = -ndtri(np.clip(rows["p_value"].to_numpy(np.float64), P_FLOOR, 1.0))
    per = pd.DataFrame({"site": rows["site"].to_numpy(), "layer": rows["layer"].to_numpy(),
                        "z": z}).groupby(["site", "layer"])["z"].agg(["sum", "count"])  # fmt: skip
    p_layer = pd.Series(ndtr(-per["sum"] / np.sqrt(per["count"])), index=per.index)
    by_site = p_layer.groupby(level="site").agg(["min", "size"])
    return (by_site["min"] * by_site["size"]).clip(upper=1.0).rename("p_value")


def with_baselines(held: pd.DataFrame, baselines: pd.DataFrame | None) -> pd.DataFrame:
    """``held`` (:func:`held_out_scores`) with ``score_<baseline>`` and ``minus_<baseline>``
    (the held-out score minus it) per baseline of ``baselines`` (columns ``baseline``,
    ``subject``, ``target``, ``score``: the baseline tables of the dataset)."""
    if baselines is None or baselines.empty:
        return held
    for name, part in baselines.groupby("baseline", sort=True):
        base = part.assign(subject=part["subject"].astype(str))[["subject", "target", "score"]]
        held = held.merge(base.rename(columns={"score": f"score_{name}"}),
                          on=["subject", "target"], how="left")  # fmt: skip
        held[f"minus_{name}"] = held["score"] - held[f"score_{name}"]
    return held


def group_table(held: pd.DataFrame, p_values: pd.Series) -> pd.DataFrame:
    """Per site: the group of :func:`held_out_scores` over the subjects that have it.

    Columns: ``site``, ``roi``, ``hemisphere``, ``n_subjects`` (subjects with a held-out
    score), ``score`` (their mean), ``layer`` (the layer chosen most often; ties: the lowest),
    ``p_value`` (:func:`site_p_values`), ``q_value`` (Benjamini-Hochberg over the sites of the
    table), and the mean over subjects of every ``minus_<baseline>`` column of ``held``
    (:func:`with_baselines`).
    """
    found = held[(held["site"] != "") & held["score"].notna()]
    minus = [c for c in held.columns if c.startswith("minus_")]
    table = found.groupby("site", sort=True).agg(
        roi=("roi", "first"), hemisphere=("hemisphere", "first"),
        n_subjects=("subject", "nunique"), score=("score", "mean"),
        **{c: (c, "mean") for c in minus},
    ).reset_index()  # fmt: skip
    table.insert(5, "layer", _most_chosen(found).reindex(table["site"]).to_numpy())
    table.insert(6, "p_value", p_values.reindex(table["site"]).to_numpy(np.float64))
    table.insert(7, "q_value", scoring.fdr(table["p_value"].to_numpy()))
    table["n_subjects"] = table["n_subjects"].astype("int64")
    return table


def _most_chosen(found: pd.DataFrame) -> pd.Series:
    """Per site, the layer chosen for most subjects (ties: the lowest layer)."""
    counts = found.groupby(["site", "layer"]).size().rename("n").reset_index()
    counts = counts.sort_values(["site", "n", "layer"], ascending=[True, False, True])
    return counts.drop_duplicates("site").set_index("site")["layer"].astype("int64")


def layer_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Per site and layer, the mean score over the subjects that have the site (``rows``:
    :func:`with_sites`): one row per layer (index), one column per site (``maps.per_layer``)."""
    rows = rows[rows["site"] != ""]
    return rows.pivot_table(index="layer", columns="site", values="score", aggfunc="mean")


def site_means(values: pd.DataFrame, subjects: Mapping[str, Subject], column: str) -> pd.Series:
    """Per site, the mean of ``values[column]`` (one row per ``subject``, ``target``) over the
    subjects that have the site (NaN values left out)."""
    parts = []
    for sub, part in values.groupby(values["subject"].astype(str), sort=False):
        if sub in subjects:
            keys = subjects[sub].sites
            parts.append(pd.DataFrame({"site": keys[part["target"].to_numpy()],
                                       column: part[column].to_numpy()}))  # fmt: skip
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["site", column])
    return table[table["site"] != ""].groupby("site", sort=True)[column].mean()


# --- painting values on grids ------------------------------------------------------------------


@dataclass
class Painting:
    """Which value paints which voxel of ``grid``: ``voxels`` (flat indices, C order) take the
    values at ``items`` (indices into the values painted)."""

    grid: Grid
    voxels: np.ndarray
    items: np.ndarray

    def volume(self, values: np.ndarray) -> np.ndarray:
        """``values`` (one per item, or ``(n_volumes, n_items)``) as a 3-D (or 4-D, volumes
        last) float32 array; voxels nothing paints are NaN."""
        values = np.asarray(values, dtype=np.float32)
        stack = values[None] if values.ndim == 1 else values.reshape(-1, values.shape[-1])
        out = np.full((len(stack), int(np.prod(self.grid.shape))), np.nan, dtype=np.float32)
        out[:, self.voxels] = stack[:, self.items]
        out = out.reshape(len(stack), *self.grid.shape)
        return out[0] if values.ndim == 1 else np.moveaxis(out, 0, -1)

    def image(self, values: np.ndarray) -> nib.Nifti1Image:
        return self.grid.image(self.volume(values))


def subject_painting(subject: Subject) -> Painting | None:
    """Each target of ``subject`` painted on its own grid (items: target numbers)."""
    if subject.grid is None or subject.footprint.empty:
        return None
    ijk = subject.footprint[_IJK].to_numpy(np.int64)
    flat = np.ravel_multi_index(ijk.T, subject.grid.shape)
    return Painting(subject.grid, flat, subject.footprint["target"].to_numpy(np.int64))


def common_grid(subjects: Mapping[str, Subject]) -> Grid | None:
    """The first gridded subject's grid, extended (same voxel size and orientation) to hold
    every subject's voxels that lie on it; None when no subject has a grid."""
    gridded = [s for s in subjects.values() if s.grid is not None and not s.footprint.empty]
    if not gridded:
        return None
    reference = gridded[0].grid
    xyz = np.concatenate([s.footprint[_XYZ].to_numpy(np.float64) for s in gridded])
    ijk, on = reference.locate(xyz)
    low = np.minimum(ijk[on].min(axis=0), 0)
    high = np.maximum(ijk[on].max(axis=0) + 1, reference.shape)
    affine = reference.affine.copy()
    affine[:3, 3] = reference.affine[:3, :3] @ low + reference.affine[:3, 3]
    return Grid(tuple(int(n) for n in high - low), affine, reference.code)


def group_painting(subjects: Mapping[str, Subject], grid: Grid, sites: Sequence[str]) -> Painting:
    """Each of ``sites`` painted on the common ``grid`` at the voxels its targets cover in the
    subjects that have it (items: positions in ``sites``). Voxels off the grid (a subject with
    another voxel size or orientation) are left out, and counted in the log."""
    position = {site: n for n, site in enumerate(sites)}
    voxels, items, off = [], [], 0
    for subject in subjects.values():
        if subject.footprint.empty:
            continue
        keys = subject.sites[subject.footprint["target"].to_numpy(np.int64)]
        item = np.array([position.get(k, -1) for k in keys], dtype=np.int64)
        ijk, on = grid.locate(subject.footprint[_XYZ].to_numpy(np.float64))
        inside = on & (ijk >= 0).all(axis=1) & (ijk < grid.shape).all(axis=1)
        off += int((~inside).sum())
        keep = inside & (item >= 0)
        voxels.append(np.ravel_multi_index(ijk[keep].T, grid.shape))
        items.append(item[keep])
    if off:
        log.warning("%d voxels lie off the common grid (another voxel size or orientation); "
                    "they are in their subjects' own maps only", off)  # fmt: skip
    flat, first = np.unique(np.concatenate(voxels or [np.zeros(0, np.int64)]), return_index=True)
    return Painting(grid, flat, np.concatenate(items or [np.zeros(0, np.int64)])[first])


# --- one variant's maps, and the noise ceiling's -------------------------------------------------


@dataclass
class VariantMaps:
    """One model variant's maps: ``subjects`` (:func:`held_out_scores`, with ``minus_<baseline>``
    columns), ``group`` (:func:`group_table`), ``layers`` (:func:`layer_means`, or None), and how
    each is painted: ``common`` (None without a grid) and ``painted`` per subject."""

    subjects: pd.DataFrame
    group: pd.DataFrame
    layers: pd.DataFrame | None
    common: Painting | None
    painted: dict[str, Painting]
    deepest: int


def variant_maps(
    encoding: pd.DataFrame,
    subjects: Mapping[str, Subject],
    baselines: pd.DataFrame | None = None,
    *,
    per_layer: bool = False,
) -> VariantMaps:
    """Everything the ``maps`` rule writes for one model variant, from its encoding rows (every
    subject group), the subjects (:func:`place_subject`) and the baseline tables."""
    rows = with_sites(encoding, subjects)
    held = with_baselines(_with_columns(held_out_scores(rows), subjects), baselines)
    group = group_table(held, site_p_values(rows))
    layers = layer_means(rows) if per_layer else None
    grid = common_grid(subjects)
    common = None if grid is None else group_painting(subjects, grid, group["site"].tolist())
    painted = {sub: p for sub, s in subjects.items() if (p := subject_painting(s)) is not None}
    return VariantMaps(held, group, layers, common, painted, int(encoding["layer"].max()))


def _with_columns(held: pd.DataFrame, subjects: Mapping[str, Subject]) -> pd.DataFrame:
    """``held`` with ``column`` (the response file's column) after ``site`` where subjects'
    responses are matrices (-1 for the other subjects' targets); unchanged otherwise."""
    parts = [
        s.targets[["target", "column"]].assign(subject=sub)
        for sub, s in subjects.items()
        if "column" in s.targets.columns
    ]
    if not parts:
        return held
    held = held.merge(pd.concat(parts), on=["subject", "target"], how="left")
    held["column"] = held["column"].fillna(-1).astype("int64")
    order = list(held.columns)
    order.insert(order.index("site") + 1, order.pop(order.index("column")))
    return held[order]


def _subject_values(table: pd.DataFrame, sub: str, column: str, n_targets: int) -> np.ndarray:
    values = np.full(n_targets, np.nan)
    part = table[table["subject"].astype(str) == sub]
    values[part["target"].to_numpy(np.int64)] = part[column].to_numpy(np.float64)
    return values


def write_variant_maps(out_dir: str | os.PathLike, maps: VariantMaps,
                       subjects: Mapping[str, Subject]) -> None:  # fmt: skip
    """Write a variant's folder (docs/outputs.md, ``maps/<model>/<variant>/``) at once."""
    minus = [c for c in maps.group.columns if c.startswith("minus_")]
    with atomic_dir(out_dir, rule="maps") as tmp:
        maps.subjects.to_parquet(tmp / "subjects.parquet", index=False)
        maps.group.to_parquet(tmp / "group.parquet", index=False)
        info = {"deepest_layer": maps.deepest, "subjects": sorted(subjects),
                "mapped": sorted(maps.painted)}  # fmt: skip
        (tmp / "maps.json").write_text(json.dumps(info, indent=2) + "\n")
        if maps.common is not None:
            group = {
                "score": maps.group["score"],
                "layer": maps.group["layer"],
                "n_subjects": maps.group["n_subjects"],
                **{c: maps.group[c] for c in minus},
            }
            if maps.group["p_value"].notna().any():
                group["q"] = maps.group["q_value"]
            for name, values in group.items():
                nib.save(maps.common.image(values.to_numpy(np.float64)), tmp / f"{name}.nii.gz")
            if maps.layers is not None:
                wide = maps.layers.reindex(columns=maps.group["site"]).to_numpy(np.float64)
                nib.save(maps.common.image(wide), tmp / "layers.nii.gz")
        for sub, painting in maps.painted.items():
            folder = tmp / f"sub-{sub}"
            folder.mkdir()
            n = len(subjects[sub].targets)
            for name in ("score", "layer"):
                values = _subject_values(maps.subjects, sub, name, n)
                if name == "layer":
                    values[values < 0] = np.nan
                nib.save(painting.image(values), folder / f"{name}.nii.gz")


def write_ceiling_maps(out_dir: str | os.PathLike, ceiling: pd.DataFrame,
                       subjects: Mapping[str, Subject]) -> None:  # fmt: skip
    """Write the noise ceiling's folder (``maps/ceiling/``): the mean ceiling over subjects on
    the common grid and each subject's on its own grid (NaN where it has none)."""
    group = site_means(ceiling, subjects, "ceiling")
    grid = common_grid(subjects)
    with atomic_dir(out_dir, rule="ceiling_map") as tmp:
        if grid is not None:
            painting = group_painting(subjects, grid, group.index.tolist())
            nib.save(painting.image(group.to_numpy(np.float64)), tmp / "ceiling.nii.gz")
        for sub, subject in subjects.items():
            painting = subject_painting(subject)
            if painting is None:
                continue
            (tmp / f"sub-{sub}").mkdir()
            values = _subject_values(ceiling, sub, "ceiling", len(subject.targets))
            nib.save(painting.image(values), tmp / f"sub-{sub}" / "ceiling.nii.gz")


# --- reading what the rules wrote ---------------------------------------------------------------


def load_subjects(
    fmri_dirs: Sequence[str | os.PathLike],
    grids: Mapping[str, str | None],
    atlas: Sequence[str] | None = None,
    rois: Sequence[str] | None = None,
) -> dict[str, Subject]:
    """:func:`place_subject` of every subject folder (``fmri/sub-<sub>/``), with its grid read
    from ``grids[sub]`` (an image; None for response matrices) and, for ROI-mean targets, the
    ROIs of ``atlas`` (image, labels) on that grid (read once per distinct grid)."""
    from brainshape.subjects import read_subject

    on_grid: dict[tuple, pd.DataFrame] = {}
    out = {}
    for folder in fmri_dirs:
        sub = Path(folder).name.removeprefix("sub-")
        targets = read_subject(folder, mmap=True).targets
        grid = None if grids.get(sub) is None else read_grid(grids[sub])
        voxels = None
        if grid is not None and atlas is not None and not set(_IJK) <= set(targets.columns):
            key = (grid.shape, grid.affine.tobytes())
            if key not in on_grid:
                on_grid[key] = atlas_voxels((atlas[0], atlas[1]), grid, rois)
            voxels = on_grid[key]
        out[sub] = place_subject(targets, grid, voxels)
    return out


def read_encoding(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """The rows of encoding tables (one model variant's subject groups) the maps need."""
    columns = ["layer", "subject", "target", "roi", "hemisphere", "score", "p_value"]
    frames = []
    for path in paths:
        frame = pd.read_parquet(path)
        missing = [c for c in columns[:-1] if c not in frame.columns]
        if missing:
            raise BrainshapeError(f"encoding table {path} lacks columns {missing}; rerun its "
                                  "encode job")  # fmt: skip
        frames.append(frame[[c for c in columns if c in frame.columns]])
    return pd.concat(frames, ignore_index=True)


def read_baselines(paths: Sequence[str | os.PathLike]) -> pd.DataFrame | None:
    """The baseline tables' ``baseline``, ``subject``, ``target`` and ``score``; None if none."""
    frames = [pd.read_parquet(p, columns=["baseline", "subject", "target", "score"])
              for p in paths]  # fmt: skip
    return pd.concat(frames, ignore_index=True) if frames else None


# --- figures ------------------------------------------------------------------------------------

#: Share of the fsaverage5 cortex a grid must hold for its maps to be drawn on the surface too.
SURFACE_COVERAGE = 0.5


def found(group: pd.DataFrame) -> np.ndarray:
    """Which sites of a group table are found: q-value below :data:`FDR_LEVEL` (every site with
    a score when the table has no q-values: ``encoding.n_permutations`` 0)."""
    q = group["q_value"].to_numpy(np.float64)
    if np.isfinite(q).any():
        return q < FDR_LEVEL
    return group["score"].notna().to_numpy()


@dataclass
class MapRow:
    """One row of a map figure, read from a variant's maps folder (:func:`read_row`): the group
    ``score``, ``q`` (None without permutations) and ``layer`` images, the deepest layer of the
    variant, and how many of its sites are found."""

    label: str
    score: nib.Nifti1Image
    q: nib.Nifti1Image | None
    layer: nib.Nifti1Image
    deepest: int
    n_found: int
    n_sites: int

    def shown(self) -> tuple[np.ndarray, np.ndarray]:
        """The score where found (0 elsewhere), and there the layer as 1 + layer / deepest."""
        score = np.nan_to_num(np.asarray(self.score.dataobj, dtype=np.float64))
        keep = score != 0
        if self.q is not None:
            keep &= np.nan_to_num(np.asarray(self.q.dataobj, dtype=np.float64), nan=1.0) < FDR_LEVEL
        layer = np.nan_to_num(np.asarray(self.layer.dataobj, dtype=np.float64))
        return np.where(keep, score, 0.0), np.where(keep, 1 + layer / max(self.deepest, 1), 0.0)


def read_row(folder: str | os.PathLike, label: str) -> MapRow | None:
    """The :class:`MapRow` of a variant's maps folder; None where it holds no group map (no
    subject has a grid)."""
    folder = Path(folder)
    if not (folder / "score.nii.gz").is_file():
        return None
    group = pd.read_parquet(folder / "group.parquet")
    info = json.loads((folder / "maps.json").read_text())
    q = folder / "q.nii.gz"
    return MapRow(
        label=label, score=nib.load(folder / "score.nii.gz"),
        q=nib.load(q) if q.is_file() else None, layer=nib.load(folder / "layer.nii.gz"),
        deepest=int(info["deepest_layer"]), n_found=int(found(group).sum()), n_sites=len(group),
    )  # fmt: skip


def colour_scale(rows: Sequence[MapRow]) -> float:
    """One colour scale for a figure set: the largest absolute score shown in any of ``rows``,
    rounded up to 0.05 (at least 0.05)."""
    peak = max((float(np.abs(r.shown()[0]).max()) for r in rows), default=0.0)
    return max(float(np.ceil(peak * 20 - 1e-9) / 20), 0.05)


def surface_allowed(img: nib.Nifti1Image, space: str | None) -> bool:
    """Whether maps on the grid of ``img`` can be drawn on the fsaverage surface: a template
    space of the MNI152 family whose field of view holds at least :data:`SURFACE_COVERAGE` of
    the cortex."""
    if not space or not space.startswith("MNI152"):
        return False
    from nilearn import datasets

    mesh = datasets.load_fsaverage("fsaverage5")["pial"]
    xyz = np.concatenate([mesh.parts[h].coordinates for h in ("left", "right")])
    inverse = np.linalg.inv(img.affine)
    ijk = xyz @ inverse[:3, :3].T + inverse[:3, 3]
    inside = ((ijk >= -0.5) & (ijk <= np.asarray(img.shape[:3]) - 0.5)).all(axis=1)
    return bool(inside.mean() >= SURFACE_COVERAGE)


def _glass(ax, img, *, cmap, vmin, vmax, title) -> None:
    from nilearn import plotting

    # nilearn runs a full garbage collection for every view it draws; with the tables of a job
    # in memory that was half of each call. Objects made so far need no collecting.
    gc.freeze()

    plotting.plot_glass_brain(
        img, axes=ax, display_mode="lyrz", colorbar=False, plot_abs=False, cmap=cmap, vmin=vmin,
        vmax=vmax, threshold=1e-9, symmetric_cbar=False, annotate=False,
    )  # fmt: skip
    if title:
        ax.set_title(title, fontsize=9)


def _surface(ax, img, hemi: str, *, vmax) -> None:
    from nilearn import datasets, plotting, surface

    mesh = datasets.load_fsaverage("fsaverage5")
    sulcal = datasets.load_fsaverage_data(mesh="fsaverage5", data_type="sulcal")
    data = np.asarray(img.dataobj)
    # vol_to_surf extrapolates linearly past the grid's last voxels: keep the data's range.
    texture = np.clip(np.nan_to_num(surface.vol_to_surf(img, mesh["pial"].parts[hemi])),
                      data.min(), data.max())  # fmt: skip
    plotting.plot_surf_stat_map(
        mesh["inflated"].parts[hemi], texture, hemi=hemi, view="lateral", axes=ax,
        bg_map=sulcal.data.parts[hemi], colorbar=False, threshold=1e-9, vmin=-vmax, vmax=vmax,
        cmap="RdBu_r", symmetric_cbar=False,
    )  # fmt: skip
    ax.set_title(f"{hemi}, lateral", fontsize=8)


def _colour_bars(fig, vmax: float) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bottom = 1.25 / fig.get_figheight()
    for left, norm, cmap, label in (
        (0.06, Normalize(-vmax, vmax), "RdBu_r", "score: held-out r at the best layer"),
        (0.56, Normalize(0, 1), "viridis", "best layer / deepest layer"),
    ):
        cax = fig.add_axes((left, bottom, 0.36, 0.12 / fig.get_figheight()))
        fig.colorbar(ScalarMappable(norm, cmap), cax=cax, orientation="horizontal", label=label)


def map_figure(rows: Sequence[MapRow], *, vmax: float, title: str, note: str,
               surface: bool = False):  # fmt: skip
    """Glass brains of each row's group score where found (:meth:`MapRow.shown`) on the colour
    scale ``-vmax .. vmax``, beside the layer chosen there as a share of the deepest layer, and
    with ``surface`` the score on the fsaverage5 surface (left and right, lateral). ``note`` goes
    under the figure (its n, what is shown and how it is thresholded). Returns the figure."""
    from brainshape import figures

    plt = figures.pyplot()
    n_cols = 4 if surface else 2
    fig = plt.figure(figsize=(10.4 + 2.6 * (n_cols - 2), 2.2 * len(rows) + 2.2))
    height = fig.get_figheight()
    layout = fig.add_gridspec(
        len(rows), n_cols, width_ratios=[2, 2] + [1] * (n_cols - 2), left=0.02, right=0.98,
        top=1 - 0.55 / height, bottom=1.9 / height, hspace=0.3, wspace=0.05,
    )  # fmt: skip
    for r, row in enumerate(rows):
        score, depth = row.shown()
        score_img = nib.Nifti1Image(score.astype(np.float32), row.score.affine)
        found = f"{row.label}: score ({row.n_found} of {row.n_sites} sites found)"
        _glass(fig.add_subplot(layout[r, 0]), score_img, cmap="RdBu_r", vmin=-vmax, vmax=vmax,
               title=found)  # fmt: skip
        depth_img = nib.Nifti1Image(depth.astype(np.float32), row.score.affine)
        _glass(fig.add_subplot(layout[r, 1]), depth_img, cmap="viridis", vmin=1, vmax=2,
               title=f"{row.label}: best layer (of {row.deepest})")  # fmt: skip
        for c, hemi in enumerate(("left", "right")[: n_cols - 2]):
            ax = fig.add_subplot(layout[r, 2 + c], projection="3d")
            _surface(ax, score_img, hemi, vmax=vmax)
    _colour_bars(fig, vmax)
    fig.suptitle(title)
    figures.footnote(fig, note)
    return fig


def map_note(counts: Mapping | None, targets: str, vmax: float) -> str:
    """The footnote of a model's map figure: its n, what a site is, how sites are found."""
    from brainshape import figures

    what = ("voxels matched across subjects by world position" if targets == "voxels" else
            "ROI x hemispheres (ROI-mean targets: each painted on its atlas voxels with its one "
            "value)")  # fmt: skip
    return (
        f"{figures.counts_text(counts)}; sites: {what}. Shown: the group score (mean over "
        "subjects of each subject's held-out r at the layer chosen on the other subjects) where "
        f"its q-value is below {FDR_LEVEL} (at each layer the subjects' per-target p-values "
        "combined with Stouffer's z, the smallest over layers times the number of layers, "
        "Benjamini-Hochberg over the sites of the map); elsewhere empty. One colour scale, "
        f"-{vmax:g} to {vmax:g}, for every model of the "
        "dataset. Best layer: the layer most subjects' out-of-sample choices picked."
    )


def ceiling_figure(img: nib.Nifti1Image, *, title: str, note: str):
    """Glass brain of the group noise ceiling (0 to 1; sites without a ceiling empty)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from brainshape import figures

    plt = figures.pyplot()
    fig = plt.figure(figsize=(8, 3.8))
    values = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32))
    _glass(fig.add_axes((0.02, 0.3, 0.96, 0.58)), nib.Nifti1Image(values, img.affine),
           cmap="viridis", vmin=0, vmax=1, title=None)  # fmt: skip
    fig.colorbar(ScalarMappable(Normalize(0, 1), "viridis"), orientation="horizontal",
                 cax=fig.add_axes((0.3, 0.22, 0.4, 0.03)), label="noise ceiling (r)")  # fmt: skip
    fig.suptitle(title)
    figures.footnote(fig, note, width=130)
    return fig


def ceiling_note(counts: Mapping | None) -> str:
    """The footnote of the noise ceiling's map."""
    from brainshape import figures

    return (
        f"{figures.counts_text(counts)}. The mean over subjects of each subject's noise "
        "ceiling (the r a perfect model of the signal the subjects share would reach, from its "
        "ISC with the mean of the others); empty where no subject has one (ISC not above 0). "
        "Not thresholded: the ROI x hemispheres whose ceiling is reliably above 0 are listed in "
        "the summary."
    )
