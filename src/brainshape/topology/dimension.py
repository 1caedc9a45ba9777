"""The intrinsic dimension of a cloud: how many directions its points spread in.

Persistence summaries and Wasserstein distances of a layer's diagram grow with the dimension its
points fill (docs/methods.md, section 3), so a layer's dimension enters the regressions'
nuisance model beside depth and size. Two estimates of a prepared cloud
(:class:`brainshape.topology.clouds.Cloud`):

- :func:`participation_ratio`: ``(sum l)^2 / sum l^2`` of the variances ``l`` along the cloud's
  principal axes, a linear count of the directions that carry variance (from 1 to the rank);
- :func:`twonn`: the TwoNN estimate (Facco et al. 2017, *Scientific Reports* 7: 12140) from the
  ratio of each point's second- to first-nearest-neighbour distance, which also sees curved,
  low-dimensional shapes in many columns.
"""

from __future__ import annotations

import numpy as np

from brainshape.topology.clouds import Cloud


def participation_ratio(cloud: Cloud) -> float:
    """``(sum l)^2 / sum l^2`` of the eigenvalues ``l`` of the cloud's Gram matrix (the
    variances along its principal axes, up to a common factor); NaN for a constant cloud."""
    eigenvalues = np.clip(np.linalg.eigvalsh(cloud.gram), 0.0, None)
    total = float(eigenvalues.sum())
    square = float((eigenvalues**2).sum())
    return total * total / square if square > 0 else float("nan")


def twonn(cloud: Cloud) -> float:
    """TwoNN intrinsic dimension: the maximum-likelihood ``(n - 1) / sum log(r2 / r1)``, with
    ``r1`` and ``r2`` each point's distances to its nearest and second-nearest other point.

    Points with a duplicate (``r1`` 0) are left out; NaN with fewer than 3 points left.
    """
    d = np.array(cloud.distances, dtype=np.float64, copy=True)
    np.fill_diagonal(d, np.inf)
    nearest = np.partition(d, 1, axis=1)[:, :2]
    r1, r2 = nearest[:, 0], nearest[:, 1]
    ok = (r1 > 0) & np.isfinite(r2)
    logs = np.log(r2[ok] / r1[ok])
    if ok.sum() < 3 or logs.sum() <= 0:
        return float("nan")
    return float((ok.sum() - 1) / logs.sum())


#: Columns each layer's row gets (``layer_<name>``).
DIMENSIONS = {"participation_ratio": participation_ratio, "twonn": twonn}
