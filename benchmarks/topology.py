"""Time the shape stage's hot paths against references, side by side.

    python benchmarks/topology.py [--sizes 500 1000 2000] [--repeats 1] [--threads 2]

1. Persistence diagrams (Vietoris-Rips, H0 + H1) for each library. Clouds look like the
   pipeline's: volumes of a 64-dimensional representation (a slow trajectory plus noise),
   correlation distance, every point kept. For each size every library gets the same distance
   matrix; the table gives seconds per diagram (best of ``--repeats``) and the ratio to the
   chosen default (giotto-ph), and checks that the diagrams agree. Both libraries run on the
   CPU. (GUDHI builds the whole Rips complex and is not practical beyond a few hundred points.)
2. Distances of a wide cloud (points x 4,096 columns, as a large model's layer):
   ``topology.clouds.distances`` (from the Gram matrix, one matrix product) against
   ``scipy.spatial.distance.pdist``, and their largest difference.
3. Debiased CKA of one layer cloud against 11 brain clouds (one and its shifted copies, as a
   pairing job computes it): ``topology.measures.cka_debiased`` on prepared clouds (Gram
   matrices kept per cloud) against ``topology.measures.hsic_unbiased`` on the points each time,
   and their largest difference.
4. The geometry's null: CPU seconds (``time.process_time``) per null draw of one brain cloud
   (ROI-mean embedding, 4 columns) against 31 layer clouds with RSA and debiased CKA
   (``topology.nulls.geometry_values``), per N^2, beside the planning model's
   ``resources.NULL_PREPARE_NS + layers x measures x NULL_MEASURE_NS``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from brainshape.topology import clouds, measures, persistence


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


def distance_table(sizes, repeats) -> None:
    from scipy.spatial.distance import pdist, squareform

    print("\n| points | Gram (s) | scipy pdist (s) | pdist / Gram | max difference |")
    print("|---|---|---|---|---|")
    for n in sizes:
        x = cloud(n, dim=4096)
        t_gram, d = timed(lambda x=x: clouds.distances(x, "euclidean"), repeats)
        t_ref, ref = timed(lambda x=x: squareform(pdist(x, "euclidean")), repeats)
        diff = float(np.abs(d - ref).max())
        print(f"| {n} | {t_gram:.3f} | {t_ref:.3f} | {t_ref / t_gram:.1f} | {diff:.1e} |")


def cka_table(sizes, repeats) -> None:
    print("\n| points | prepared clouds (s) | from points (s) | ratio | max difference |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(1)
    for n in sizes:
        layer = clouds.prepare(cloud(n, dim=1024))
        brains = [clouds.prepare(rng.standard_normal((n, 400))) for _ in range(11)]

        def prepared(layer=layer, brains=brains):
            return [measures.cka_debiased(layer, b) for b in brains]

        def direct(layer=layer, brains=brains):
            kk = measures.hsic_unbiased(layer.points, layer.points)
            out = []
            for b in brains:
                ll = measures.hsic_unbiased(b.points, b.points)
                out.append(measures.hsic_unbiased(layer.points, b.points) / np.sqrt(kk * ll))
            return out

        t_new, new = timed(prepared, repeats)
        t_ref, ref = timed(direct, repeats)
        diff = float(np.abs(np.array(new) - np.array(ref)).max())
        print(f"| {n} | {t_new:.3f} | {t_ref:.3f} | {t_ref / t_new:.1f} | {diff:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="giotto-ph threads")
    args = parser.parse_args()
    libs = {
        "giotto-ph": lambda d: persistence.diagrams(d, 1, "giotto", n_threads=args.threads),
        "ripser": lambda d: persistence.diagrams(d, 1, "ripser"),
    }
    cpus = len(os.sched_getaffinity(0))
    print(f"# {platform.machine()}, {cpus} usable CPUs, giotto-ph threads: {args.threads}")
    print("| points | " + " | ".join(f"{k} (s)" for k in libs) + " | ripser / giotto-ph | agree |")
    print("|---" * (len(libs) + 3) + "|")
    for n in args.sizes:
        d = clouds.distances(cloud(n), "correlation")
        times, dgms = {}, {}
        for name, fn in libs.items():
            times[name], dgms[name] = timed(lambda fn=fn, d=d: fn(d), args.repeats)
        ref = dgms["giotto-ph"]
        agree = all(
            persistence.wasserstein(ref[k], g[k], 1, np.inf) < 1e-6
            for g in dgms.values()
            for k in (0, 1)
        )
        cells = " | ".join(f"{times[k]:.2f}" for k in libs)
        print(f"| {n} | {cells} | {times['ripser'] / times['giotto-ph']:.2f} | {agree} |")
    distance_table(args.sizes, args.repeats)
    cka_table(args.sizes, args.repeats)
    null_table(args.sizes)


def null_table(sizes) -> None:
    """CPU seconds per null draw of one brain cloud against 31 layers, RSA and debiased CKA."""
    from brainshape import resources
    from brainshape.topology import nulls, timebase

    rng = np.random.default_rng(2)
    print("\n| points | s CPU per draw | ns per N^2 | planned ns per N^2 |")
    print("|---|---|---|---|")
    for n in sizes:
        runs = {f"s{k}": {"n_trs": 2 * n, "tr": 2.0} for k in range(2)}
        base = timebase.TimeBase(runs=runs, delay_s=0.0)
        index = timebase.landmarks(base.n_points(), n, seed=0)
        plan = nulls.plan_null(base, index, 2.0, nulls.NullSettings(draws=4))
        layers = [clouds.prepare(cloud(n, dim=256, seed=k)) for k in range(31)]
        series = np.cumsum(rng.standard_normal((base.n_points(), 4)), axis=0)
        start = time.process_time()
        nulls.geometry_values(layers, series, index, plan, ["rsa", "cka_debiased"])
        per = (time.process_time() - start) / (1 + len(plan.rows))
        planned = resources.NULL_PREPARE_NS + 31 * 2 * resources.NULL_MEASURE_NS
        print(f"| {n} | {per:.3f} | {per / n**2 * 1e9:.0f} | {planned:.0f} |")


if __name__ == "__main__":
    main()
