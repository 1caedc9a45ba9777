"""Pinning the registry's hub revisions to the commits that were downloaded."""

import hashlib
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from brainshape import cli, models, pin

ROOT = Path(__file__).parents[1]


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _cache(tmp_path: Path, repos: dict[str, str], branch: str = "main") -> Path:
    """A Hugging Face cache in which ``branch`` of each repo points at the given commit."""
    cache = tmp_path / "hub"
    for repo, commit in repos.items():
        ref = cache / ("models--" + repo.replace("/", "--")) / "refs" / branch
        ref.parent.mkdir(parents=True)
        ref.write_text(commit)
    return cache


def test_study_registry_is_pinned_from_the_cache_keeping_its_comments(tmp_path):
    registry = tmp_path / "models.yaml"
    shutil.copy(ROOT / "config/models.yaml", registry)
    before = registry.read_text()
    repos = {repo for _, repo, _, _ in pin.find_revisions(yaml.safe_load(before))}
    cache = _cache(tmp_path, {repo: _sha(repo) for repo in repos})

    pins = pin.pin_registry(registry, cache_dir=cache)

    assert len(pins) == 46 and all(p.commit == _sha(p.repo) for p in pins)
    data = yaml.safe_load(registry.read_text())
    for name, entry in data["models"].items():
        if entry.get("hf_id"):
            assert entry["revision"] == _sha(entry["hf_id"]), name
        for variant in entry["variants"].values():
            if "checkpoint" in variant:
                assert variant["revision"] == _sha(variant["checkpoint"]), name
    # Comments and layout stay: only revision lines changed.
    old, new = before.splitlines(), registry.read_text().splitlines()
    assert len(old) == len(new)
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    assert len(changed) == 46 and all("revision:" in a and "revision:" in b for a, b in changed)
    assert models.load_registry(registry)["gpt2"].revision == _sha("openai-community/gpt2")

    again = pin.pin_registry(registry, cache_dir=cache)  # already pinned: nothing to do
    assert {p.source for p in again} == {"already a commit"}


def test_local_copy_hub_lookup_and_what_is_left_alone(tmp_path, caplog):
    registry = tmp_path / "models.yaml"
    registry.write_text(
        "# my study\n"
        "models:\n"
        "  a:\n"
        "    hf_id: org/a\n"
        "    family: a\n"
        "    arch: decoder\n"
        "    context: 64\n"
        "    source: {kind: hub}\n"
        "    variants:\n"
        "      full: {kind: full}\n"
        "      gptq: {kind: gptq, checkpoint: org/a-gptq}   # no revision: default branch\n"
        "  b:\n"
        "    hf_id: org/b\n"
        "    revision: v1.0\n"
        "    family: b\n"
        "    arch: encoder\n"
        "    context: 64\n"
        "    source: {kind: hub}\n"
        "    variants:\n"
        "      full: {kind: full}\n"
        "  c:\n"
        "    hf_id: org/c\n"
        "    revision: main\n"
        "    family: c\n"
        "    arch: encoder\n"
        "    context: 64\n"
        "    source: {kind: hub}\n"
        "    variants:\n"
        "      full: {kind: full}\n"
    )
    model_root = tmp_path / "models"
    download = model_root / "a" / ".cache" / "huggingface" / "download"
    download.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (download / f"{name}.metadata").write_text(f"{_sha('a')}\netag\n1700000000.0\n")
    conflicted = model_root / "c" / ".cache" / "huggingface" / "download"
    conflicted.mkdir(parents=True)
    (conflicted / "config.json.metadata").write_text(f"{_sha('c1')}\ne\n0\n")
    (conflicted / "model.safetensors.metadata").write_text(f"{_sha('c2')}\ne\n0\n")
    cache = _cache(tmp_path, {"org/a-gptq": _sha("a-gptq")})
    asked = []

    def hub(repo, revision):
        asked.append((repo, revision))
        if repo == "org/c":
            raise OSError("gated repository")
        return _sha(f"{repo}@{revision}")

    before = registry.read_text()
    dry = pin.pin_registry(registry, cache_dir=cache, model_root=model_root, dry_run=True)
    assert registry.read_text() == before
    assert [p.commit for p in dry] == [_sha("a"), _sha("a-gptq"), None, None]

    with caplog.at_level(logging.WARNING):
        pins = pin.pin_registry(
            registry, cache_dir=cache, model_root=model_root, hub=True, hub_lookup=hub
        )
    assert asked == [("org/b", "v1.0"), ("org/c", "main")]  # only what was not found locally
    assert [(p.commit, p.source) for p in pins] == [
        (_sha("a"), f"{model_root}/a"),
        (_sha("a-gptq"), f"HF cache {cache}"),
        (_sha("org/b@v1.0"), "the hub"),
        (None, "not downloaded"),
    ]
    assert "downloaded from 2 different commits" in caplog.text
    assert "gated repository" in caplog.text
    data = yaml.safe_load(registry.read_text())["models"]
    assert data["a"]["revision"] == _sha("a")  # inserted after hf_id
    assert data["a"]["variants"]["gptq"]["revision"] == _sha("a-gptq")
    assert data["b"]["revision"] == _sha("org/b@v1.0")
    assert data["c"]["revision"] == "main"  # unresolved: left as it was
    text = registry.read_text()
    assert text.startswith("# my study\n") and "# no revision: default branch" in text
    assert "# v1.0, pinned" in text
    models.load_registry(registry)  # still a valid registry


def test_cli_reports_and_missing_registry_is_named(tmp_path, capsys):
    registry = tmp_path / "models.yaml"
    shutil.copy(ROOT / "config/models.demo.yaml", registry)
    assert cli.main(["pin-revisions", str(registry), "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("where\trepository\trevision\tcommit\tfrom\n")
    assert out.rstrip().endswith(f"pinned 0 revision(s) in {registry}")
    missing = tmp_path / "nope.yaml"
    assert cli.main(["pin-revisions", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        f"brainshape: registry {missing} does not exist; give the path of models.yaml"
    )


def test_registry_layout_it_cannot_edit_is_refused(tmp_path):
    registry = tmp_path / "models.yaml"
    registry.write_text(
        '{"models": {"a": {"hf_id": "org/a", "revision": "main", "family": "a", '
        '"arch": "decoder", "context": 64, "source": {"kind": "hub"}, '
        '"variants": {"full": {"kind": "full"}}}}}\n'
    )
    before = registry.read_text()
    with pytest.raises(Exception, match="could not find the revision line of models.a"):
        pin.pin_registry(registry, cache_dir=_cache(tmp_path, {"org/a": _sha("a")}))
    assert registry.read_text() == before
