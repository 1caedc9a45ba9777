"""Tests of brainshape.features: word -> token mapping, strided windows, resumable stories."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import AutoConfig, AutoModel, PreTrainedTokenizerFast

from brainshape import features, models
from brainshape.errors import BrainshapeError

ROOT = Path(__file__).resolve().parents[1]
DEMO_REGISTRY = ROOT / "config" / "models.demo.yaml"

CORPUS = [
    "Once upon a time, the lighthouse keeper climbed one hundred and twelve stairs.",
    "The orchard was quiet; apples fell in the grass and nobody picked them up.",
    "A ferry crossed the grey water twice a day, and the captain whistled as it went.",
]

# Words the tiny tokenizers split into several tokens (rare words, digits, punctuation).
STORY = (
    "Marta's lighthouse-keeping notebook, begun 1987, listed: gulls, tar, and blue glass. "
    "Once upon a time the keeper climbed twelve stairs; the ferry captain whistled. "
    "Nobody picked the apples up, said Tomas (aged nine) — über-quietly! "
) * 3
WORDS = STORY.split()


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def registry():
    return models.load_registry(DEMO_REGISTRY)


@pytest.fixture(scope="module")
def model_dirs(registry, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        name: models.prepare(registry[name], root / name, corpus=CORPUS)
        for name in ("tiny-gpt2", "tiny-neox")
    }


@pytest.fixture(scope="module")
def gpt2(registry, model_dirs):
    return models.load(registry["tiny-gpt2"], "fp32", model_dirs["tiny-gpt2"])


def _wordpiece_tokenizer(vocab: list[str], template: str | None = None):
    """A tokenizer whose splits are known by hand: greedy longest match over ``vocab``."""
    tok = Tokenizer(WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = {}
    if template is not None:
        ids = {t: vocab.index(t) for t in ("[CLS]", "[SEP]")}
        tok.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=list(ids.items())
        )
        specials = {"cls_token": "[CLS]", "sep_token": "[SEP]"}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", **specials
    )


# --- words to tokens -------------------------------------------------------------------------


def test_word_token_index_by_hand():
    vocab = ["[UNK]", "[PAD]", "un", "##happy", "dog", "##s", ",", "ran", "a", "##way"]
    tokenizer = _wordpiece_tokenizer(vocab)
    words = ["unhappy", "dogs,", "ran", "away"]
    # tokens: un ##happy | dog ##s , | ran | a ##way
    ids, last = features.word_token_index(tokenizer, words)
    assert ids.tolist() == [2, 3, 4, 5, 6, 7, 8, 9]
    assert last.tolist() == [1, 4, 5, 7]
    _, first = features.word_token_index(tokenizer, words, word_token="first")
    assert first.tolist() == [0, 2, 5, 6]
    assert ids.dtype == np.int64 and last.dtype == np.int64


def test_word_token_index_on_byte_level_bpe(gpt2):
    _, tokenizer = gpt2
    ids, last = features.word_token_index(tokenizer, WORDS)
    _, first = features.word_token_index(tokenizer, WORDS, word_token="first")
    assert ids.tolist() == tokenizer(" ".join(WORDS), add_special_tokens=False)["input_ids"]
    assert len(last) == len(WORDS) and np.all(np.diff(last) > 0) and np.all(first <= last)
    assert np.any(last - first >= 2), "the test story should have words of 3+ tokens"
    # The tokens up to a word's last token spell the story up to and including that word.
    for i in (0, 1, 5, len(WORDS) - 1):
        assert tokenizer.decode(ids[: last[i] + 1].tolist()) == " ".join(WORDS[: i + 1])
        assert tokenizer.decode(ids[first[i] : last[i] + 1].tolist()).strip() == WORDS[i]


def test_word_without_token_is_an_error(gpt2):
    _, tokenizer = gpt2
    with pytest.raises(BrainshapeError, match=r"word 1 of the story is empty \(''\)"):
        features.word_token_index(tokenizer, ["a", "", "b"])
    with pytest.raises(BrainshapeError, match="word_token is 'middle'; choose one of: last, first"):
        features.word_token_index(tokenizer, ["a"], word_token="middle")


def test_words_sharing_a_token_are_an_error():
    # "a" and "b" only exist as one token "a b" if the tokenizer ignores spaces: build one.
    vocab = ["[UNK]", "[PAD]", "ab"]
    tok = Tokenizer(WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Replace(" ", "")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    with pytest.raises(
        BrainshapeError,
        match=r"word 1 \('b'\) of the story has no token of "
        "its own",
    ):
        features.word_token_index(tokenizer, ["a", "b"])


# --- windows ---------------------------------------------------------------------------------


def test_window_starts_by_hand():
    # width 10, stride 4: windows [0,10) [4,14) [8,18) ...; a token goes to the earliest one.
    targets = np.array([0, 9, 10, 13, 14, 17, 18, 40])
    starts = features.window_starts(targets, width=10, stride=4)
    assert starts.tolist() == [0, 0, 4, 4, 8, 8, 12, 32]
    left = targets - starts
    assert np.all(left[targets >= 10] >= 10 - 4) and np.all(left <= 9)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-neox"])
@pytest.mark.parametrize("word_token", ["last", "first"])
def test_strided_equals_naive(registry, model_dirs, name, word_token):
    model, tokenizer = models.load(registry[name], "fp32", model_dirs[name])
    n_tokens = len(features.word_token_index(tokenizer, WORDS)[0])
    assert n_tokens > 6 * 24, "the story must span many windows"
    kwargs = {"context_tokens": 24, "stride": 7, "word_token": word_token}
    strided = features.extract_words(model, tokenizer, WORDS, batch_size=3, **kwargs)
    naive = features.extract_words_naive(model, tokenizer, WORDS, **kwargs)
    n_states = model.config.num_hidden_layers + 1
    assert strided.shape == (n_states, len(WORDS), model.config.hidden_size)
    assert strided.dtype == np.float32
    for layer in range(n_states):
        assert _relative_error(strided[layer], naive[layer]) < 1e-4, layer
    # Context matters: reading every word from the first window's position would differ.
    short = features.extract_words(
        model, tokenizer, WORDS, batch_size=3, context_tokens=8, stride=4, word_token=word_token
    )
    assert _relative_error(short[-1], strided[-1]) > 1e-2


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-neox"])
def test_first_layers_keep_the_states_of_the_whole_model(registry, model_dirs, name):
    spec, kwargs = registry[name], {"context_tokens": 24, "stride": 7, "batch_size": 3}
    model, tokenizer = models.load(spec, "fp32", model_dirs[name])
    whole = features.extract_words(model, tokenizer, WORDS, **kwargs)
    total = model.config.num_hidden_layers
    assert not models.first_layers(model, total)  # nothing to cut
    assert models.first_layers(model, 2)
    assert model.config.num_hidden_layers == 2
    cut = features.extract_words(model, tokenizer, WORDS, **kwargs)
    assert cut.shape[0] == 3 and whole.shape[0] == total + 1
    np.testing.assert_array_equal(cut[:2], whole[:2])
    # The last state of the cut model is normalised as the whole model's last one is.
    assert _relative_error(cut[2], whole[2]) > 1e-2


def test_no_future_context(gpt2):
    model, tokenizer = gpt2
    kwargs = {"context_tokens": 20, "stride": 6}
    full = features.extract_words(model, tokenizer, WORDS, **kwargs)
    cut = len(WORDS) // 2
    changed = WORDS[:cut] + list(reversed(WORDS[cut:]))
    other = features.extract_words(model, tokenizer, changed, **kwargs)
    np.testing.assert_allclose(other[:, :cut], full[:, :cut], rtol=0, atol=1e-5)
    assert _relative_error(other[-1, cut + 1 :], full[-1, cut + 1 :]) > 1e-2


def test_batch_size_does_not_change_the_result(gpt2):
    model, tokenizer = gpt2
    one = features.extract_words(model, tokenizer, WORDS, context_tokens=20, stride=6, batch_size=1)
    many = features.extract_words(
        model, tokenizer, WORDS, context_tokens=20, stride=6, batch_size=64
    )
    assert _relative_error(many, one) < 1e-5


def test_context_is_capped_at_the_model(registry, gpt2):
    model, tokenizer = gpt2
    words = WORDS * 3
    assert len(features.word_token_index(tokenizer, words)[0]) > 300  # > n_positions (256)
    capped = features.extract_words(model, tokenizer, words, context_tokens=1000, batch_size=2)
    at_limit = features.extract_words(
        model, tokenizer, words, context_tokens=256, stride=128, batch_size=2
    )
    np.testing.assert_array_equal(capped, at_limit)
    # The registry's context caps it further, and a stride meant for longer windows shrinks.
    by_spec = features.extract_words(
        model, tokenizer, words, context_tokens=256, stride=128, max_context=64
    )
    reference = features.extract_words(model, tokenizer, words, context_tokens=64, stride=32)
    np.testing.assert_array_equal(by_spec, reference)


def test_bad_stride(gpt2):
    model, tokenizer = gpt2
    with pytest.raises(
        BrainshapeError, match="stride 40 must be between 1 and the window's 32 story tokens"
    ):
        features.extract_words(model, tokenizer, WORDS, context_tokens=32, stride=40)


def _tiny_model(model_type: str, vocab_size: int, **config):
    torch.manual_seed(5)
    return AutoModel.from_config(
        AutoConfig.for_model(model_type, vocab_size=vocab_size, **config)
    ).eval()


def test_bos_is_put_before_every_window():
    vocab = [
        "[UNK]",
        "[PAD]",
        "[CLS]",
        "[SEP]",
        "un",
        "##happy",
        "dog",
        "##s",
        ",",
        "ran",
        "a",
        "##way",
        "the",
        "cat",
    ]
    # A Llama-like tokenizer: adds a start token ([CLS] plays BOS) to every text.
    tokenizer = _wordpiece_tokenizer(vocab, template="[CLS] $A")
    assert features.special_tokens_around(tokenizer) == ((2,), ())
    model = _tiny_model("gpt2", len(vocab), n_layer=2, n_embd=16, n_head=2, n_positions=32)
    words = "the unhappy dogs, ran away the cat ran".split() * 6
    kwargs = {"context_tokens": 8, "stride": 3}
    strided = features.extract_words(model, tokenizer, words, batch_size=4, **kwargs)
    naive = features.extract_words_naive(model, tokenizer, words, **kwargs)
    assert _relative_error(strided, naive) < 1e-4
    # Word 0 ("the") is read at position 1, right after the start token.
    with torch.inference_mode():
        direct = model(input_ids=torch.tensor([[2, 12]]), output_hidden_states=True)
    np.testing.assert_allclose(
        strided[:, 0], torch.stack(direct.hidden_states)[:, 0, 1].numpy(), rtol=0, atol=1e-5
    )


def test_encoder_windows_end_at_each_word():
    vocab = [
        "[UNK]",
        "[PAD]",
        "[CLS]",
        "[SEP]",
        "un",
        "##happy",
        "dog",
        "##s",
        ",",
        "ran",
        "a",
        "##way",
        "the",
        "cat",
    ]
    tokenizer = _wordpiece_tokenizer(vocab, template="[CLS] $A [SEP]")
    model = _tiny_model(
        "bert",
        len(vocab),
        num_hidden_layers=2,
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    words = "the unhappy dogs, ran away the cat ran".split() * 4
    kwargs = {"context_tokens": 9, "arch": "encoder"}
    batched = features.extract_words(model, tokenizer, words, batch_size=5, **kwargs)
    naive = features.extract_words_naive(model, tokenizer, words, **kwargs)
    assert batched.shape == (3, len(words), 16)
    assert _relative_error(batched, naive) < 1e-4
    # Word 1 ("unhappy", tokens 1-2) is read at its last token, after [CLS] the un: position 3,
    # in a window that ends there.
    with torch.inference_mode():
        direct = model(input_ids=torch.tensor([[2, 12, 4, 5, 3]]), output_hidden_states=True)
    np.testing.assert_allclose(
        batched[:, 1], torch.stack(direct.hidden_states)[:, 0, 3].numpy(), rtol=0, atol=1e-5
    )


def test_unknown_architecture_is_refused(gpt2):
    model, tokenizer = gpt2
    with pytest.raises(BrainshapeError, match="architecture 'seq2seq' is not supported"):
        features.extract_words(model, tokenizer, WORDS, context_tokens=16, arch="seq2seq")


def test_encoder_decoder_models_give_encoder_states(tmp_path):
    entry = {
        "family": "tiny-t5",
        "arch": "encoder-decoder",
        "context": 64,
        "source": {
            "kind": "tiny",
            "model_type": "t5",
            "seed": 4,
            "config": {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4},
            "tokenizer": {"vocab_size": 400},
        },
        "variants": {"fp32": {"kind": "full"}},
    }
    spec = models.registry_from_dict({"models": {"tiny-t5": entry}})["tiny-t5"]
    out = models.prepare(spec, tmp_path / "tiny-t5", corpus=CORPUS)
    encoder, tokenizer = models.load(spec, "fp32", out)
    assert type(encoder).__name__ == "T5Stack" and not encoder.is_decoder
    words = WORDS[:25]
    settings = {"context_tokens": 12, "arch": "encoder-decoder", "max_context": spec.context}
    batched = features.extract_words(encoder, tokenizer, words, batch_size=4, **settings)
    naive = features.extract_words_naive(encoder, tokenizer, words, **settings)
    assert batched.shape == (3, 25, 32)
    np.testing.assert_allclose(batched, naive, rtol=0, atol=1e-5)
    # The states are the encoder's: the same as the full model's encoder outputs.
    full = AutoModel.from_pretrained(out).eval()
    ids, targets = features.word_token_index(tokenizer, words, "last")
    with torch.inference_mode():
        direct = full.encoder(input_ids=torch.tensor([ids[: targets[0] + 1].tolist()]))
    np.testing.assert_allclose(
        batched[-1, 0], direct.last_hidden_state[0, -1].numpy(), rtol=0, atol=1e-5
    )


# --- stories ---------------------------------------------------------------------------------


def test_untrained_features_are_reproducible(registry, model_dirs, tmp_path):
    spec = registry["tiny-neox"]
    stories = {"s": WORDS}
    settings = {"context_tokens": 32, "stride": 16, "batch_size": 4, "word_token": "last"}
    a = features.extract_stories(
        spec,
        "untrained",
        model_dirs["tiny-neox"],
        stories,
        {"s": tmp_path / "a" / "s.npy"},
        **settings,
    )
    b = features.extract_stories(
        spec,
        "untrained",
        model_dirs["tiny-neox"],
        stories,
        {"s": tmp_path / "b" / "s.npy"},
        **settings,
    )
    c = features.extract_stories(
        spec, "fp32", model_dirs["tiny-neox"], stories, {"s": tmp_path / "c" / "s.npy"}, **settings
    )
    untrained_a, untrained_b, trained = (np.load(p["s"]) for p in (a, b, c))
    np.testing.assert_array_equal(untrained_a, untrained_b)
    assert _relative_error(untrained_a[-1], trained[-1]) > 0.1


def test_stories_resume(registry, model_dirs, tmp_path, monkeypatch, caplog):
    spec, model_dir = registry["tiny-gpt2"], model_dirs["tiny-gpt2"]
    stories = {"one": WORDS[:30], "two": WORDS[30:70], "three": WORDS[70:]}
    paths = {s: tmp_path / f"{s}.npy" for s in stories}
    settings = {"context_tokens": 32, "stride": 16, "batch_size": 4, "word_token": "last"}
    # "two" is finished already (a planted array of the right shape): it must be kept as is.
    planted = np.full((5, 40, 64), 7.0, dtype=np.float32)
    np.save(paths["two"], planted)
    # "three" holds an array for another number of words: recomputed.
    np.save(paths["three"], np.zeros((5, 3, 64), dtype=np.float32))
    os.utime(paths["two"], (1_000_000, 1_000_000))
    with caplog.at_level("INFO", logger="brainshape"):
        features.extract_stories(spec, "fp32", model_dir, stories, paths, **settings)
    assert "story two already extracted" in caplog.text
    assert "story one: 30 words" in caplog.text and "tokens/s" in caplog.text
    np.testing.assert_array_equal(np.load(paths["two"]), planted)
    assert paths["two"].stat().st_mtime == 1_000_000
    model, tokenizer = models.load(spec, "fp32", model_dir)
    for story in ("one", "three"):
        expected = features.extract_words(
            model, tokenizer, stories[story], context_tokens=32, stride=16
        )
        np.testing.assert_array_equal(np.load(paths[story]), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.npy", "three.npy", "two.npy"]

    # Everything done: nothing is recomputed and the model is not even loaded.
    mtimes = {s: p.stat().st_mtime_ns for s, p in paths.items()}

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded although every story was done")

    monkeypatch.setattr(models, "load", no_load)
    features.extract_stories(spec, "fp32", model_dir, stories, paths, **settings)
    assert {s: p.stat().st_mtime_ns for s, p in paths.items()} == mtimes


def test_story_errors_name_the_story(registry, model_dirs, tmp_path):
    spec = registry["tiny-gpt2"]
    with pytest.raises(
        BrainshapeError,
        match=r"tiny-gpt2/fp32, story bad: word 2 of the story "
        r"is empty",
    ):
        features.extract_stories(
            spec,
            "fp32",
            model_dirs["tiny-gpt2"],
            {"bad": ["a", "b", " "]},
            {"bad": tmp_path / "bad.npy"},
            context_tokens=16,
        )
    assert not (tmp_path / "bad.npy").exists()
    with pytest.raises(BrainshapeError, match="no output path given for stories: x"):
        features.extract_stories(
            spec, "fp32", model_dirs["tiny-gpt2"], {"x": ["a"]}, {}, context_tokens=16
        )


def test_resume_folder_keeps_stories_only_under_the_same_settings(tmp_path):
    folder = tmp_path / ".full.partial"
    settings = {"context_tokens": 128, "entry": {"hf_id": None}, "code": "abc"}
    features.resume_folder(folder, settings)
    (folder / "lighthouse.npy").write_bytes(b"finished story")
    # The same settings (key order aside): the finished story stays.
    features.resume_folder(folder, dict(reversed(list(settings.items()))))
    assert (folder / "lighthouse.npy").read_bytes() == b"finished story"
    # Another context length: the folder starts afresh, stamped with the new settings.
    features.resume_folder(folder, {**settings, "context_tokens": 256})
    assert sorted(p.name for p in folder.iterdir()) == ["settings.json"]
    assert json.loads((folder / "settings.json").read_text())["context_tokens"] == 256
    (folder / "orchard.npy").write_bytes(b"x")
    (folder / "settings.json").write_text("{not json")  # a stamp cut short by a kill
    features.resume_folder(folder, settings)
    assert sorted(p.name for p in folder.iterdir()) == ["settings.json"]


def test_read_features_memory_maps_each_story_and_names_missing_files(tmp_path):
    arrays = {s: np.full((3, 4 + k, 2), k, dtype=np.float32) for k, s in enumerate(("a", "b"))}
    for story, array in arrays.items():
        np.save(tmp_path / f"{story}.npy", array)
    feats = features.read_features(tmp_path, ["b", "a"])
    assert list(feats) == ["b", "a"]
    for story, array in arrays.items():
        assert isinstance(feats[story], np.memmap)
        np.testing.assert_array_equal(feats[story], array)
    with pytest.raises(BrainshapeError, match=r"c\.npy is missing: the features of story 'c'"):
        features.read_features(tmp_path, ["a", "c"])
    np.save(tmp_path / "flat.npy", np.zeros((4, 2), dtype=np.float32))
    with pytest.raises(BrainshapeError, match=r"flat\.npy has shape \(4, 2\); expected"):
        features.read_features(tmp_path, ["flat"])
