"""Time the per-layer work of rule layer_diagrams with BLAS threads against one BLAS thread.

    python benchmarks/layer_threads.py                  # the demo's shape: 200 points, 576 dims
    python benchmarks/layer_threads.py --points 1000 --dims 4096 --layers 4

Each layer: the prepared cloud (standardised, distances, ranks), Vietoris-Rips diagrams
(giotto-ph with ``--threads`` threads) and RSA/debiased CKA against ``--clouds`` brain clouds,
as ``topology.layers.compute_layers`` and ``topology.pairs.pair_variant`` do. The reference
lets BLAS use ``--threads`` threads for the geometry (the previous behaviour);
``compute_layers`` now holds BLAS to one thread there while giotto-ph keeps its threads. Both
run in the same process on the same data; results are equal.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from brainshape.threads import limit_threads
from brainshape.topology import clouds, measures, persistence


def layer(pts, brains, threads: int, blas: int):
    with limit_threads(blas, blas_only=True):
        cloud = clouds.prepare(pts)
    dgms = persistence.diagrams(cloud.distances, 1, "giotto", threads)
    with limit_threads(blas, blas_only=True):
        geometry = [(measures.rsa(cloud, b), measures.cka_debiased(cloud, b)) for b in brains]
    return dgms, geometry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--dims", type=int, default=576)
    parser.add_argument("--layers", type=int, default=31)
    parser.add_argument("--clouds", type=int, default=10, help="brain clouds (subject x ROI)")
    parser.add_argument("--threads", type=int, default=2, help="the job's cores")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # Smooth in time, as resampled hidden states are: a random walk plus noise.
    walk = np.cumsum(rng.standard_normal((args.points, 8)), axis=0)
    mix = rng.standard_normal((8, args.dims))
    layer_clouds = [
        walk @ mix + rng.standard_normal((args.points, args.dims)) for _ in range(args.layers)
    ]
    brains = []
    for _ in range(args.clouds):
        b = walk[:, :3] + rng.standard_normal((args.points, 3))
        brains.append(clouds.prepare(b))

    def timed(blas):
        start, cpu = time.perf_counter(), time.process_time()
        out = [layer(c, brains, args.threads, blas) for c in layer_clouds]
        return time.perf_counter() - start, time.process_time() - cpu, out

    t_ref, c_ref, ref = timed(args.threads)
    t_new, c_new, new = timed(1)
    same = all(
        all(np.array_equal(a, b) for a, b in zip(r[0], n[0], strict=True))
        and np.allclose(r[1], n[1], atol=1e-12)
        for r, n in zip(ref, new, strict=True)
    )
    print(f"{args.layers} layers of {args.points} points x {args.dims} dims, {args.clouds} brain "
          f"clouds, giotto-ph threads {args.threads}, {os.cpu_count()} CPUs")  # fmt: skip
    print("| BLAS threads for the geometry | wall s | CPU s | speed-up (wall) | same results |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {args.threads} (reference) | {t_ref:.2f} | {c_ref:.2f} | 1.00 | |")
    print(f"| 1 | {t_new:.2f} | {c_new:.2f} | {t_ref / t_new:.2f} | {same} |")


if __name__ == "__main__":
    main()
