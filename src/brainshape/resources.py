"""GPU count, runtime and host memory of feature-extraction jobs, from the model registry.

The workflow (``common.smk``) asks these functions for the resources of every ``features`` job
(one per dataset, model and variant); the cluster profiles and the GPU-hour planner read them
back as the job resources ``gpu``, ``runtime`` (minutes) and ``mem_mb``.

- **GPUs**: the variant's weight bytes (parameters x bits per weight) plus activation headroom
  (the hidden states of every layer for one batch of windows, and the widest intermediate
  tensor) against the usable memory of the configured GPU type. Models that do not fit one GPU
  are sharded layer by layer over several with accelerate's ``device_map="auto"``.
- **Runtime**: forward FLOPs, about ``2 x parameters x tokens processed`` where tokens
  processed counts the overlap of strided windows, over the configured sustained throughput of
  one GPU. A layer-sharded model runs its GPUs one after another, so more GPUs add memory, not
  speed. A safety factor and the time to read the weights are added.

The same module sizes the CPU (or GPU) jobs downstream of the features, from the shape of
the study (see :class:`EncodeShape` and :func:`encode_memory`): ``encode`` (one model variant,
every layer, one group of subjects), ``baseline`` (a one-layer "model" of word-rate features,
every subject of a dataset) and ``layer_diagrams`` (:func:`layer_diagrams_memory`).

All byte counts are bytes, all times minutes unless named otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from brainshape.errors import BrainshapeError


@dataclass(frozen=True)
class GpuType:
    """Memory (GiB) and sustained dense bf16 throughput (TFLOP/s) of one GPU."""

    memory_gib: float
    tflops: float


#: Sustained bf16 throughput defaults to 40% of the datasheet's dense bf16 peak: roughly what
#: transformers' batched forward passes reach in practice. Override ``gpu.tflops`` in the config
#: with a rate measured on the site's GPUs (benchmarks/extract.py prints one).
GPU_TYPES: dict[str, GpuType] = {
    "V100-32GB": GpuType(32, 50),
    "A100-40GB": GpuType(40, 125),
    "A100-80GB": GpuType(80, 125),
    "L40S-48GB": GpuType(48, 145),
    "H100-80GB": GpuType(80, 395),
    "H200-141GB": GpuType(141, 395),
}

#: A dense bf16 matrix product (8192^3) reaches 80% of the datasheet peak on an H100 (780 TFLOP/s)
#: and an H200 (788): twice the sustained rates of :data:`GPU_TYPES` (40% of that peak).
#: Calibration (``brainshape plan --gpu-records``) carries a rate measured as a share of the
#: matrix-product rate to a GPU type it was not measured on through this ratio.
MATMUL_PER_SUSTAINED = 2.0

_DTYPE_BITS = {"float32": 32, "float16": 16, "bfloat16": 16}

#: CUDA context, allocator slack and library workspaces on each GPU.
GPU_OVERHEAD_BYTES = 2 * 2**30


def weight_bytes(params: int, variant: Mapping[str, Any]) -> float:
    """Bytes the variant's weights take on the GPU(s): ``weight_bits`` if the entry gives it,
    else its kind's bits per weight (:attr:`models.VariantKind.bits`), else its dtype's width."""
    from brainshape.models import variant_kind

    bits = variant.get("weight_bits") or variant_kind(variant["kind"]).bits
    if not bits:
        bits = _DTYPE_BITS[variant.get("dtype", "float32")]
    return params * float(bits) / 8


def _compute_bytes(variant: Mapping[str, Any]) -> int:
    """Bytes per activation value: the variant's compute dtype."""
    return _DTYPE_BITS[variant.get("dtype", "float32")] // 8


def activation_bytes(
    entry: Mapping[str, Any], variant: Mapping[str, Any], *, batch_size: int, window: int
) -> float:
    """Headroom for one forward pass of ``batch_size`` windows of ``window`` tokens.

    Every layer's hidden states stay alive until the pass ends (``output_hidden_states``), and
    the widest transient tensor is the MLP's (about 4x hidden, 3 of them for gated MLPs).
    """
    layers, hidden = model_dims(entry)
    tokens = batch_size * window
    per_value = _compute_bytes(variant)
    states = (layers + 1) * tokens * hidden * per_value
    transient = 3 * 4 * tokens * hidden * per_value
    return float(states + transient)


