"""GPTQ quantisation here, with GPT-QModel, for ``gptq`` variants without a hub checkpoint.

AutoGPTQ is archived upstream and no longer imports with current transformers, so the project
uses GPT-QModel. GPT-QModel pins its own numpy, so it runs in its own environment
(``workflow/envs/gptq.yaml`` on clusters, ``make .venv-gptq`` here), through this module's
command line::

    python -m brainshape.quantize MODEL_DIR OUT_DIR --bits 4 --group-size 128

``MODEL_DIR`` is a full-precision model folder (a prepared model, or a hub snapshot), or a hub
id read from the local Hugging Face cache. ``OUT_DIR`` receives a GPTQ checkpoint (safetensors,
``quantization_config`` in ``config.json``) that :func:`brainshape.models.load` reads as a
``gptq`` variant.

Calibration text: the stories packaged with brainshape (``brainshape/data/stories``), cut into
passages of :data:`PASSAGE_WORDS` words. They are narrative English prose like the study's
stimuli, and they ship with the code, so a quantisation is reproducible offline.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from brainshape.errors import BrainshapeError

log = logging.getLogger(__name__)

#: Words per calibration passage.
PASSAGE_WORDS = 96


def calibration_texts(texts: list[str] | None = None, words: int = PASSAGE_WORDS) -> list[str]:
    """Calibration passages: ``texts`` (default: the packaged stories) cut every ``words``."""
    from brainshape.models import default_corpus

    texts = default_corpus() if texts is None else texts
    passages = []
    for text in texts:
        tokens = text.split()
        for i in range(0, len(tokens), words):
            chunk = tokens[i : i + words]
            if len(chunk) >= 8:
                passages.append(" ".join(chunk))
    if not passages:
        raise BrainshapeError("no calibration text: the packaged stories are missing or empty")
    return passages


def resolve_source(source: str, revision: str | None = None) -> str:
    """A folder for ``source``: itself if it is one, else its snapshot in the local HF cache."""
    if Path(source).is_dir():
        return source
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(source, revision=revision, local_files_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means: not in the cache
        rev = f" --revision {revision}" if revision else ""
        raise BrainshapeError(
            f"cannot quantise {source}: it is not in the local Hugging Face cache ({error}); "
            f"fetch it on a login node with: hf download {source}{rev}"
        ) from None


def gptq_quantize(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    bits: int = 4,
    group_size: int = 128,
    texts: list[str] | None = None,
    device: str | None = None,
) -> Path:
    """Quantise the model in ``model_dir`` with GPTQ into ``out_dir`` (written atomically).

    ``texts`` are the calibration passages (default :func:`calibration_texts`). Runs on a GPU
    when one is visible, else on the CPU (slow, but fine for small models).
    """
    from brainshape.io import atomic_dir
    from brainshape.models import PREPARED_INFO

    try:
        from gptqmodel import GPTQModel, QuantizeConfig
    except ImportError as error:
        raise BrainshapeError(
            f"GPTQ quantisation needs GPT-QModel ({error}); it lives in its own environment: "
            "make .venv-gptq (or Snakemake --use-conda, workflow/envs/gptq.yaml)"
        ) from None
    import torch

    # GPT-QModel sizes its CPU worker pool from this; on 2-core machines the default is refused.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, os.cpu_count() or 2)))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    passages = calibration_texts() if texts is None else texts
    config = QuantizeConfig(bits=bits, group_size=group_size)
    model = GPTQModel.load(str(model_dir), config, device=device)
    log.info("quantising %s to %d bits on %d passages", model_dir, bits, len(passages))
    model.quantize(passages, batch_size=1)
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        model.save(str(tmp))
        if not (tmp / "tokenizer_config.json").exists():
            model.tokenizer.save_pretrained(tmp)
        info = {
            "quantized_from": str(model_dir),
            "method": "gptq (GPT-QModel)",
            "bits": bits,
            "group_size": group_size,
            "calibration_passages": len(passages),
            "calibration_words": PASSAGE_WORDS,
        }
        (tmp / PREPARED_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m brainshape.quantize", description=__doc__.splitlines()[0]
    )
    parser.add_argument("model", help="full-precision model folder, or a hub id in the cache")
    parser.add_argument("out", help="folder to write the GPTQ checkpoint to")
    parser.add_argument("--revision", default=None, help="revision of a hub id")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        source = resolve_source(args.model, args.revision)
        gptq_quantize(
            source, args.out, bits=args.bits, group_size=args.group_size, device=args.device
        )
    except BrainshapeError as error:
        print(f"brainshape: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
