"""Cross-fitting: shape features from one half of the stories, brainscores from the other.

Shape features that involve the brain (the geometry of a layer against a brain cloud) and
brainscores computed on the same volumes share those volumes' noise, so a regression of one on
the other can find that noise. Cross-fitting splits a dataset's stories into two halves, A and
B (:func:`halves`), that share no volume: brainscores come from encoding models fitted and
scored within one half (``encode_half`` jobs), shape features from the clouds of the other half
(``topology_pairs_half``), and the regressions pair features of A with scores of B and features
of B with scores of A. Features of the layer alone (its persistence summaries and intrinsic
dimension) involve no fMRI and are taken from the whole time base.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from brainshape.errors import BrainshapeError
from brainshape.subjects import SubjectData

#: The two halves of a dataset's stories.
HALVES = ("A", "B")

#: Stories a dataset needs for ``regressions.crossfit: auto`` to cross-fit: three per half, the
#: fewest that nested leave-one-story-out encoding accepts (one scored, two to choose alphas).
MIN_STORIES = 6


def halves(stories: Sequence[str]) -> dict[str, list[str]]:
    """The stories in sorted order, alternately to A and B (so both halves span the dataset)."""
    ordered = sorted(stories)
    return {"A": ordered[0::2], "B": ordered[1::2]}


def half_stories(stories: Sequence[str], half: str) -> list[str]:
    """The stories of ``half`` (``A`` or ``B``)."""
    if half not in HALVES:
        raise BrainshapeError(f"cross-fitting half '{half}' is not one of {list(HALVES)}")
    return halves(stories)[half]


def planned(
    setting: bool | str,
    stories: Sequence[str],
    min_stories: int = MIN_STORIES,
    heard: Mapping[str, Sequence[str]] | None = None,
) -> bool:
    """Whether a dataset with ``stories`` is cross-fitted under ``regressions.crossfit``.

    ``auto``: where it has ``min_stories`` or more and every subject (``heard``: subject -> the
    stories they heard) heard half as many of each half; ``true``: refused, naming the subject,
    where one heard no story of a half.
    """
    split = halves(stories)
    per_half = {
        sub: min(len(set(mine) & set(split[h])) for h in HALVES)
        for sub, mine in (heard or {}).items()
    }
    if setting == "auto":
        enough = min(per_half.values(), default=min_stories) >= min_stories // 2
        return len(stories) >= min_stories and enough
    if setting and len(stories) < 2:
        raise BrainshapeError(
            f"regressions.crossfit is true but the dataset has {len(stories)} story; cross-"
            "fitting needs two halves of stories: set regressions.crossfit: auto or false"
        )
    lacking = sorted(sub for sub, n in per_half.items() if n == 0)
    if setting and lacking:
        raise BrainshapeError(
            f"regressions.crossfit is true but sub-{lacking[0]} heard no story of one half "
            f"(A: {', '.join(split['A'])}; B: {', '.join(split['B'])}); set "
            "regressions.crossfit: auto or false"
        )
    return bool(setting)


def restrict(subjects: Mapping[str, SubjectData], stories: Sequence[str]) -> dict:
    """The subjects' data limited to ``stories`` (subjects who heard none of them left out)."""
    keep = set(stories)
    out = {}
    for sub, data in subjects.items():
        mine = sorted(keep & set(data.runs))
        if mine:
            out[sub] = SubjectData(
                data={s: data.data[s] for s in mine},
                targets=data.targets,
                runs={s: data.runs[s] for s in mine},
            )
    if not out:
        raise BrainshapeError(
            f"no subject heard any of the stories {sorted(keep)} of this cross-fitting half; "
            "set regressions.crossfit: false"
        )
    return out


#: Fewest voxels of an ROI x hemisphere a half's encode job keeps (all where it has fewer).
MIN_SAMPLED_VOXELS = 10


def voxel_sample(targets: pd.DataFrame, fraction: float, least: int = MIN_SAMPLED_VOXELS):
    """Rows of ``targets`` (a subject's targets table) that a half's encode job fits: of each
    ROI x hemisphere's voxels, ``ceil(fraction x n)`` (at least ``least``, at most all), evenly
    spread in target order (the fMRI stage orders voxels by grid position, so the sample spans
    the region). ROI-mean targets (or ``fraction`` 1) are all kept.

    The same voxels serve every layer and variant, so the error of estimating an ROI's mean
    score from its sample is shared by the scores a regression compares; what differs from
    layer to layer is estimated almost as well as from every voxel.
    """
    voxels = "i" in targets.columns and bool(targets["n_voxels"].eq(1).all())
    if not voxels or fraction >= 1:
        return np.arange(len(targets))
    keep = []
    for _, rows in targets.groupby(["roi", "hemisphere"], sort=False):
        index = rows.index.to_numpy()
        count = min(len(index), max(least, math.ceil(fraction * len(index))))
        keep.append(index[np.unique(np.round(np.linspace(0, len(index) - 1, count)).astype(int))])
    return np.sort(np.concatenate(keep))


def sample_voxels(subjects: Mapping[str, SubjectData], fraction: float) -> dict[str, SubjectData]:
    """The subjects with only the voxels :func:`voxel_sample` keeps (targets renumbered, their
    grid and world positions kept)."""
    out = {}
    for sub, data in subjects.items():
        rows = voxel_sample(data.targets, fraction)
        targets = data.targets.iloc[rows].reset_index(drop=True)
        targets["target"] = np.arange(len(targets), dtype=np.int64)
        out[sub] = SubjectData(
            data={s: np.asarray(x)[:, rows] for s, x in data.data.items()},
            targets=targets,
            runs=data.runs,
        )
    return out


def sampled_count(targets: int, fraction: float, sites: int) -> int:
    """Targets per subject a half's encode job keeps, for planning: ``targets`` voxels over
    ``sites`` ROI x hemispheres (as :func:`voxel_sample`, from the mean site size)."""
    if fraction >= 1 or sites <= 0 or targets <= sites:
        return targets
    per_site = targets / sites
    kept = min(per_site, max(MIN_SAMPLED_VOXELS, math.ceil(fraction * per_site)))
    return min(targets, math.ceil(kept * sites))