def model_dims(entry: Mapping[str, Any]) -> tuple[int, int]:
    """(transformer layers, hidden size) of a registry entry, for planning.

    From the entry's ``layers``/``hidden``, else the config of a model built from one
    (``source.config``), else a guess from ``params``.
    """
    conf = (entry.get("source") or {}).get("config") or {}
    layers = entry.get("layers") or conf.get("n_layer") or conf.get("num_hidden_layers")
    hidden = entry.get("hidden") or conf.get("n_embd") or conf.get("hidden_size")
    hidden = hidden or conf.get("d_model")
    return int(layers or _guess_layers(entry)), int(hidden or _guess_hidden(entry))


def _guess_hidden(entry: Mapping[str, Any]) -> int:
    # Only for planning when the registry lacks ``hidden``: params ~ 12 x layers x hidden^2.
    params = int(entry.get("params") or 10_000_000)
    return max(64, int((params / (12 * _guess_layers(entry))) ** 0.5))


def _guess_layers(entry: Mapping[str, Any]) -> int:
    params = int(entry.get("params") or 10_000_000)
    return max(2, int(round(2 * math.log2(max(params, 2) / 1e6))))


def gpu_type(name: str, memory_gib: float | None = None, tflops: float | None = None) -> GpuType:
    """The named GPU type, with the config's overrides; unknown names list the known ones."""
    if name not in GPU_TYPES:
        if memory_gib is None or tflops is None:
            raise BrainshapeError(
                f"gpu.type '{name}' is not one of the known GPU types "
                f"({', '.join(GPU_TYPES)}); pick one, or give gpu.memory_gib and gpu.tflops "
                "for it in the config"
            )
        return GpuType(float(memory_gib), float(tflops))
    known = GPU_TYPES[name]
    return GpuType(
        float(memory_gib if memory_gib is not None else known.memory_gib),
        float(tflops if tflops is not None else known.tflops),
    )


def gpus_needed(
    weights: float,
    activations: float,
    gpu: GpuType,
    *,
    usable: float = 0.9,
    max_gpus: int = 8,
    what: str = "model",
) -> int:
    """GPUs for ``weights`` bytes sharded by layer, each also holding ``activations``.

    ``usable`` is the fraction of GPU memory to plan with. More than ``max_gpus`` (one node) is
    an error naming the model, since layer sharding does not cross nodes.
    """
    budget = gpu.memory_gib * 2**30 * usable - GPU_OVERHEAD_BYTES - activations
    if budget <= 0:
        raise BrainshapeError(
            f"{what}: one batch of windows needs {activations / 2**30:.1f} GiB of activations, "
            f"more than a {gpu.memory_gib:g} GiB GPU holds; lower features.batch_size or "
            "features.context_tokens"
        )
    n = max(1, math.ceil(weights / budget))
    if n > max_gpus:
        raise BrainshapeError(
            f"{what}: {weights / 2**30:.0f} GiB of weights need {n} GPUs of "
            f"{gpu.memory_gib:g} GiB, more than gpu.max_gpus ({max_gpus}); choose a "
            "quantised variant, a larger gpu.type, or raise gpu.max_gpus"
        )
    return n


def tokens_processed(
    n_tokens: int, *, window: int, stride: int, arch: str = "decoder", n_words: int | None = None
) -> int:
    """Tokens forwarded to cover ``n_tokens`` story tokens, counting window overlap.

    Decoders: windows of ``window`` tokens every ``stride`` tokens (the first ends at the
    ``window``-th token, each later one adds ``stride`` new tokens). Encoders: one window per
    word, ending at it (``n_words``, default ``n_tokens``).
    """
    if n_tokens <= 0:
        return 0
    if arch != "decoder":
        words = n_tokens if n_words is None else n_words
        return sum(min(window, t + 1) for t in _spread(n_tokens, words))
    if n_tokens <= window:
        return n_tokens
    last = (n_tokens - 1 - window) // stride + 1  # index of the window holding the last token
    return sum(min(window, n_tokens - k * stride) for k in range(last + 1))


def _spread(n_tokens: int, n_words: int) -> list[int]:
    return [round((i + 1) * n_tokens / n_words) - 1 for i in range(n_words)]


def forward_flops(params: int, tokens: int) -> float:
    """Forward FLOPs: 2 per parameter per token (attention's share ignored at these widths)."""
    return 2.0 * params * tokens


