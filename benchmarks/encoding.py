"""Time brainshape's ridge engine against himalaya on the same data, in the same run.

    python benchmarks/encoding.py                      # a reduced study shape for 2 CPU cores
    python benchmarks/encoding.py --n-trs 6000 --features 4096 --targets 20000   # on a GPU

Both solvers choose a per-target alpha among ``--alphas`` values by ``--folds`` contiguous
folds (Pearson r as the score) and refit on all rows: brainshape's ``ridge.RidgeCV``
and himalaya's ``solve_ridge_cv_svd``, on the same backend family (numpy on a CPU, torch on
CUDA when a GPU is present) and in the same precision. Reported: seconds for each, the speed
ratio, the share of targets given the same alpha and the largest difference in the chosen
alpha's CV score (equal scores are the condition for a fair race).

The second part times one encode group: the same design with the targets of 1 subject, then of
``--subjects`` subjects stacked (one decomposition serves them all), as ``cross_validate`` runs
it (outer folds, inner alpha choice). The ratio shows what stacking saves over one job per
subject (which would cost ``--subjects`` times the single-subject time).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from brainshape import ridge
from brainshape.threads import limit_threads


def make_data(n_trs: int, n_features: int, delays: int, n_targets: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    # Slowly varying features, as word embeddings resampled at the TR are.
    base = rng.standard_normal((n_trs + delays, n_features))
    base = (base[1:] + base[:-1]) / 2
    X = np.concatenate([base[d : d + n_trs] for d in range(delays)], axis=1)
    w = rng.standard_normal((X.shape[1], n_targets)) / np.sqrt(X.shape[1])
    Y = X @ w * rng.uniform(0.0, 1.0, n_targets) + rng.standard_normal((n_trs, n_targets))
    return X, Y


def timed(fn, repeat: int):
    """Best of ``repeat`` runs: (wall seconds, CPU seconds of this process, result).

    On a shared machine the CPU time is the steadier figure; on a GPU the wall time counts.
    """
    best, cpu, out = np.inf, np.inf, None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall, used = time.perf_counter() - start, time.process_time() - start_cpu
        if wall < best:
            best, cpu = wall, used
    return best, cpu, out


def sync(backend):
    if backend.name == "torch" and backend.device.type == "cuda":
        backend.torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trs", type=int, default=3000)
    parser.add_argument("--features", type=int, default=256, help="features before delays")
    parser.add_argument("--delays", type=int, default=4)
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument("--alphas", type=int, default=10)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--dtype", default=None, help="float32 or float64 (default: backend's)")
    parser.add_argument("--backend", default="auto", choices=ridge.BACKENDS)
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--targets-per-subject", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads (default: all)")
    args = parser.parse_args()
    with limit_threads(args.threads):
        run(args)


def run(args) -> None:
    from himalaya.backend import set_backend
    from himalaya.ridge import solve_ridge_cv_svd
    from himalaya.scoring import correlation_score

    B = ridge.get_backend(args.backend, args.dtype)
    dtype = "float64" if "64" in str(B.dtype) else "float32"
    hb = set_backend("torch_cuda" if B.name == "torch" and B.device.type == "cuda" else "numpy")
    X, Y = make_data(args.n_trs, args.features, args.delays, args.targets)
    X, Y = X.astype(dtype), Y.astype(dtype)
    alphas = np.logspace(0, 5, args.alphas)
    segments = ridge.contiguous_folds([args.n_trs], n_blocks=args.folds)
    splits = ridge.folds_from_segments(segments)

    def ours():
        fit = ridge.RidgeCV(alphas, cv=splits, backend=B.name, dtype=dtype).fit(X, Y)
        sync(B)
        return fit

    def theirs():
        out = solve_ridge_cv_svd(
            hb.asarray(X),
            hb.asarray(Y),
            alphas=hb.asarray(alphas.astype(dtype)),
            fit_intercept=True,
            score_func=correlation_score,
            cv=splits,
            local_alpha=True,
            warn=False,
        )
        if B.name == "torch" and B.device.type == "cuda":
            B.torch.cuda.synchronize()
        return [np.asarray(hb.to_numpy(a), dtype=np.float64) for a in out]

    t_ours, c_ours, fit = timed(ours, args.repeat)
    t_theirs, c_theirs, (best, _, cv_scores, _) = timed(theirs, args.repeat)
    same_alpha = np.mean(np.isclose(fit.best_alphas_, best, rtol=1e-5))
    chosen = np.take_along_axis(
        fit.cv_scores_, np.abs(alphas[:, None] - fit.best_alphas_[None]).argmin(0)[None], 0
    )[0]
    score_diff = np.max(np.abs(chosen - cv_scores[0]))

    device = str(B.device) if B.name == "torch" else platform.processor() or "cpu"
    p = args.features * args.delays
    threads = args.threads or "all"
    print(f"device: {B.name} on {device}, {dtype}, BLAS threads: {threads}")
    print(
        f"shape: {args.n_trs} TRs x {args.features} features x {args.delays} delays = {p} "
        f"columns, {args.targets} targets, {args.alphas} alphas, {args.folds} contiguous folds"
    )
    print(
        "| solver | wall s | CPU s | speed-up (wall) | speed-up (CPU) | same alpha "
        "| max score diff |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| himalaya solve_ridge_cv_svd | {t_theirs:.2f} | {c_theirs:.2f} | 1.00 | 1.00 | | |")
    print(
        f"| brainshape ridge.RidgeCV | {t_ours:.2f} | {c_ours:.2f} | "
        f"{t_theirs / t_ours:.2f} | {c_theirs / c_ours:.2f} | {same_alpha:.4f} "
        f"| {score_diff:.1e} |"
    )

    # One encode group: outer x inner cross-validation for 1 subject and for many stacked.
    runs = [args.n_trs // args.folds] * args.folds
    n = sum(runs)
    X1 = X[:n]
    Y_all = make_data(n, args.features, args.delays, args.targets_per_subject * args.subjects, 1)[
        1
    ].astype(dtype)

    def group(n_subjects):
        def go():
            Yg = Y_all[:, : args.targets_per_subject * n_subjects]
            out = ridge.cross_validate(X1, Yg, alphas, ridge.contiguous_folds(runs), backend=B)
            sync(B)
            return out

        return go

    t1, c1, _ = timed(group(1), args.repeat)
    tg, cg, _ = timed(group(args.subjects), args.repeat)
    print()
    print(
        f"encode group ({n} TRs, {p} columns, {args.targets_per_subject} targets per subject, "
        "nested CV):"
    )
    print("| subjects | wall s | CPU s | ratio to 1 subject (wall) | (CPU) |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| 1 | {t1:.2f} | {c1:.2f} | 1.00 | 1.00 |")
    print(f"| {args.subjects} | {tg:.2f} | {cg:.2f} | {tg / t1:.2f} | {cg / c1:.2f} |")


if __name__ == "__main__":
    main()
