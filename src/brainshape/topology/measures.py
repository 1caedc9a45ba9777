"""Geometry measures between a layer cloud and a brain cloud: RSA, debiased CKA, Procrustes, CKA.

Each is a function of two prepared clouds (:class:`brainshape.topology.clouds.Cloud`), and
:data:`MEASURES` is their registry: adding one is an entry there and its function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from brainshape.errors import BrainshapeError
from brainshape.topology.clouds import Cloud, hsic_grams


def rsa(x: Cloud, y: Cloud) -> float:
    """Spearman correlation between the two clouds' distances over distinct pairs."""
    return float(x.ranks @ y.ranks)


def procrustes(x: Cloud, y: Cloud) -> float:
    """Procrustes disparity of the paired standardised clouds: 0 same shape, 1 unrelated.

    Both are centred and scaled to unit Frobenius norm; the disparity is what is left after the
    best rotation and scaling of ``y`` onto ``x`` (as ``scipy.spatial.procrustes``):
    ``1 - ||x^T y||_*^2``.
    """
    nx, ny = np.linalg.norm(x.points), np.linalg.norm(y.points)
    if nx == 0 or ny == 0:
        return float("nan")
    nuclear = np.linalg.svd((x.points / nx).T @ (y.points / ny), compute_uv=False).sum()
    return float(max(0.0, 1.0 - nuclear**2))


def cka(x: Cloud, y: Cloud) -> float:
    """Linear CKA: ``||x^T y||_F^2 / (||x^T x||_F ||y^T y||_F)`` (as ``<K, L> / (||K|| ||L||)``
    with the Gram matrices). Biased upward by the clouds' effective rank (Kornblith et al.
    2019); kept beside :func:`cka_debiased` for comparison."""
    den = np.linalg.norm(x.gram) * np.linalg.norm(y.gram)
    return float(np.einsum("ij,ij->", x.gram, y.gram) / den) if den > 0 else float("nan")


def hsic_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased HSIC estimator (Song et al. 2012) of the linear kernels of ``x`` and ``y``.

    With ``K = x x^T``, ``L = y y^T`` (n x n) and their diagonals set to 0 (``K~``, ``L~``):
    ``[tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2 / (n-2) 1^T K~ L~ 1] / (n (n-3))``.
    Its expectation is the population HSIC: 0 for independent rows of ``x`` and ``y``, whatever
    their widths.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 4:
        raise BrainshapeError(f"debiased CKA needs at least 4 points, got {len(x)}")
    return hsic_grams(x @ x.T, y @ y.T)


def cka_debiased(x: Cloud, y: Cloud) -> float:
    """Debiased linear CKA: :func:`hsic_unbiased` normalised (Kornblith et al. 2019, with the
    unbiased estimator); about 0 for unrelated clouds whatever their width or effective rank."""
    if x.hsic <= 0 or y.hsic <= 0:
        return float("nan")
    return float(hsic_grams(x.gram, y.gram) / math.sqrt(x.hsic * y.hsic))


@dataclass(frozen=True)
class Measure:
    """A geometry measure between a layer cloud and a brain cloud (:class:`Cloud` each).

    ``closer``: ``"higher"`` when a larger value means more alike (the one-sided p of the null
    looks there), ``"lower"`` for a distance. Each measure ``name`` fills the columns of
    :func:`null_columns`.
    """

    function: Callable[[Cloud, Cloud], float]
    closer: str
    description: str


#: Geometry measures by name: adding one is an entry here and its function.
MEASURES: dict[str, Measure] = {
    "rsa": Measure(rsa, "higher", "Spearman correlation of the two clouds' distances"),
    "cka_debiased": Measure(cka_debiased, "higher", "debiased linear CKA (unbiased HSIC)"),
    "procrustes": Measure(procrustes, "lower", "Procrustes disparity, 0 same shape, 1 unrelated"),
    "cka": Measure(cka, "higher", "linear CKA, biased upward by effective rank"),
}
