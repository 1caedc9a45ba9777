"""The ridge engine: every alpha of a grid from one decomposition, contiguous folds, backends.

Two entry points, both on the same solver code:

- ``cross_validate(X, Y, alphas, segments, ...)``: the nested cross-validation of the encoding
  stage. Per outer fold the features are z-scored on the training rows, the alpha of every
  target is chosen on those rows (inner contiguous folds, or bootstrap draws of held-out chunks
  with ``bootstrap=Bootstrap(...)``), the model is refitted on all training rows and the
  held-out rows are predicted; returns a ``CVResult`` (held-out r of every target, per-fold r
  and alphas, the block-permutation null, optionally the predictions).
- ``RidgeCV``: one level of it as a scikit-learn-style estimator (``fit``, ``predict``,
  ``score``, attributes ending in ``_``), the counterpart of himalaya's ``RidgeCV``.

Modules: ``folds`` (which rows train and which are held out: contiguous folds, bootstrap
chunks, block permutations), ``backends`` (numpy, torch), ``linalg`` (standardising, Gram
matrices, decompositions), ``scores`` (the held-out r of every alpha on an inner split),
``crossval`` (the outer loop, the refit, the running scores), ``estimator`` (``RidgeCV``) and
``cost`` (the floating-point work of each step, which the engine's choices and the planner's
runtimes share).

Each training design is decomposed once (eigendecomposition of the smaller Gram matrix,
equivalent to its thin SVD). The r of every alpha on an inner split comes from per-component
sums (three products per target whatever the number of alphas: ``scores``); the refit predicts
each alpha's targets through that alpha's hat matrix where many targets share it. Stacking the
targets of many subjects who heard the same stories costs one decomposition, not one per
subject. ``engine="reference"`` runs the previous engine (every alpha's predictions formed,
coefficients for the refit), kept to test and time the engine against.

Backends: ``numpy`` (CPU) and ``torch`` (CUDA when present, else CPU). ``dtype="float64"`` is
the reference path (used in tests against himalaya); ``float32`` is the fast path on GPUs (the
per-component sums stay float64). Targets are processed in blocks of ``target_chunk`` columns
(``DEFAULT_TARGET_CHUNK``) so whole-brain voxel targets fit in memory.
"""

from brainshape.ridge.backends import (
    BACKENDS,
    GPU_DEVICE_FILES,
    NumpyBackend,
    TorchBackend,
    get_backend,
)
from brainshape.ridge.crossval import (
    DEFAULT_TARGET_CHUNK,
    NULL_BLOCK_ELEMENTS,
    CVResult,
    cross_validate,
)
from brainshape.ridge.estimator import RidgeCV, check_alphas
from brainshape.ridge.folds import (
    Bootstrap,
    Split,
    block_permutations,
    bootstrap_splits,
    check_time_ordered,
    contiguous_folds,
    fold_sizes,
    folds_from_segments,
    nested_splits,
    training_chunks,
)
from brainshape.ridge.linalg import decompose, gram_path, standardise
from brainshape.ridge.scores import ENGINES, best_alpha_index, inner_cv_scores

__all__ = [
    "BACKENDS",
    "DEFAULT_TARGET_CHUNK",
    "ENGINES",
    "GPU_DEVICE_FILES",
    "NULL_BLOCK_ELEMENTS",
    "Bootstrap",
    "CVResult",
    "NumpyBackend",
    "RidgeCV",
    "Split",
    "TorchBackend",
    "best_alpha_index",
    "block_permutations",
    "bootstrap_splits",
    "check_alphas",
    "check_time_ordered",
    "contiguous_folds",
    "cross_validate",
    "decompose",
    "fold_sizes",
    "folds_from_segments",
    "get_backend",
    "gram_path",
    "inner_cv_scores",
    "nested_splits",
    "standardise",
    "training_chunks",
]
