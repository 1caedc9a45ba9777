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

All byte counts are bytes, all times minutes unless named otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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

#: Bits per stored weight of each variant kind when the entry does not say (``weight_bits``):
#: 4-bit kinds carry scales and zeros (about half a bit per weight at group size 128). GGUF
#: variants are dequantised to their ``dtype`` when loaded, so they count at that width.
KIND_BITS = {"bnb8": 8.0, "bnb4": 4.5, "gptq": 4.5}

#: How much slower than bf16 a kind's forward pass runs (bitsandbytes 8-bit reached 0.51x of
#: bf16 throughput on an H100 for a 7B-shaped model; 4-bit nf4 0.96x). The GPTQ factor is an
#: assumption until benchmarks/extract.py measures it on a GPU.
KIND_SLOWDOWN = {"bnb8": 2.0, "bnb4": 1.1, "gptq": 1.5}

_DTYPE_BITS = {"float32": 32, "float16": 16, "bfloat16": 16}

#: CUDA context, allocator slack and library workspaces on each GPU.
GPU_OVERHEAD_BYTES = 2 * 2**30


def weight_bytes(params: int, variant: Mapping[str, Any]) -> float:
    """Bytes the variant's weights take on the GPU(s)."""
    if variant.get("weight_bits"):
        bits = float(variant["weight_bits"])
    elif variant["kind"] in KIND_BITS:
        bits = KIND_BITS[variant["kind"]]
    else:
        bits = _DTYPE_BITS[variant.get("dtype", "float32")]
    return params * bits / 8


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
    hidden = int(entry.get("hidden") or _guess_hidden(entry))
    layers = int(entry.get("layers") or _guess_layers(entry))
    tokens = batch_size * window
    per_value = _compute_bytes(variant)
    states = (layers + 1) * tokens * hidden * per_value
    transient = 3 * 4 * tokens * hidden * per_value
    return float(states + transient)


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

    ``slowdown`` scales the compute time of kinds slower than bf16 (:data:`KIND_SLOWDOWN`);
    ``read_gbps`` is the rate (GB/s) at which weights are read from shared storage.
    """
    compute_s = slowdown * forward_flops(params, tokens) / (gpu.tflops * 1e12)
    load_s = weights / (read_gbps * 1e9)
    return max(floor, int(math.ceil(safety * (compute_s + load_s) / 60)))


def host_mem_mb(weights_full: float) -> int:
    """Host memory: the checkpoint as read (before quantisation or placement), plus 4 GiB."""
    return int(math.ceil(1.2 * weights_full / 2**20 + 4096))


__all__ = [
    "GPU_TYPES",
    "GpuType",
    "KIND_BITS",
    "KIND_SLOWDOWN",
    "activation_bytes",
    "forward_flops",
    "gpu_type",
    "gpus_needed",
    "host_mem_mb",
    "runtime_minutes",
    "tokens_processed",
    "weight_bytes",
]
