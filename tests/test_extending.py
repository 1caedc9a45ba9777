"""Extension points are registry tables: adding an entry (and its function) is all it takes.

Each test adds a toy entry at run time, touching no file of the project, and runs it through
the code that uses the table (docs/extending.md walks through the same steps).
"""

import copy
import re

import numpy as np
import pytest
import yaml
from conftest import REPO, SCHEMAS

from brainshape import config, features, models
from brainshape.config import load_registry_dict, validate
from brainshape.sizing import JobSizing
from brainshape.study import Study


def _schema_registries(node, found):
    if isinstance(node, dict):
        if "x-registry" in node:
            found.append(node["x-registry"])
        for value in node.values():
            _schema_registries(value, found)
    elif isinstance(node, list):
        for value in node:
            _schema_registries(value, found)
    return found


def test_schema_keys_take_their_values_from_the_registry_tables():
    """Every ``x-registry`` of the schemas names a table that exists, and config/README.md
    documents each of its names."""
    readme = (REPO / "config" / "README.md").read_text()
    referenced = []
    for schema in sorted(SCHEMAS.glob("*.schema.yaml")):
        referenced += _schema_registries(yaml.safe_load(schema.read_text()), [])
    assert "brainshape.models:VARIANT_KINDS" in referenced
    for reference in referenced:
        names = config.registry_names(reference)
        assert names, reference
        undocumented = [n for n in names if not re.search(rf"`{re.escape(n)}`", readme)]
        assert not undocumented, f"{reference}: not in config/README.md: {undocumented}"


def _noised(loading: models.Loading):
    """A toy kind: the trained weights with Gaussian noise of ``noise`` x their scale added."""
    import torch

    model, tokenizer, placed = models.VARIANT_KINDS["full"].load(loading)
    generator = torch.Generator().manual_seed(int(loading.settings["seed"]))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * p.std() * torch.randn(p.shape, generator=generator))
    return model, tokenizer, placed


def test_a_new_variant_kind_is_one_entry_and_its_loader(tmp_path, monkeypatch):
    kind = models.VariantKind("noised", _noised, bits=8.0, slowdown=1.2)
    monkeypatch.setitem(models.VARIANT_KINDS, "noised", kind)
    registry = yaml.safe_load((REPO / "config" / "models.demo.yaml").read_text())
    entry = registry["models"]["tiny-gpt2"]
    entry["variants"]["noisy"] = {"kind": "noised", "seed": 3}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(registry))
    # The registry schema takes the kinds from the table: the new kind validates.
    checked = load_registry_dict(path, SCHEMAS / "models.schema.yaml")
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg.update(registry=str(path), models=["tiny-gpt2"])
    study = Study(validate(cfg, SCHEMAS / "config.schema.yaml", "demo.yaml"), checked, "test")
    assert study.kind("tiny-gpt2", "noisy") is kind and not study.is_quantized_here(
        "tiny-gpt2", "noisy"
    )
    # Planning uses its bits per weight and slowdown.
    sizing = JobSizing(study)
    assert sizing.features_runtime_min("demo", "tiny-gpt2", "noisy") >= 1
    # Loading and extraction run through its loader.
    spec = models.registry_from_dict(copy.deepcopy(checked))["tiny-gpt2"]
    folder = models.prepare(spec, tmp_path / "tiny-gpt2")
    words = "the ferry left the harbour at dawn".split()
    states = {}
    for variant in ("fp32", "noisy"):
        model, tokenizer = models.load(spec, variant, folder, device="cpu")
        states[variant] = features.extract_words(
            model, tokenizer, words, context_tokens=32, arch="decoder", max_context=spec.context
        )
    assert states["fp32"].shape == states["noisy"].shape
    assert not np.allclose(states["fp32"][-1], states["noisy"][-1])
    # An unknown kind is still refused with the table's names.
    entry["variants"]["noisy"]["kind"] = "noisd"
    path.write_text(yaml.safe_dump(registry))
    with pytest.raises(Exception, match=r"'noisd'; choose one of: full, untrained, .*, noised"):
        load_registry_dict(path, SCHEMAS / "models.schema.yaml")