def runtime_minutes(
    params: int,
    tokens: int,
    gpu: GpuType,
    *,
    weights: float,
    slowdown: float = 1.0,
    safety: float = 2.0,
    read_gbps: float = 0.5,
    floor: int = 10,
) -> int:
    """Wall-clock minutes: ``safety`` x (compute at the sustained rate + reading the weights).

    ``slowdown`` scales the compute time of kinds slower than bf16
    (:attr:`models.VariantKind.slowdown`);
    ``read_gbps`` is the rate (GB/s) at which weights are read from shared storage.
    """
    compute_s = slowdown * forward_flops(params, tokens) / (gpu.tflops * 1e12)
    load_s = weights / (read_gbps * 1e9)
    return max(floor, int(math.ceil(safety * (compute_s + load_s) / 60)))


def kind_slowdown(kind: str, measured: Mapping[str, float] | None = None) -> float:
    """How much slower than bf16 a variant kind's forward pass runs: ``measured[kind]`` where a
    measurement is passed in (the config's ``gpu.slowdown``, or a calibration), else the kind's
    own factor (:attr:`models.VariantKind.slowdown`)."""
    from brainshape.models import variant_kind

    if measured and kind in measured and measured[kind] is not None:
        return float(measured[kind])
    return variant_kind(kind).slowdown


def matmul_tflops(gpu: GpuType) -> float:
    """Dense bf16 matrix-product rate (TFLOP/s) of a GPU type: :data:`MATMUL_PER_SUSTAINED`
    times its sustained rate."""
    return MATMUL_PER_SUSTAINED * gpu.tflops


def host_mem_mb(weights_full: float) -> int:
    """Host memory: the checkpoint as read (before quantisation or placement), plus 4 GiB."""
    return int(math.ceil(1.2 * weights_full / 2**20 + 4096))


# --- the QC job ---------------------------------------------------------------------------------

#: Bytes the QC job holds per value of the largest run it reads (the image as float32, its
#: in-mask series as float64 and a temporary of each) and the values it reads per second
#: (decompressing .nii.gz at about 100 MB/s), measured on the demo and rounded down.
QC_BYTES_PER_VALUE = 32
QC_VALUES_PER_SECOND = 25e6
QC_MIN_RUNTIME_MIN = 10


def qc_mem_mb(largest_run_values: int, overhead_mib: int = 1024) -> int:
    """Host memory (MiB) of the QC job: its largest run (:data:`QC_BYTES_PER_VALUE`), plus the
    interpreter and the subject folders' ROI means."""
    return int(math.ceil(QC_BYTES_PER_VALUE * largest_run_values / 2**20 + overhead_mib))


def qc_runtime_min(total_values: int) -> int:
    """Wall minutes of the QC job: every run read once (and files of equal size hashed once
    more), at :data:`QC_VALUES_PER_SECOND`, doubled for safety."""
    seconds = 2 * 2 * total_values / QC_VALUES_PER_SECOND
    return max(QC_MIN_RUNTIME_MIN, int(math.ceil(seconds / 60)))


# --- encode, baseline and layer_diagrams jobs ----------------------------------------------------

#: Bytes of a stored feature or BOLD value (the features and fMRI stages write float32).
STORED_BYTES = 4

#: Interpreter, numpy/scipy/pandas/torch libraries and small tables of one encode job (MiB).
ENCODE_OVERHEAD_MIB = 768

#: Extra host memory of an encode job that solves on a GPU: the CUDA context and torch's CUDA
#: libraries (MiB). Not measured here (no GPU); typical of torch 2 on a data-centre GPU.
ENCODE_GPU_HOST_MIB = 2048

#: Resident memory beyond the arrays an encode job allocates (:func:`encode_memory`): a fixed part
#: (BLAS buffers, parquet reading) and a share of the arrays (allocator slack, small copies).
RUNTIME_BYTES = 64 * 2**20
RUNTIME_SHARE = 0.15

#: Sustained double-precision rate of one CPU thread on the ridge engine's mix of matrix
#: products and symmetric eigendecompositions (GFLOP/s). ``encoding.cpu_gflops`` overrides it
#: with a rate measured on the site's nodes (``benchmarks/encode_memory.py`` prints one).
CPU_GFLOPS_PER_THREAD = 10.0

