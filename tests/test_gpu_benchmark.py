"""benchmarks/gpu.sh end to end on the CPU (tiny shapes), and `brainshape plan --calibrate
--gpu-records` planning with the rates its records hold."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, write_small_demo

from brainshape import resources

BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_bench  # noqa: E402


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """The four records of one tiny run of benchmarks/gpu.sh (no GPU, no GPT-QModel here)."""
    out = tmp_path_factory.mktemp("gpu") / "records"
    env = {**os.environ, "PYTHON": sys.executable}
    for name in ("BRAINSHAPE_GPTQ_PYTHON", "BRAINSHAPE_SMOLLM2_DIR", "CUDA_VISIBLE_DEVICES"):
        env.pop(name, None)
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu.sh"), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def load(records: Path, part: str) -> dict:
    return json.loads((records / f"{part}.json").read_text())


def test_every_part_leaves_one_record_with_device_and_versions(records):
    assert sorted(p.name for p in records.iterdir()) == [
        "encode.json",
        "extract.json",
        "gpu.log",
        "quantized.json",
        "ridge.json",
    ]
    for part in gpu_bench.PARTS:
        data = load(records, part)
        assert data["part"] == part and data["tiny"] is True
        assert data["device"].startswith("cpu") and data["device_type"] is None
        assert data["versions"]["torch"] and data["versions"]["python"]
        # Every step is accounted for: measured, or skipped with its reason.
        for name, step in data["steps"].items():
            assert step["status"] in ("ok", "skipped"), (part, name, step)
            assert step["status"] == "ok" or step["reason"], (part, name)
    # Only GPT-QModel (not installed in this environment) may be missing.
    skipped = {
        (part, name)
        for part in gpu_bench.PARTS
        for name, step in load(records, part)["steps"].items()
        if step["status"] != "ok"
    }
    assert skipped == {("quantized", "gptq_trained")}
    quantized = load(records, "quantized")
    assert quantized["status"] == "partial"
    assert "GPT-QModel is not installed" in quantized["steps"]["gptq_trained"]["reason"]


def test_extraction_matches_the_naive_loop_and_reports_its_rates(records):
    res = load(records, "extract")["results"]
    assert res["max_relative_difference"] < 1e-4
    assert res["tokens_forwarded"] >= res["story_tokens"] > 0
    # The FLOP rate is the one the record's own figures give.
    flops = 2 * res["params_without_embeddings"] * res["tokens_forwarded"] / res["seconds"]
    assert res["achieved_tflops"] == pytest.approx(flops / 1e12)
    assert res["fraction_of_matmul"] == pytest.approx(res["achieved_tflops"] / res["matmul_tflops"])
    assert res["ratio_to_naive"] == pytest.approx(res["tokens_per_s"] / res["naive_tokens_per_s"])
    assert res["compiled"]["tokens_per_s"] > 0 and res["compiled"]["backend"] == "eager"


def test_quantised_kinds_are_timed_and_their_error_measured(records):
    res = load(records, "quantized")["results"]
    for where in ("shape", "trained"):
        variants = res[where]["variants"]
        assert set(variants) == {"full", "bnb8", "nf4"}
    trained = res["trained"]["variants"]
    # Layer 0 (the embeddings) is not quantised; the transformer layers are.
    for kind in ("bnb8", "nf4"):
        errors = trained[kind]["layer_relative_error"]
        assert errors[0] == 0 and min(errors[1:]) > 0
    assert trained["nf4"]["median_layer_error"] > trained["bnb8"]["median_layer_error"]
    shape = res["shape"]["variants"]
    assert res["slowdown"] == pytest.approx(
        {
            "bnb8": 1 / shape["bnb8"]["throughput_vs_full"],
            "bnb4": 1 / shape["nf4"]["throughput_vs_full"],
        }
    )


def test_the_ridge_engine_and_himalaya_agree_on_both_shapes(records):
    res = load(records, "ridge")["results"]
    assert [s["targets"] for s in res["shapes"]] == [s["targets"] for s in gpu_bench.TINY["ridge"]]
    for shape in res["shapes"]:
        assert shape["same_alpha"] == 1.0
        assert shape["max_score_difference"] < 1e-5
        assert shape["speedup"] == pytest.approx(shape["himalaya"] / shape["brainshape"])


def test_the_encode_job_is_set_against_the_plans_estimate(records):
    res = load(records, "encode")["results"]
    assert res["backend_device"] == "cpu" and res["backend"] == "numpy"
    shape = gpu_bench.TINY["encode"]
    assert res["rows"] == shape["layers"] * shape["subjects"] * shape["voxels"]
    assert res["gflops"] == pytest.approx(res["flops"] / res["wall_s"] / 1e9)
    assert res["estimate_compute_s"] == pytest.approx(res["flops"] / res["assumed_gflops"] / 1e9)
    assert res["estimate_runtime_min"] >= 10  # the floor of a job's runtime


def test_a_step_past_its_time_box_is_stopped_and_recorded(tmp_path):
    # The 7B shape cannot even be built on a CPU in 5 s.
    params = {"tmp": str(tmp_path), "tiny": False, "shape": gpu_bench.FULL["extract"]}
    outcome = gpu_bench.run_step("extract", params, 5.0)
    assert outcome["status"] == "timeout"
    assert outcome["reason"] == "did not finish within 5 s"
    # With no time left, a step does not start.
    assert gpu_bench.run_step("extract", params, 2.0)["reason"] == "no time left in the time box"
    # A part whose box is spent leaves a record that says so.
    out = tmp_path / "out"
    cmd = [sys.executable, str(BENCH / "gpu_bench.py"), "encode", "--out", str(out)]
    proc = subprocess.run([*cmd, "--tiny", "--limit-s", "1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "encode.json").read_text())
    assert (data["status"], data["reason"]) == (
        "skipped",
        "encode_job: no time left in the time box",
    )


def test_gpu_type_of_a_cuda_device():
    types = resources.GPU_TYPES
    assert gpu_bench.gpu_type_of("NVIDIA H200", 139.8, types) == "H200-141GB"
    assert gpu_bench.gpu_type_of("NVIDIA H100 80GB HBM3", 79.1, types) == "H100-80GB"
    assert gpu_bench.gpu_type_of("NVIDIA A100-SXM4-40GB", 39.4, types) == "A100-40GB"
    assert gpu_bench.gpu_type_of("NVIDIA A100-SXM4-80GB", 79.2, types) == "A100-80GB"
    assert gpu_bench.gpu_type_of("NVIDIA RTX 6000 Ada", 47.5, types) is None


# --- plan --calibrate with the records -----------------------------------------------------------


def _study(work: Path, overrides: dict):
    from snakemake.utils import update_config

    from brainshape.config import load_registry_dict, validate
    from brainshape.sizing import JobSizing
    from brainshape.study import Study

    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["registry"] = str(work / cfg["registry"])
    update_config(cfg, overrides)
    cfg = validate(cfg, REPO / "workflow" / "schemas" / "config.schema.yaml", "config.yaml")
    schema = REPO / "workflow" / "schemas" / "models.schema.yaml"
    return JobSizing(Study(cfg, load_registry_dict(cfg["registry"], schema), source="config.yaml"))


def test_calibrated_plan_uses_the_measured_rates(records, tmp_path):
    work = write_small_demo(tmp_path / "work")
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    # The study's 70B model in full precision and two quantised kinds, over stories long enough
    # that extraction runs far above the 10-minute floor of a job at any rate up to the matrix
    # product's, so the measured extraction rate and the kinds' slowdowns show in the plan.
    study = yaml.safe_load((REPO / "config" / "models.yaml").read_text())["models"]
    big = dict(study["llama-3.1-70b"])
    big["variants"] = {k: big["variants"][k] for k in ("bf16", "bnb8", "bnb4")}
    registry = yaml.safe_load((work / "models.yaml").read_text())
    registry["models"]["llama-3.1-70b"] = big
    (work / "models.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))
    cfg["models"] = ["tiny-gpt2", "llama-3.1-70b"]
    cfg["features"]["tokens_per_story"] = 300_000
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    extract = load(records, "extract")["results"]
    quantized = load(records, "quantized")["results"]
    encode = load(records, "encode")["results"]
    planned = resources.GPU_TYPES["H100-80GB"]  # the schema's default gpu.type
    tflops = extract["fraction_of_matmul"] * resources.MATMUL_PER_SUSTAINED * planned.tflops
    assert tflops != planned.tflops
    overrides = {
        "gpu": {"tflops": tflops, "slowdown": quantized["slowdown"]},
        "encoding": {"cpu_gflops": encode["gflops"] / encode["threads"]},
    }
    calibrated = _study(work, overrides)

    cmd = [sys.executable, "-m", "brainshape.cli", "plan", "--snakefile", str(REPO / "Snakefile")]
    cmd += ["--directory", str(work), "--configfile", str(work / "config.yaml"), "--tsv"]
    proc = subprocess.run(
        [*cmd, "--calibrate", "--gpu-records", str(records)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # columns after rule, model, variant: jobs, gpus_per_job, runtime_h_per_job, ...
    rows = {tuple(r.split("\t")[:3]): r.split("\t")[3:] for r in proc.stdout.splitlines()[1:]}
    for variant in ("bf16", "bnb8", "bnb4"):
        minutes = calibrated.features_runtime_min("demo", "llama-3.1-70b", variant)
        assert minutes > 10
        assert float(rows[("features", "llama-3.1-70b", variant)][2]) == pytest.approx(
            minutes / 60, abs=0.005
        )
    groups = list(calibrated.study.subject_groups("demo"))
    minutes = [calibrated.encode_runtime_min("demo", "llama-3.1-70b", g) for g in groups]
    assert float(rows[("encode", "llama-3.1-70b", "bf16")][2]) == pytest.approx(
        sum(minutes) / 60 / len(groups), abs=0.005
    )
    # What calibrated it is said beside the table, with the tiny records flagged.
    assert "gpu.tflops" in proc.stderr and "encoding.cpu_gflops" in proc.stderr
    assert "gpu.slowdown" in proc.stderr and "tiny shapes" in proc.stderr
