"""Hidden states of every layer of a language model, one vector per word of a story.

A story is the words of the words table joined by single spaces and tokenised once. Each word
is represented by one of its tokens (its last by default: the first position where the model
has read the whole word). The token sequence is cut into **strided windows** of
``context_tokens`` tokens that start every ``stride`` tokens; windows are run in batches and
each word's state is read from the window where its token has the most left context, i.e. the
earliest window that contains it. So a token sees between ``width - stride`` and
``width - 1`` story tokens before it (fewer only in the first window, near the story start),
where ``width`` is the window length less any special tokens (below), and no token after it.
:func:`extract_words_naive` recomputes each word alone over exactly that left context; the two
agree to float rounding, which the tests check.

Special tokens: whatever the tokenizer puts *before* a text when asked to add special tokens
(the BOS token of Llama-2/3-like tokenizers; nothing for GPT-2, SmolLM2 or the tiny demo
models) is put before every window, because such models were trained to see it first. It
counts toward ``context_tokens``.

Encoders (``arch: encoder``) see both sides of a token, so each word gets its own window
*ending* at its token (no future words), with ``width - 1`` tokens of left context, framed by
the tokenizer's special tokens ([CLS] ... [SEP]); these windows are batched with padding.
Encoder-decoder models (``arch: encoder-decoder``, e.g. T5) are represented by their encoder's
states, windowed like encoders; :func:`brainshape.models.load` returns the encoder alone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from brainshape import io
from brainshape.errors import BrainshapeError

if TYPE_CHECKING:
    from brainshape.models import ModelSpec

log = logging.getLogger(__name__)

ARCHS = ("decoder", "encoder", "encoder-decoder")
WORD_TOKENS = ("last", "first")


# --- words to tokens -------------------------------------------------------------------------


def story_text(words: Sequence[str]) -> str:
    """The text the model reads: the words joined by single spaces."""
    return " ".join(words)


def _encode(tokenizer, text: str, offsets: bool = False):
    if not getattr(tokenizer, "is_fast", False):
        raise BrainshapeError(
            f"the tokenizer ({type(tokenizer).__name__}) is not a fast tokenizer, so it cannot "
            "map tokens back to words; use a model that ships a tokenizer.json"
        )
    # verbose=False: a whole story is longer than the model's context on purpose (it is cut
    # into windows afterwards), which is not worth a warning.
    return tokenizer(text, add_special_tokens=False, return_offsets_mapping=offsets, verbose=False)


def word_token_index(
    tokenizer, words: Sequence[str], word_token: str = "last"
) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise a story and find the token that stands for each word.

    Returns ``input_ids`` (n_tokens,) int64, the tokens of ``story_text(words)`` without
    special tokens, and ``word_tokens`` (n_words,) int64: for each word the index of the token
    covering its last character (``word_token="last"``) or its first (``"first"``). Every word
    must have a token of its own (indices strictly increasing), else BrainshapeError.
    """
    if word_token not in WORD_TOKENS:
        raise BrainshapeError(
            f"word_token is {word_token!r}; choose one of: {', '.join(WORD_TOKENS)}"
        )
    if len(words) == 0:
        raise BrainshapeError("the story has no words; check the words table")
    for i, word in enumerate(words):
        if not word or not word.strip():
            raise BrainshapeError(
                f"word {i} of the story is empty ({word!r}); every row of "
                "the words table needs a word"
            )
    encoding = _encode(tokenizer, story_text(words), offsets=True)
    ids = np.asarray(encoding["input_ids"], dtype=np.int64)
    # Character -> token: the first and the last token covering each character. Byte-level
    # tokenizers can split one character over two tokens, hence both.
    n_chars = len(story_text(words))
    first_tok = np.full(n_chars, -1, dtype=np.int64)
    last_tok = np.full(n_chars, -1, dtype=np.int64)
    for t, (start, end) in enumerate(encoding["offset_mapping"]):
        if end > start:
            span = slice(start, end)
            last_tok[span] = t
            seg = first_tok[span]
            seg[seg < 0] = t
    lengths = np.array([len(w) for w in words])
    starts = np.concatenate([[0], np.cumsum(lengths[:-1] + 1)])
    if word_token == "last":
        index = last_tok[starts + lengths - 1]
    else:
        index = first_tok[starts]
    bad = np.flatnonzero(index < 0)
    if bad.size == 0:
        bad = np.flatnonzero(np.diff(index) <= 0) + 1
    if bad.size:
        i = int(bad[0])
        raise BrainshapeError(
            f"word {i} ({words[i]!r}) of the story has no token of its own with this tokenizer "
            f"(it shares one with the previous word or maps to none); fix that word in the "
            "words table"
        )
    return ids, index.astype(np.int64)