#: Share of a GPU type's sustained bf16 rate (:data:`GPU_TYPES`) that the float32 ridge engine
#: reaches: cuSOLVER's symmetric eigensolver, not matrix products, bounds it. An assumption until
#: ``benchmarks/encode_memory.py`` has been run on a GPU; ``encoding.gpu_tflops`` overrides it.
ENCODE_GPU_FRACTION = 0.05


@dataclass(frozen=True)
class EncodeShape:
    """The shape of one encode (or baseline) job: what ``encoding.encode_variant`` allocates.

    ``story_trs``: kept TRs of each story's run (after trimming), ``story_words``: words of each
    story (same order), ``trimmed``: TRs trimmed from each run (``trim_start + trim_end``).
    ``segments``: held-out lengths of the outer folds in TRs (default: one per story; with
    ``encoding.folds: blocks``, ``n_blocks`` near-equal blocks). ``layers``: feature layers
    including the embeddings (``n_layers + 1``); ``hidden``: units per layer; ``delays``: FIR
    delays, so the design has ``hidden x delays`` columns. ``targets``: targets of all stacked
    subjects (targets per subject x subjects in the group). ``predictions``: the held-out
    predictions are kept (``segment_identification``). ``sizes``: per scored outer fold its
    training and held-out TRs and the (training, validation) TRs of each split that chooses its
    alphas (``ridge.folds.fold_sizes``: the gap, a fixed test set, bootstrap draws); default:
    every segment held out in turn, the others its inner folds, no gap.
    """

    story_trs: tuple[int, ...]
    story_words: tuple[int, ...]
    trimmed: int
    layers: int
    hidden: int
    delays: int
    targets: int
    n_alphas: int
    target_chunk: int
    n_permutations: int
    predictions: bool = False
    segments: tuple[int, ...] | None = None
    null_copies: int = 0
    sizes: tuple | None = None

    @property
    def m(self) -> int:
        """Columns the solver fits: the targets and the null's copies."""
        return int(self.targets + self.null_copies)

    @property
    def n(self) -> int:
        """Rows of the design: kept TRs of all stories."""
        return int(sum(self.story_trs))

    @property
    def p(self) -> int:
        """Columns of the design: hidden units x delays."""
        return int(self.hidden * self.delays)

    def folds(self) -> tuple[int, ...]:
        if self.segments is not None:
            return tuple(int(s) for s in self.segments)
        return tuple(int(s) for s in self.story_trs)

    def fold_sizes(self) -> tuple:
        """:attr:`sizes`, or those of leaving each of :meth:`folds` out in turn."""
        if self.sizes is not None:
            return self.sizes
        from brainshape.ridge.folds import fold_sizes

        edges = np.cumsum([0, *self.folds()])
        return fold_sizes([np.arange(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)])


#: Bytes per row of an encode job's table (13 columns of 8 bytes: numbers and pointers to the
#: shared strings of subject, ROI and hemisphere).
TABLE_ROW_BYTES = 104


def _data_bytes(shape: EncodeShape, f: int) -> dict[str, float]:
    """The ``features``, ``bold``, ``resamplers``, ``design``, ``results`` and ``table`` parts
    of :func:`encode_memory` (``f`` bytes per solver value)."""
    s = STORED_BYTES
    n, p, m = shape.n, shape.p, shape.m
    F = len(shape.fold_sizes())
    Q, A = int(shape.n_permutations), int(shape.n_alphas)
    trim = int(shape.trimmed) * len(shape.story_trs)
    words = int(sum(shape.story_words))
    parts: dict[str, float] = {}
    parts["features"] = float(words * shape.hidden * s + max(shape.story_words) * shape.hidden * 8)
    parts["bold"] = float(n * m * s + n * shape.null_copies * 8)
    story = zip(shape.story_trs, shape.story_words, strict=True)
    parts["resamplers"] = float(sum((t + shape.trimmed) * w for t, w in story) * 8)
    parts["design"] = float((2 * n + trim) * p * 8)
    parts["results"] = float(Q * m * 8 + (n * m * 8 if shape.predictions else 0))
    parts["results"] += float((2 * F + 7 + 2 * A) * m * 8)
    # Per layer and target one row: the layers' tables, their concatenation and its sorted copy.
    parts["table"] = float(3 * shape.layers * shape.targets * TABLE_ROW_BYTES)
    return parts


