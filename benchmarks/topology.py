"""Time per persistence diagram (Vietoris-Rips, H0 + H1) for each library, side by side.

    python benchmarks/topology.py [--sizes 500 1000 2000] [--repeats 1] [--threads 2]

Clouds look like the pipeline's: volumes of a 64-dimensional representation (a slow trajectory
plus noise), correlation distance, every point kept. For each size every library gets the same
distance matrix; the table gives seconds per diagram (best of ``--repeats``) and the ratio to
the chosen default (giotto-ph), and checks that the diagrams agree. Both libraries run on the
CPU. (GUDHI builds the whole Rips complex and is not practical beyond a few hundred points.)
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from brainshape import topology


def cloud(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 6 * np.pi, n)
    basis = rng.standard_normal((4, dim))
    slow = np.stack([np.sin(t), np.cos(t), np.sin(t / 3), np.cos(t / 3)], axis=1) @ basis
    return slow + 0.8 * rng.standard_normal((n, dim))


def timed(fn, repeats: int):
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="giotto-ph threads")
    args = parser.parse_args()
    libs = {
        "giotto-ph": lambda d: topology.diagrams(d, 1, "giotto", n_threads=args.threads),
        "ripser": lambda d: topology.diagrams(d, 1, "ripser"),
    }
    cpus = len(os.sched_getaffinity(0))
    print(f"# {platform.machine()}, {cpus} usable CPUs, giotto-ph threads: {args.threads}")
    print("| points | " + " | ".join(f"{k} (s)" for k in libs) + " | ripser / giotto-ph | agree |")
    print("|---" * (len(libs) + 3) + "|")
    for n in args.sizes:
        d = topology.distances(cloud(n), "correlation")
        times, dgms = {}, {}
        for name, fn in libs.items():
            times[name], dgms[name] = timed(lambda fn=fn, d=d: fn(d), args.repeats)
        ref = dgms["giotto-ph"]
        agree = all(
            topology.wasserstein(ref[k], g[k], 1, np.inf) < 1e-6
            for g in dgms.values()
            for k in (0, 1)
        )
        cells = " | ".join(f"{times[k]:.2f}" for k in libs)
        print(f"| {n} | {cells} | {times['ripser'] / times['giotto-ph']:.2f} | {agree} |")


if __name__ == "__main__":
    main()
