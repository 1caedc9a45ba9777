"""One layer of an encode job at a scaled-down study shape: the engine against the previous one.

    python benchmarks/encode_group.py                   # the shipped study's shape, 1/8 of its TRs
    python benchmarks/encode_group.py --json out.json   # also write the figures as JSON
    python benchmarks/encode_group.py --stories 4 --trs 216 --features 576 --targets 2000 \
        --blocks 0                                      # the demo's SmolLM2 encode job

The shipped study (config/config.yaml) runs, per encode job and layer, 3 contiguous blocks of
27 stories (15,930 kept TRs) with a gap of 10 TRs, 13 alphas, 100 permutations, about as many
delayed columns as TRs (a 7B model: 16,384) and 25 times more stacked targets than TRs (20
subjects of 20,000 voxels). The default shape keeps those proportions at 1/8 of the TRs: 6
stories of 332 TRs, 512 features x 4 delays, 50,000 targets. The data are synthetic (slowly
varying features, targets with planted signal of random strength).

Both engines run ``ridge.cross_validate`` on the same data in the same process: the engine
(``components``: every alpha scored from per-component sums, the refit through hat matrices)
and the previous one (``reference``: every alpha's predictions formed, coefficients for the
refit). Reported per engine: wall and CPU seconds, the FLOPs of its products, Gram matrices and
eigendecompositions counted as they run (``ridge.cost.Counted``) beside those
``resources.encode_flop_parts`` plans for the shape, and the achieved rate; then the ratios,
the largest score difference, the share of targets with the same alphas and whether the
permutation p-values are identical.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from brainshape import resources, ridge, scoring
from brainshape.ridge.cost import Counted
from brainshape.threads import limit_threads


def make_data(runs, n_features: int, delays: int, n_targets: int, seed: int = 0):
    """Slowly varying features with FIR delays inside each run, and targets carrying signal."""
    rng = np.random.default_rng(seed)
    blocks = []
    for n in runs:
        base = rng.standard_normal((n + 1, n_features))
        base = (base[1:] + base[:-1]) / 2
        shifted = [np.vstack([np.zeros((d, n_features)), base[: n - d]]) for d in range(delays)]
        blocks.append(np.hstack(shifted))
    X = np.vstack(blocks)
    w = rng.standard_normal((X.shape[1], n_targets)) / np.sqrt(X.shape[1])
    Y = X @ w * rng.uniform(0.0, 0.5, n_targets) + rng.standard_normal((len(X), n_targets))
    return X, Y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stories", type=int, default=6)
    parser.add_argument("--trs", type=int, default=332, help="kept TRs per story")
    parser.add_argument("--blocks", type=int, default=3, help="0: leave one story out")
    parser.add_argument("--gap", type=int, default=10)
    parser.add_argument("--features", type=int, default=512, help="hidden size before delays")
    parser.add_argument("--delays", type=int, default=4)
    parser.add_argument("--targets", type=int, default=50000, help="stacked targets")
    parser.add_argument("--alphas", type=int, default=13)
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=ridge.DEFAULT_TARGET_CHUNK)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads")
    parser.add_argument("--backend", default="numpy", choices=ridge.BACKENDS)
    parser.add_argument("--dtype", default=None, choices=["float32", "float64"])
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()
    with limit_threads(args.threads):
        out = run(args)
    print_table(args, out)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


def run(args) -> dict:
    runs = [args.trs] * args.stories
    X, Y = make_data(runs, args.features, args.delays, args.targets)
    alphas = np.logspace(0, 6, args.alphas)
    blocks = args.blocks or None
    segments = ridge.contiguous_folds(runs, blocks)
    gap = args.gap if blocks else 0
    shape = resources.EncodeShape(
        story_trs=tuple(runs), story_words=(0,) * len(runs), trimmed=0, layers=1,
        hidden=args.features, delays=args.delays, targets=args.targets, n_alphas=args.alphas,
        target_chunk=args.chunk, n_permutations=args.permutations,
        segments=tuple(len(s) for s in segments), sizes=ridge.fold_sizes(segments, gap),
    )  # fmt: skip
    out: dict = {
        "shape": {
            "n": shape.n, "p": shape.p, "m": shape.m, "folds": len(segments), "gap": gap,
            "alphas": args.alphas, "permutations": args.permutations,
        }
    }  # fmt: skip
    results = {}
    for engine in ("reference", "fast"):
        B = Counted(ridge.get_backend(args.backend, args.dtype))
        start, start_cpu = time.perf_counter(), time.process_time()
        results[engine] = ridge.cross_validate(
            X, Y, alphas, segments, gap=gap, backend=B, target_chunk=args.chunk,
            n_permutations=args.permutations, engine=engine,
        )  # fmt: skip
        if B.name == "torch" and B.device.type == "cuda":
            B.torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        planned = resources.encode_flop_parts(shape, engine)
        out[engine] = {
            "wall_s": wall, "cpu_s": cpu, "counted_flops": B.flops,
            "planned_product_flops": planned["products"],
            "planned_flops": sum(planned.values()), "gflops": B.flops / wall / 1e9,
        }  # fmt: skip
    new, ref = results["fast"], results["reference"]
    p_new, p_ref = (
        scoring.permutation_p_values(r.scores, r.null) if r.null is not None else r.scores
        for r in (new, ref)
    )
    out["ratio"] = {
        k: out["reference"][k] / out["fast"][k]
        for k in ("wall_s", "cpu_s", "counted_flops", "planned_flops")
    }
    out["max_score_difference"] = float(np.max(np.abs(new.scores - ref.scores)))
    out["same_alphas"] = float(np.mean(new.alphas == ref.alphas))
    out["same_p_values"] = bool(np.allclose(p_new, p_ref, atol=1e-12, rtol=0))
    out["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    out["backend"] = f"{args.backend} {args.dtype or 'default'}, {args.threads} BLAS thread(s)"
    return out


def print_table(args, out) -> None:
    s = out["shape"]
    print(f"machine: {out['machine']}; backend {out['backend']}")
    print(
        f"shape: {s['n']} TRs ({args.stories} stories, {s['folds']} folds, gap {s['gap']}) x "
        f"{s['p']} delayed columns, {s['m']} targets, {s['alphas']} alphas, "
        f"{s['permutations']} permutations"
    )
    print("| engine | wall s | CPU s | GFLOP counted | GFLOP planned (products) | GFLOP/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for engine in ("reference", "fast"):
        e = out[engine]
        print(
            f"| {engine} | {e['wall_s']:.1f} | {e['cpu_s']:.1f} | {e['counted_flops'] / 1e9:,.0f} "
            f"| {e['planned_product_flops'] / 1e9:,.0f} | {e['gflops']:.1f} |"
        )
    r = out["ratio"]
    print(
        f"ratio reference / engine: wall {r['wall_s']:.2f}, CPU {r['cpu_s']:.2f}, counted FLOPs "
        f"{r['counted_flops']:.2f}, planned FLOPs {r['planned_flops']:.2f}; max score difference "
        f"{out['max_score_difference']:.1e}, same alphas {out['same_alphas']:.4f}, same "
        f"p-values {out['same_p_values']}"
    )


if __name__ == "__main__":
    main()