def _inner_bytes(n_tr: int, n_T: int, n_V: int, p: int, c: int, f: int) -> float:
    """One inner split at its peak, beyond the fold's design and Gram matrix: its decomposition
    (copies and centred Gram blocks, ``syevd``'s copy and workspace, or the features' copies),
    then the scorer's set-up (float64 (k, k) matrices: ``ridge.scores.ComponentScorer``), then a
    chunk of ``c`` targets, whichever is largest."""
    k = min(n_T, p)
    if n_T < p:
        dec = (6 * n_T * n_T + 2 * n_V * n_T) * f
        kept = (n_T * n_T + n_V * n_T) * f  # eigenvectors and projection
    else:
        dec = (3 * n_T * p + 2 * n_V * p + 5 * p * p) * f
        kept = (2 * n_T * p + n_V * p + p * p) * f
    setup = kept + (n_T * k + 2 * n_V * k) * f + 6 * k * k * 8
    scorer = (n_T * k + n_V * k) * f + k * k * 8
    chunk = scorer + (n_tr + 2 * n_T + 2 * n_V) * c * f + 4 * k * c * 8
    return float(max(dec, setup, chunk))


def _refit_bytes(shape: EncodeShape, n_tr: int, n_te: int, f: int) -> float:
    """The refit of one fold at its peak: its decomposition, the hat matrices of the alphas
    whose targets it predicts through one (``ridge.cost.use_hat`` with the targets spread
    evenly, as :func:`encode_flop_parts`), and a chunk's arrays with the null's gathered block."""
    from brainshape.ridge import NULL_BLOCK_ELEMENTS
    from brainshape.ridge.cost import use_hat

    p, c, A = shape.p, min(int(shape.target_chunk), shape.m), int(shape.n_alphas)
    k = min(n_tr, p)
    if n_tr + n_te < p:
        dec, kept = 5 * n_tr * n_tr * f, (n_tr * n_tr + n_te * n_tr) * f
    else:
        dec = (2 * n_tr * p + n_te * p + 5 * k * k) * f
        kept = (p + n_tr + n_te) * k * f
    hats = A * n_te * n_tr * f if use_hat(n_tr, n_te, k, shape.m // A) else 0
    null = 2 * max(NULL_BLOCK_ELEMENTS, n_te * c) * f if shape.n_permutations else 0
    chunk = (2 * n_tr + 6 * n_te) * c * f + null
    return float(max(dec, kept + hats + chunk))


def _solver_bytes(shape: EncodeShape, f: int) -> dict[str, float]:
    """The ``phase`` part of :func:`encode_memory`: the largest transient of one outer fold
    (each frees its arrays before the next starts): the z-scoring, the fold's Gram matrix being
    formed, an inner split or the refit, beside the z-scored design and the Gram matrix."""
    n, p = shape.n, shape.p
    c = min(int(shape.target_chunk), shape.m)
    phase = 0.0
    for n_tr, n_te, inner in shape.fold_sizes():
        n_g = n_tr + n_te
        gram = n_g * n_g * f if n_g < p else (n_tr * n_tr * f if n_tr < p else 0.0)
        steps = [n_g * p * f if n_g < p else 0.0, _refit_bytes(shape, n_tr, n_te, f)]
        steps += [n_tr * p * f + _inner_bytes(n_tr, a, b, p, c, f) for a, b in inner]
        phase = max(phase, (2 * n_tr + 2 * n) * p * f, n * p * f + gram + max(steps))
    return {"phase": float(max(phase, 2 * shape.n_permutations * shape.m * 8))}


def encode_memory(shape: EncodeShape, solver_bytes: int = 8) -> dict[str, float]:
    """Peak host memory of one encode job, in bytes, by part (``total`` is the sum).

    Follows what ``encoding.encode_variant`` and ``ridge.cross_validate`` allocate, with ``n``
    kept TRs, ``p = hidden x delays`` columns, ``m`` stacked targets, ``c = min(target_chunk,
    m)``, ``A`` alphas, ``Q`` permutations and the folds of ``shape.fold_sizes()`` (training
    ``n_tr`` and held-out ``n_te`` rows, inner splits of ``n_T`` and ``n_V``); ``f`` bytes per
    solver value (8 on the CPU), 4 per stored value.

    - ``features``: one layer of every story as stored, and the float64 copy of one story's
      layer: ``words x hidden x 4 + longest story's words x hidden x 8``. The features file is
      memory-mapped and read layer by layer; its pages are clean page cache, which the kernel
      drops under the job's memory limit, so only the layer in use has to fit. So are the
      subjects' stored arrays, which the job copies once into ``Y``.
    - ``bold``: the stacked targets ``Y`` as stored, ``n m 4``, and the null's copies while they
      are drawn (``n x copies x 8``). ``resamplers``: Lanczos weights of every run, ``(TRs +
      trimmed) x words x 8``. ``design``: per layer the delayed runs and their concatenation
      ``X``: ``(2 n + trimmed runs) p 8``.
    - ``results``: permutation sums ``Q m 8``, predictions ``n m 8`` (with segment
      identification), fold scores and alphas, running sums and the inner scores of every alpha
      ``(2 folds + 7 + 2 A) m 8``. ``table``: the output rows, one per layer and target
      (:data:`TABLE_ROW_BYTES`), three times (the layers' tables, their concatenation, sorted).
    - ``phase``: the largest transient of one outer fold on top: the z-scoring (``2 n_tr p + 2 n
      p``), or the fold's z-scored design, training rows and Gram matrix with one inner split
      (its decomposition, the scorer's float64 (k, k) matrices, a chunk's arrays) or the refit
      (its decomposition, one (n_te, n_tr) hat matrix per alpha, a chunk with the permuted
      held-out targets gathered for the null, ``2 x max(ridge.NULL_BLOCK_ELEMENTS, n_te c) f``),
      or the null's division and clipping after the folds (``2 Q m 8``).
    - ``runtime``: BLAS buffers, allocator slack: ``64 MiB + 15%`` of the parts above, from the
      measured peaks in docs/benchmarks.md.

    A job that solves on a GPU keeps most of these arrays on the device; for its host memory
    this is an upper bound.
    """
    parts = _data_bytes(shape, solver_bytes)
    parts.update(_solver_bytes(shape, solver_bytes))
    # What the arrays above leave out, measured against the resident peak of real runs
    # (docs/benchmarks.md): BLAS buffers, the allocator's slack, pandas and pyarrow tables.
    parts["runtime"] = float(RUNTIME_BYTES + RUNTIME_SHARE * sum(parts.values()))
    parts["total"] = float(sum(parts.values()))
    return parts


def encode_gpu_bytes(shape: EncodeShape) -> float:
    """Device memory of one encode job solving on a GPU in float32 (bytes): the design, fold and
    chunk arrays of :func:`encode_memory` at 4 bytes a value, less what stays on the host (the
    features, the stored targets, the Lanczos weights)."""
    parts = encode_memory(shape, solver_bytes=4)
    host = ("features", "bold", "resamplers", "table", "runtime", "total")
    return float(sum(v for k, v in parts.items() if k not in host))


def encode_mem_mb(shape: EncodeShape, overhead_mib: int = ENCODE_OVERHEAD_MIB) -> int:
    """Host memory (MiB) to request for one encode job: :func:`encode_memory` plus overhead."""
    return int(math.ceil(encode_memory(shape)["total"] / 2**20 + overhead_mib))


def encode_flop_parts(shape: EncodeShape, engine: str = "fast") -> dict[str, float]:
    """Floating-point operations of one encode job (all layers), by kind.

    ``products``: the ridge engine's matrix products, Gram matrices and eigendecompositions,
    fold by fold (``ridge.cost.fold_flops``, the formulas the engine's own choices use; tested
    against a count of a real run), with the targets spread evenly over the alphas (the most
    work the refit's per-alpha choice between hat matrix and coefficients can cost).
    ``elementwise``: z-scoring (about ``10 n p`` per fold) and the permutation null (``2 Q n_te``
    per target and fold). ``build``: the Lanczos resampling, ``2 TRs x words x hidden`` per
    story. ``engine``: ``fast`` (the engine) or ``reference`` (the previous one).
    """
    from brainshape.ridge.cost import fold_flops

    n, p, m = shape.n, shape.p, shape.m
    A, Q = int(shape.n_alphas), int(shape.n_permutations)
    counts = [m // A + (1 if a < m % A else 0) for a in range(A)]
    products = elementwise = 0.0
    for n_tr, n_te, inner in shape.fold_sizes():
        products += fold_flops(n_tr, n_te, p, inner, m, counts, engine)
        elementwise += 10.0 * n * p + 2.0 * Q * n_te * m
    build = sum(
        2.0 * (t + shape.trimmed) * w * shape.hidden
        for t, w in zip(shape.story_trs, shape.story_words, strict=True)
    )
    parts = {"products": products, "elementwise": elementwise, "build": build}
    return {k: shape.layers * v for k, v in parts.items()}


def encode_flops(shape: EncodeShape, engine: str = "fast") -> float:
    """Floating-point operations of one encode job: the sum of :func:`encode_flop_parts`."""
    return float(sum(encode_flop_parts(shape, engine).values()))


def encode_runtime_min(
    shape: EncodeShape,
    *,
    gflops: float,
    safety: float = 2.0,
    floor: int = 10,
    flops: float | None = None,
) -> int:
    """Wall-clock minutes of one encode job: ``safety x encode_flops / (gflops x 1e9) / 60``.

    ``gflops`` is the job's sustained rate in GFLOP/s: on the CPU the per-thread rate
    (:data:`CPU_GFLOPS_PER_THREAD`) times the job's threads, on a GPU the GPU's rate for this
    engine (:func:`encode_gpu_gflops`). At least ``floor`` minutes (start-up, reading inputs).
    ``flops`` passes :func:`encode_flops` of ``shape`` when the caller has it already.
    """
    if not gflops > 0:
        raise BrainshapeError(f"the encoding rate must be positive GFLOP/s, got {gflops!r}")
    seconds = (encode_flops(shape) if flops is None else flops) / (gflops * 1e9)
    return max(floor, int(math.ceil(safety * seconds / 60)))


def encode_gpu_gflops(gpu: GpuType, tflops: float | None = None) -> float:
    """GFLOP/s of the ridge engine on one GPU: ``tflops`` if given, else a share of its rate."""
    if tflops is not None:
        return float(tflops) * 1e3
    return gpu.tflops * 1e3 * ENCODE_GPU_FRACTION


def layer_diagrams_memory(
    *,
    n_points: int,
    story_trs: tuple[int, ...],
    story_words: tuple[int, ...],
    trimmed: int,
    hidden: int,
    clouds: int,
    cloud_columns: int,
    persistence: bool = True,
    whole: bool = False,
) -> dict[str, float]:
    """Peak host memory (bytes, by part) of one ``layer_diagrams`` or ``topology_pairs`` job.

    ``topology.compute_layers`` on every layer of one variant (``clouds=0``: it reads no brain
    cloud), or ``topology.pair_variant``'s geometry of every layer against every brain cloud
    (``persistence=False``: no diagram is computed there; ``whole=True``: each layer's cloud is
    also built on the whole time base, for its autocorrelation time).

    ``n_points``: landmark volumes N (``min(topology.max_points, paired volumes)``); ``clouds``:
    brain clouds to pair with (ROI x hemisphere, times subjects + 1 with ``per_subject``), each
    with ``cloud_columns`` columns at most.

    - ``features``: one layer of the memory-mapped features as stored (the pages of earlier
      layers are reclaimable page cache) and the float64 copy of one story's layer.
    - ``resamplers``: the landmark rows of every story's Lanczos weights ``N x words x 8``, and
      the longest story's full weights with the temporaries of their computation
      ``5 x TRs x words x 8``.
    - ``brain``: per brain cloud its landmarked points, reduced copy and standardised distance
      ranks: ``(N x columns + N x min(N, columns)) x 8 + N^2 / 2 x 8``.
    - ``layer``: one layer's cloud and its copies (``4 N hidden x 8``, an SVD when hidden > N),
      its distance matrix, temporaries and ranks (about ``8 N^2 x 8``), and the persistent
      homology's working set (:func:`persistence_bytes`).
    - ``whole`` (pairing jobs): every story's full Lanczos weights ``TRs x words x 8``, one
      layer's cloud on the whole time base ``TRs x hidden x 8`` and the Fourier transforms of
      its longest story (``4 x 2 TRs x hidden x 8``).
    """
    N = int(n_points)
    words = int(sum(story_words))
    parts: dict[str, float] = {}
    parts["features"] = float(words * hidden * STORED_BYTES)
    longest = (
        max((t + trimmed) * w for t, w in zip(story_trs, story_words, strict=True))
        if story_trs
        else 0
    )
    parts["resamplers"] = float(N * words * 8 + 5 * longest * 8)
    parts["brain"] = float(clouds) * (
        (N * cloud_columns + N * min(N, cloud_columns)) * 8 + N * N * 4
    )
    per_story = max(story_words) * hidden * 8 if story_words else 0
    parts["layer"] = float(4 * N * hidden * 8 + per_story + 8 * N * N * 8)
    parts["persistence"] = float(persistence_bytes(N)) if persistence else 0.0
    if whole:
        trs = sum(story_trs)
        weights = sum(t * w for t, w in zip(story_trs, story_words, strict=True))
        parts["whole"] = float((weights + trs * hidden + 8 * max(story_trs) * hidden) * 8)
    parts["total"] = float(sum(parts.values()))
    return parts


def persistence_bytes(n_points: int) -> float:
    """Working set of one Vietoris-Rips diagram (H0, H1) of ``n_points`` with giotto-ph.

    ``48 MiB + 34 N^2 x 8`` bytes: an upper bound of the peaks measured on clouds like the
    pipeline's (a slow trajectory plus noise) from 300 to 2,000 points (docs/benchmarks.md).
    The number of simplices the reduction visits depends on the data: a cloud without structure
    (independent noise in many dimensions) took about 25 times more at 500 points; such a job
    fails its first attempt and is retried with its memory multiplied by the attempt number.
    """
    return 48.0 * 2**20 + 34.0 * n_points * n_points * 8


def layer_diagrams_mem_mb(overhead_mib: int = ENCODE_OVERHEAD_MIB, **shape) -> int:
    """Host memory (MiB) to request for one ``layer_diagrams`` job (see
    :func:`layer_diagrams_memory` for the keyword arguments)."""
    return int(math.ceil(layer_diagrams_memory(**shape)["total"] / 2**20 + overhead_mib))


#: Nanoseconds per N^2 (N landmarks) on one core of the geometry's null in a pairing job:
#: preparing one null brain cloud (its distances, their median and ranks), and one measure of
#: one layer against it. Measured as CPU time at 500 and 1,000 landmarks (benchmarks/topology.py):
#: 84-100 ns to prepare, and 540-585 ns per draw with 31 layers and two measures (about 7 ns
#: per layer and measure); set higher for slower cores.
NULL_PREPARE_NS = 150.0
NULL_MEASURE_NS = 8.0
#: Seconds of one Wasserstein distance between two diagrams (optimal transport for H1).
WASSERSTEIN_S = 0.05


def topology_pairs_runtime_min(
    *,
    n_points: int,
    layers: int,
    brain_clouds: int,
    draws: int,
    measures: int,
    distances: int,
    safety: float = 2.0,
    floor: int = 10,
) -> int:
    """Wall minutes of one ``topology_pairs`` job: per brain cloud, ``draws + 1`` clouds (the
    observed and the null's) prepared and measured against every layer
    (:data:`NULL_PREPARE_NS`, :data:`NULL_MEASURE_NS` per N^2), and ``distances`` Wasserstein
    distances per layer (orders x homology dimensions); ``safety`` times that, at least
    ``floor`` minutes."""
    per_cloud = NULL_PREPARE_NS + layers * measures * NULL_MEASURE_NS
    seconds = brain_clouds * (draws + 1) * float(n_points) ** 2 * per_cloud * 1e-9
    seconds += brain_clouds * layers * distances * WASSERSTEIN_S
    return max(floor, int(math.ceil(safety * seconds / 60)))


__all__ = [
    "CPU_GFLOPS_PER_THREAD",
    "ENCODE_GPU_FRACTION",
    "EncodeShape",
    "GPU_TYPES",
    "GpuType",
    "MATMUL_PER_SUSTAINED",
    "activation_bytes",
    "encode_flops",
    "encode_gpu_bytes",
    "encode_gpu_gflops",
    "encode_mem_mb",
    "encode_memory",
    "encode_runtime_min",
    "forward_flops",
    "gpu_type",
    "gpus_needed",
    "host_mem_mb",
    "kind_slowdown",
    "layer_diagrams_mem_mb",
    "layer_diagrams_memory",
    "topology_pairs_runtime_min",
    "matmul_tflops",
    "persistence_bytes",
    "runtime_minutes",
    "tokens_processed",
    "weight_bytes",
]
