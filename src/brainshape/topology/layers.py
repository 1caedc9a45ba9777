"""The diagrams of every layer of a model variant (rule ``layer_diagrams``): its clouds at the
landmark volumes, prepared as every cloud is; nothing of the brain data enters."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from brainshape.threads import limit_threads
from brainshape.topology.clouds import landmark_resamplers, layer_cloud, prepare
from brainshape.topology.persistence import diagram_summaries, diagrams, save_diagrams
from brainshape.topology.timebase import read_stability, read_time_base


def compute_layers(
    features: Mapping[str, np.ndarray],
    words: pd.DataFrame,
    time_base: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    metric: str,
    components: int | None,
    maxdim: int,
    backend: str,
    window: float = 3,
    n_threads: int = 1,
) -> int:
    """Diagrams of every layer cloud, ``layer-<l>.npz`` in ``out_dir``; returns the layer count.

    The clouds are the layers' features Lanczos-resampled at the landmark volumes of
    ``time_base`` and prepared as every cloud is (:func:`prepare`); nothing of the brain data
    enters, so only a change of the time base, the features or the settings recomputes them.
    Each file holds ``dgm_<k>``, ``index`` and ``scale`` (the median distance the diagrams are
    in units of), and ``stability_<summary>_h<k>``: every summary of :data:`SUMMARIES` of the
    diagrams of the layer's clouds at the time base's extra landmark draws (one value per
    draw; :func:`~brainshape.topology.timebase.read_stability`).
    """
    base, index = read_time_base(time_base)
    extra = [landmark_resamplers(words, base, d, window) for d in read_stability(time_base)]
    resamplers = landmark_resamplers(words, base, index, window)
    n_layers = features[base.stories()[0]].shape[0]
    for layer in range(n_layers):
        # One BLAS thread around the persistent homology: BLAS threads alternating with
        # giotto-ph's threads on the same cores made a demo job 3 to 20 times slower
        # (docs/benchmarks.md).
        with limit_threads(1, blas_only=True):
            cloud = prepare(layer_cloud(features, resamplers, layer), metric, components)
        stability: dict[str, list[float]] = {}
        for other in extra:
            with limit_threads(1, blas_only=True):
                moved = prepare(layer_cloud(features, other, layer), metric, components)
            for dim, g in enumerate(diagrams(moved.distances, maxdim, backend, n_threads)):
                for name, v in diagram_summaries(g).items():
                    stability.setdefault(f"stability_{name}_h{dim}", []).append(v)
        save_diagrams(
            Path(out_dir) / f"layer-{layer}.npz",
            diagrams(cloud.distances, maxdim, backend, n_threads),
            index=index,
            scale=np.float64(cloud.scale),
            **{k: np.asarray(v, np.float64) for k, v in stability.items()},
        )
    return n_layers