# --- windows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """What a model sees around story tokens: special tokens before/after, content width."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    width: int
    stride: int


def special_tokens_around(tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Token ids the tokenizer adds before and after a text when adding special tokens."""
    plain = list(_encode(tokenizer, "a")["input_ids"])
    full = list(tokenizer("a", add_special_tokens=True, verbose=False)["input_ids"])
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return tuple(full[:i]), tuple(full[i + len(plain) :])
    return (), ()


def max_positions(model) -> int | None:
    """Most positions the model's config allows (None if the config does not say)."""
    config = model.config
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def make_frame(
    model,
    tokenizer,
    *,
    context_tokens: int,
    stride: int | None,
    arch: str,
    max_context: int | None,
) -> Frame:
    """Window geometry: ``context_tokens`` capped at the model's context, less special tokens."""
    if arch not in ARCHS:
        raise BrainshapeError(
            f"architecture '{arch}' is not supported for feature extraction "
            f"(supported: {', '.join(ARCHS)})"
        )
    prefix, suffix = special_tokens_around(tokenizer)
    if arch == "decoder":
        suffix = ()  # what follows a token never changes a causal model's state for it
    limits = [n for n in (max_context, max_positions(model)) if n]
    width, stride = window_geometry(
        context_tokens,
        stride,
        cap=min(limits) if limits else None,
        special=len(prefix) + len(suffix),
        arch=arch,
    )
    return Frame(prefix=prefix, suffix=suffix, width=width, stride=stride)


def window_geometry(
    context_tokens: int, stride: int | None, *, cap: int | None, special: int, arch: str
) -> tuple[int, int]:
    """(story tokens per window, stride) for ``context_tokens`` capped at ``cap`` (the model's
    context; None: no cap), less ``special`` tokens around each window.

    The stride defaults to half the window; a configured stride longer than a capped window
    (one meant for a longer context) becomes half of it. Encoders get one window per word, so
    their stride is the window. The planner (:mod:`brainshape.sizing`) uses the same rule.
    """
    length = min(context_tokens, cap) if cap else context_tokens
    if length < context_tokens:
        log.info("context_tokens %d exceeds the model's context; using %d", context_tokens, length)
    width = length - special
    if width < 1:
        raise BrainshapeError(
            f"context_tokens {context_tokens} leaves no room for story tokens "
            f"beside {special} special tokens; raise it"
        )
    if stride is None:
        stride = max(1, length // 2)
    if arch != "decoder":
        stride = width  # unused: encoders get one window per word
    elif length < context_tokens and stride > width:
        # The configured stride was meant for a longer window than this model accepts.
        log.info(
            "stride %d exceeds the capped window (%d tokens); using %d",
            stride,
            width,
            max(1, width // 2),
        )
        stride = max(1, width // 2)
    if not 1 <= stride <= width:
        raise BrainshapeError(
            f"stride {stride} must be between 1 and the window's {width} story tokens "
            f"(context_tokens {length} less {special} special tokens)"
        )
    return width, stride


def window_starts(targets: np.ndarray, width: int, stride: int) -> np.ndarray:
    """For each target token index, the start of the earliest window holding it.

    Windows start at 0, stride, 2*stride, ... and span ``width`` tokens; token ``t`` therefore
    gets ``t - start`` tokens of left context: ``t`` for ``t < width``, else between
    ``width - stride`` and ``width - 1``.
    """
    targets = np.asarray(targets, dtype=np.int64)
    k = np.where(targets < width, 0, (targets - width) // stride + 1)
    return k * stride


# --- forward passes --------------------------------------------------------------------------


def _run(model, batch: list[list[int]], rows: list[list[int]], pad_id: int):
    """Forward a batch of windows; returns (n_states, sum(len(r) for r in rows), hidden) float32.

    Windows of unequal length are right-padded and masked (exact for the unpadded positions).
    Only the requested rows of each window leave the device.
    """
    import torch

    device = next(model.parameters()).device
    lengths = [len(w) for w in batch]
    longest = max(lengths)
    ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    for b, window in enumerate(batch):
        ids[b, : len(window)] = torch.tensor(window, dtype=torch.long)
    kwargs = {"input_ids": ids.to(device), "output_hidden_states": True}
    if min(lengths) != longest:
        mask = torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]
        kwargs["attention_mask"] = mask.long().to(device)
    out = model(**kwargs)
    b_index = torch.tensor([b for b, r in enumerate(rows) for _ in r], device=device)
    p_index = torch.tensor([p for r in rows for p in r], device=device)
    picked = torch.stack([h[b_index, p_index] for h in out.hidden_states])
    return picked.float().cpu().numpy()


def _batches(windows: list[list[int]], batch_size: int, pad: bool):
    """Index lists of consecutive windows; without padding a batch holds one window length."""
    batch: list[int] = []
    for i, window in enumerate(windows):
        if batch and (
            len(batch) == batch_size or (not pad and len(windows[batch[0]]) != len(window))
        ):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _plan(frame: Frame, ids: np.ndarray, targets: np.ndarray, arch: str):
    """Windows (token id lists, special tokens included) and, per window, (row, word) pairs."""
    prefix, suffix, n = list(frame.prefix), list(frame.suffix), len(ids)
    windows: list[list[int]] = []
    reads: list[list[tuple[int, int]]] = []
    if arch == "decoder":
        starts = window_starts(targets, frame.width, frame.stride)
        for start in np.unique(starts):
            window = ids[start : min(start + frame.width, n)].tolist()
            words = np.flatnonzero(starts == start)
            windows.append(prefix + window)
            reads.append([(len(prefix) + int(targets[w] - start), int(w)) for w in words])
    else:
        for w, t in enumerate(targets):
            start = max(0, int(t) - frame.width + 1)
            windows.append(prefix + ids[start : t + 1].tolist() + suffix)
            reads.append([(len(prefix) + int(t) - start, w)])
    return windows, reads


def _extract(
    model,
    tokenizer,
    words,
    *,
    context_tokens,
    stride,
    batch_size,
    word_token,
    arch,
    max_context,
    progress,
):
    import torch

    if batch_size < 1:
        raise BrainshapeError(f"batch_size is {batch_size}; it must be at least 1")
    frame = make_frame(
        model,
        tokenizer,
        context_tokens=context_tokens,
        stride=stride,
        arch=arch,
        max_context=max_context,
    )
    ids, targets = word_token_index(tokenizer, words, word_token)
    windows, reads = _plan(frame, ids, targets, arch)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = None
    batches = list(_batches(windows, batch_size, pad=arch != "decoder"))
    bar = None
    if progress:
        from tqdm import tqdm

        # Counts forwarded tokens, so the rate it shows is tokens/s (window overlap included).
        total = sum(len(w) for w in windows)
        bar = tqdm(total=total, desc="tokens", unit="tok", unit_scale=True, mininterval=10)
    n_forward = 0
    with torch.inference_mode():
        for batch in batches:
            rows = [[r for r, _ in reads[i]] for i in batch]
            states = _run(model, [windows[i] for i in batch], rows, pad_id)
            if out is None:
                out = np.empty((states.shape[0], len(words), states.shape[2]), dtype=np.float32)
            out[:, [w for i in batch for _, w in reads[i]]] = states
            done = sum(len(windows[i]) for i in batch)
            n_forward += done
            if bar is not None:
                bar.update(done)
    if bar is not None:
        bar.close()
    return out, len(ids), n_forward


def extract_words(
    model,
    tokenizer,
    words: Sequence[str],
    *,
    context_tokens: int,
    stride: int | None = None,
    batch_size: int = 8,
    word_token: str = "last",
    arch: str = "decoder",
    max_context: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Hidden states of every layer for every word: float32 (n_layers + 1, n_words, hidden).

    Index 0 is the embedding output. ``context_tokens`` is the window length in tokens
    (special tokens included), capped at ``max_context`` (the registry's ``context``) and the
    model config's position limit; ``stride`` (tokens, default half the window) is the step
    between windows; ``batch_size`` counts windows per forward pass. See the module docstring
    for which window each word is read from.
    """
    out, _, _ = _extract(
        model,
        tokenizer,
        words,
        context_tokens=context_tokens,
        stride=stride,
        batch_size=batch_size,
        word_token=word_token,
        arch=arch,
        max_context=max_context,
        progress=progress,
    )
    return out


def extract_words_naive(
    model,
    tokenizer,
    words: Sequence[str],
    *,
    context_tokens: int,
    stride: int | None = None,
    word_token: str = "last",
    arch: str = "decoder",
    max_context: int | None = None,
) -> np.ndarray:
    """Reference for :func:`extract_words`: one forward pass per word, no batching.

    Each word is run alone over exactly the tokens :func:`extract_words` gives it as left
    context (special tokens framed the same way), ending at its token. Slow; for tests.
    """
    import torch

    frame = make_frame(
        model,
        tokenizer,
        context_tokens=context_tokens,
        stride=stride,
        arch=arch,
        max_context=max_context,
    )
    ids, targets = word_token_index(tokenizer, words, word_token)
    if arch == "decoder":
        starts = window_starts(targets, frame.width, frame.stride)
    else:
        starts = np.maximum(0, targets - frame.width + 1)
    device = next(model.parameters()).device
    rows = []
    with torch.inference_mode():
        for start, t in zip(starts, targets, strict=True):
            window = list(frame.prefix) + ids[start : t + 1].tolist() + list(frame.suffix)
            out = model(input_ids=torch.tensor([window], device=device), output_hidden_states=True)
            pos = len(frame.prefix) + int(t - start)
            rows.append(torch.stack([h[0, pos] for h in out.hidden_states]).float().cpu())
    return torch.stack(rows, dim=1).numpy()


# --- stories ---------------------------------------------------------------------------------


def resume_folder(folder: str | os.PathLike, settings: Mapping) -> Path:
    """The scratch folder a features job writes its stories into, ready to resume.

    Stories finished by an earlier, killed run of the job are kept only if that run had the
    same ``settings`` (the job's parameters and code stamp, JSON-serialisable): a folder left
    by a run with another context length, registry entry or code is emptied first, so a
    resumed job never mixes features computed two ways. The settings are written to
    ``settings.json`` in the folder (and so end up beside the features).
    """
    folder = Path(folder)
    stamp = folder / "settings.json"
    wanted = json.dumps(settings, sort_keys=True, default=str)
    if folder.exists():
        try:
            same = json.dumps(json.loads(stamp.read_text()), sort_keys=True) == wanted
        except (OSError, ValueError):
            same = False
        if not same:
            log.info("%s was written with other settings; starting it afresh", folder)
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not stamp.is_file():
        io.save_text(stamp, wanted + "\n")
    return folder


def _finished(path: Path, n_words: int) -> bool:
    """Whether ``path`` already holds a features array for ``n_words`` words."""
    if not path.is_file():
        return False
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return array.ndim == 3 and array.shape[1] == n_words and array.dtype == np.float32


def extract_stories(
    spec: ModelSpec,
    variant: str,
    model_dir: str | os.PathLike | None,
    stories: Mapping[str, Sequence[str]],
    out_paths: Mapping[str, str | os.PathLike],
    *,
    context_tokens: int,
    stride: int | None = None,
    batch_size: int = 8,
    word_token: str = "last",
    device: str | None = None,
    progress: bool = False,
) -> dict[str, Path]:
    """Extract features of several stories with one model load; returns story -> path.

    ``stories`` maps a story to its words (word_index order); each array (see
    :func:`extract_words`) is written atomically to ``out_paths[story]``. A story whose file
    already exists with the right number of words is skipped, so a killed job resumes where it
    stopped; the model is not even loaded when every story is done.
    """
    from brainshape import models

    missing = [s for s in stories if s not in out_paths]
    if missing:
        raise BrainshapeError(f"no output path given for stories: {', '.join(missing)}")
    if spec.arch not in ARCHS:
        raise BrainshapeError(
            f"model '{spec.name}' has arch '{spec.arch}'; feature extraction "
            f"supports: {', '.join(ARCHS)}"
        )
    paths = {s: Path(out_paths[s]) for s in stories}
    todo = [s for s in stories if not _finished(paths[s], len(stories[s]))]
    for story in (s for s in stories if s not in todo):
        log.info(
            "%s/%s: story %s already extracted (%s), skipped",
            spec.name,
            variant,
            story,
            paths[story],
        )
    if not todo:
        return paths
    start = time.perf_counter()
    model, tokenizer = models.load(spec, variant, model_dir, device=device)
    log.info(
        "%s/%s: loaded in %.1f s on %s",
        spec.name,
        variant,
        time.perf_counter() - start,
        next(model.parameters()).device,
    )
    options = dict(
        context_tokens=context_tokens,
        stride=stride,
        batch_size=batch_size,
        word_token=word_token,
        progress=progress,
    )
    for story in todo:
        _extract_story(
            model, tokenizer, spec, variant, story, list(stories[story]), paths[story], options
        )
    return paths


def _extract_story(model, tokenizer, spec, variant, story, words, path, options) -> None:
    """Extract one story and write its array atomically to ``path``, with its rate logged."""
    start = time.perf_counter()
    try:
        array, n_tokens, n_forward = _extract(
            model, tokenizer, words, arch=spec.arch, max_context=spec.context, **options
        )
    except BrainshapeError as error:
        raise BrainshapeError(f"{spec.name}/{variant}, story {story}: {error}") from None
    seconds = max(time.perf_counter() - start, 1e-9)
    io.save_npy(path, array)
    log.info(
        "%s/%s: story %s: %d words, %d tokens (%d forwarded) in %.2f s: %.0f tokens/s, "
        "%.0f words/s -> %s",
        spec.name,
        variant,
        story,
        len(words),
        n_tokens,
        n_forward,
        seconds,
        n_tokens / seconds,
        len(words) / seconds,
        path,
    )


def read_features(folder: str | os.PathLike, stories: Sequence[str]) -> dict[str, np.ndarray]:
    """A variant's features folder: story -> memory-mapped ``<story>.npy``.

    Each array is (n_layers + 1, n_words, hidden) float32 as :func:`extract_stories` writes it
    (layer 0 the embeddings, words in word_index order). Memory-mapped, so a job reads only the
    layers it uses. Raises a BrainshapeError naming a missing or unreadable file, or a file
    changed since the features rule wrote the folder (its manifest, :func:`io.verify_manifest`).
    """
    folder = Path(folder)
    io.verify_manifest(folder)
    out = {}
    for story in stories:
        path = folder / f"{story}.npy"
        if not path.is_file():
            raise BrainshapeError(
                f"{path} is missing: the features of story {story!r} were not extracted; run "
                "the features rule of this model variant."
            )
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise BrainshapeError(
                f"cannot read {path} as a .npy array ({error}); rerun the features rule."
            ) from None
        if array.ndim != 3:
            raise BrainshapeError(
                f"{path} has shape {array.shape}; expected (n_layers + 1, n_words, hidden). "
                "Rerun the features rule."
            )
        out[str(story)] = array
    return out


__all__ = [
    "Frame",
    "extract_stories",
    "extract_words",
    "extract_words_naive",
    "make_frame",
    "max_positions",
    "read_features",
    "special_tokens_around",
    "story_text",
    "window_starts",
    "word_token_index",
]
