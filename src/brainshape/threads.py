"""How many threads the native libraries under brainshape may use."""

from __future__ import annotations

from threadpoolctl import threadpool_limits


def limit_threads(n_threads: int | None, *, blas_only: bool = False) -> threadpool_limits:
    """Context manager capping the thread pools of native libraries at ``n_threads``.

    Every job calls it with the threads it was given (``snakemake``'s ``threads``): more BLAS or
    OpenMP threads than free cores (oversubscription) can run an eigendecomposition or a
    persistence diagram tens of times slower than one thread. ``None`` leaves the pools as they
    are. ``blas_only`` limits BLAS/LAPACK alone, leaving OpenMP pools (giotto-ph's) their
    threads: ``topology`` holds BLAS to one thread around work that runs beside giotto-ph.
    """
    return threadpool_limits(limits=n_threads, user_api="blas" if blas_only else None)
