"""The study's model registry (config/models.yaml) and the GPU resources planned from it."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from brainshape import features, models, resources
from brainshape.config import load_registry_dict, validate
from brainshape.errors import BrainshapeError
from brainshape.sizing import JobSizing
from brainshape.study import Study

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "config" / "models.yaml"
SCHEMAS = ROOT / "workflow" / "schemas"


@pytest.fixture(scope="module")
def registry():
    return load_registry_dict(REGISTRY, SCHEMAS / "models.schema.yaml")


def test_study_registry_spans_the_zoo(registry):
    specs = models.load_registry(REGISTRY)
    assert len(specs) == 39
    assert len({s.family for s in specs.values()}) >= 8
    assert {s.arch for s in specs.values()} == {"decoder", "encoder", "encoder-decoder"}
    params = [s.params for s in specs.values()]
    assert min(params) <= 20_000_000 and max(params) >= 60_000_000_000
    kinds = {v["kind"] for s in specs.values() for v in s.variants.values()}
    assert kinds == set(models.VARIANT_KINDS)
    for spec in specs.values():
        assert spec.hf_id and spec.revision and spec.source == {"kind": "hub"}, spec.name
        assert not spec.trust_remote_code, spec.name
        entry = registry["models"][spec.name]
        assert entry["layers"] >= 1 and entry["hidden"] >= 1
        kinds = [v["kind"] for v in spec.variants.values()]
        assert "untrained" in kinds and "full" in kinds and "bnb8" in kinds, spec.name
        for name, variant in spec.variants.items():
            if variant["kind"] == "gguf":
                assert variant["checkpoint"] and variant["file"].endswith(".gguf")
            if variant["kind"] == "gptq" and "checkpoint" not in variant:
                assert spec.arch == "decoder", f"{spec.name}/{name}: GPT-QModel quantises decoders"
    # Both kinds of GPTQ: pre-quantised hub checkpoints and quantised here.
    gptq = [v for s in specs.values() for v in s.variants.values() if v["kind"] == "gptq"]
    assert any("checkpoint" in v for v in gptq) and any("checkpoint" not in v for v in gptq)


def test_registry_rejects_an_unknown_variant_key(tmp_path, registry):
    data = copy.deepcopy(registry)
    data["models"]["gpt2"]["variants"]["bnb4"]["quant"] = "nf4"
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(BrainshapeError, match=r"unknown key 'models.gpt2.variants.bnb4.quant'"):
        load_registry_dict(path, SCHEMAS / "models.schema.yaml")


# --- resources -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "window", "stride"), [(10, 16, 8), (100, 16, 8), (101, 16, 5), (1000, 128, 96)]
)
def test_tokens_processed_counts_the_windows_extraction_runs(n, window, stride):
    # Reference: the windows features._plan builds when every token is a word's token.
    frame = features.Frame(prefix=(), suffix=(), width=window, stride=stride)
    ids, targets = np.arange(n), np.arange(n)
    windows, _ = features._plan(frame, ids, targets, "decoder")
    planned = resources.tokens_processed(n, window=window, stride=stride)
    assert planned == sum(len(w) for w in windows)
    windows, _ = features._plan(frame, ids, targets, "encoder")
    planned = resources.tokens_processed(n, window=window, stride=stride, arch="encoder")
    assert planned == sum(len(w) for w in windows)


def test_runtime_is_forward_flops_over_the_sustained_rate():
    h100 = resources.gpu_type("H100-80GB")
    # 2 x 7e9 parameters x 1e8 tokens = 1.4e18 FLOPs at 395 TFLOP/s = 3544 s = 59.07 min.
    assert resources.runtime_minutes(7e9, 10**8, h100, weights=0, safety=1, floor=0) == 60
    # Reading 14 GB at 0.5 GB/s adds 28 s; the safety factor doubles the sum.
    assert resources.runtime_minutes(7e9, 10**8, h100, weights=14e9, safety=2, floor=0) == 120
    assert resources.runtime_minutes(7e9, 10**8, h100, weights=0, slowdown=2, floor=0) == 237


@pytest.fixture(scope="module")
def study(registry):
    config = {"registry": str(REGISTRY), "datasets": _demo_datasets(), "demo": _planted()}
    validate(config, SCHEMAS / "config.schema.yaml", source="test")
    return JobSizing(Study(config, registry, source="test"))


def _demo_datasets():
    return {
        "demo": {
            "demo": True,
            "bids_root": "resources/demo/demo",
            "tr": 2.0,
            "subjects": ["01"],
            "stories": ["lighthouse", "orchard", "ferry", "glacier"],
            "words": {"format": "gentle", "path": "stimuli/{story}/align.json"},
        }
    }


def _planted():
    planted = {"roi": "STG", "hemisphere": "L", "model": "smollm2-135m", "layer": 12}
    return {"planted": [{**planted, "variant": "fp32"}]}


def test_gpus_follow_weight_bytes(study):
    # Llama-2-70B in bf16 is 128 GiB of weights: two 80 GB H100s, one once quantised to 4 bits.
    assert study.features_gpus("llama-2-70b", "bf16") == 2
    assert study.features_gpus("llama-2-70b", "bnb4") == 1
    assert study.features_gpus("llama-2-7b", "bf16") == 1
    assert study.features_gpus("pythia-14m", "fp32") == 1
    a100 = {**study.config, "gpu": {**study.config["gpu"], "type": "A100-40GB"}}
    small = JobSizing(Study(a100, {"models": study.study.registry}, "test"))
    assert small.features_gpus("llama-2-70b", "bf16") == 5  # 36 GiB usable, less headroom
    assert small.features_gpus("llama-2-13b", "bf16") == 1
    assert small.features_gpus("qwen2.5-32b", "bf16") == 2


def test_too_many_gpus_is_a_clear_error():
    with pytest.raises(BrainshapeError) as error:
        resources.gpus_needed(
            300 * 2**30, 2**30, resources.gpu_type("A100-40GB"), max_gpus=8, what="model 'x'"
        )
    assert str(error.value) == (
        "model 'x': 300 GiB of weights need 10 GPUs of 40 GiB, more than gpu.max_gpus (8); "
        "choose a quantised variant, a larger gpu.type, or raise gpu.max_gpus"
    )
    with pytest.raises(BrainshapeError, match=r"gpu.type 'B300' is not one of the known GPU"):
        resources.gpu_type("B300")
    assert resources.gpu_type("B300", 270, 900) == resources.GpuType(270, 900)


# --- the full registry, planned on the demo data ------------------------------------------------

_JOB = re.compile(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", re.M | re.S)


def _dry_run_jobs(tmp_path: Path) -> list[dict]:
    config = {"registry": str(REGISTRY), "datasets": _demo_datasets(), "demo": _planted()}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile")]
        + ["--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml")],
        capture_output=True,
        text=True,
        # No model is present: planning must not need one.
        env={
            "HF_HOME": str(tmp_path / "empty-hf-home"),
            "HOME": str(tmp_path),
            "PATH": "/usr/bin:/bin",
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = []
    for rule, body in _JOB.findall(proc.stdout):
        fields = dict(re.findall(r"^\s+(\w+): (.*)$", body, re.M))
        parse = lambda text: dict(kv.split("=", 1) for kv in text.split(", "))  # noqa: E731
        jobs.append(
            {
                "rule": rule,
                "wildcards": parse(fields.get("wildcards", "")) if "wildcards" in fields else {},
                "resources": parse(fields["resources"]) if "resources" in fields else {},
            }
        )
    return jobs


def test_dry_run_of_the_full_registry_plans_every_extraction(tmp_path, study, registry):
    jobs = _dry_run_jobs(tmp_path)
    extractions = [j for j in jobs if j["rule"] == "features"]
    planned = sorted(
        (j["wildcards"]["dataset"], j["wildcards"]["model"], j["wildcards"]["variant"])
        for j in extractions
    )
    expected = sorted(("demo", m, v) for m, e in registry["models"].items() for v in e["variants"])
    assert planned == expected and len(planned) == 214
    for job in extractions:
        model, variant = job["wildcards"]["model"], job["wildcards"]["variant"]
        res = job["resources"]
        assert int(res["gpu"]) == study.features_gpus(model, variant), (model, variant)
        assert int(res["runtime"]) == study.features_runtime_min("demo", model, variant)
        assert int(res["mem_mb"]) == study.features_mem_mb(model, variant)
        # The GPU model name is the site's (set in its profile), not the planning type's.
        assert "gpu_model" not in res
    gpus = {
        (j["wildcards"]["model"], j["wildcards"]["variant"]): int(j["resources"]["gpu"])
        for j in extractions
    }
    assert gpus[("llama-3.1-70b", "bf16")] == 2 and gpus[("llama-3.1-70b", "bnb4")] == 1
    # One quantisation job per GPTQ variant without a pre-quantised checkpoint.
    quantised = sorted(
        (j["wildcards"]["model"], j["wildcards"]["variant"])
        for j in jobs
        if j["rule"] == "quantize_model"
    )
    assert quantised == sorted(
        (m, v)
        for m, e in registry["models"].items()
        for v, s in e["variants"].items()
        if s["kind"] == "gptq" and "checkpoint" not in s
    )


def test_a_local_copy_of_a_hub_model_is_preferred(tmp_path):
    from conftest import dry_run, write_config

    root = tmp_path / "models"
    config = {
        "registry": str(REGISTRY),
        "models": ["gpt2"],
        "variants": ["fp32", "gptq"],
        "model_root": str(root),
        "datasets": _demo_datasets(),
        "demo": {"planted": []},
    }
    work = tmp_path / "work"
    write_config(work, config)

    def model_inputs(variant):
        (job,) = [
            j
            for j in dry_run(work)
            if j["rule"] == "features" and j["wildcards"]["variant"] == variant
        ]
        return [i for i in job["input"] if not i.endswith("words.parquet")]

    assert model_inputs("fp32") == []  # from the Hugging Face cache
    (root / "gpt2").mkdir(parents=True)
    (root / "gpt2" / "config.json").write_text("{}")
    assert model_inputs("fp32") == [str(root / "gpt2")]
    # GPTQ variants quantised here read their own folder.
    assert str(root / "gptq" / "gpt2" / "gptq") in model_inputs("gptq")
