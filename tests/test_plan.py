"""`brainshape plan`: GPU-hours, core-hours and tokens of the jobs a run would start."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, snakemake, write_small_demo

from brainshape.plan import JobRecord, read_benchmark_seconds, summarize


def job(rule, gpus, runtime, cores=1, model="", variant="", benchmark=None):
    wildcards = {"dataset": "d"}
    if model:
        wildcards["model"] = model
    if variant:
        wildcards["variant"] = variant
    return JobRecord(rule, wildcards, gpus, runtime, cores, benchmark=benchmark)


def test_summary_adds_gpu_and_core_hours_per_rule_and_variant():
    plan = summarize(
        [
            job("features", 2, 90, cores=8, model="m", variant="fp16"),
            job("features", 2, 30, cores=8, model="m", variant="fp16"),
            job("features", 4, 60, cores=16, model="m", variant="nf4"),
            job("fmri", 0, 20, cores=2),
            job("fmri", 0, 40, cores=2),
            job("brainscores", 0, None),
        ]
    )
    rows = {(r.rule, r.model, r.variant): r for r in plan.rows}
    fp16 = rows[("features", "m", "fp16")]
    assert (fp16.jobs, fp16.gpus_per_job, fp16.gpu_hours, fp16.core_hours) == (2, "2", 4.0, 16.0)
    assert fp16.runtime_h_per_job == 1.0
    assert rows[("features", "m", "nf4")].gpu_hours == 4.0
    assert (rows[("fmri", "", "")].gpu_hours, rows[("fmri", "", "")].core_hours) == (0.0, 2.0)
    assert rows[("brainscores", "", "")].source == "none"
    assert plan.jobs == 6
    assert (plan.gpu_hours, plan.core_hours, plan.tokens) == (8.0, 34.0, 24.0)
    text = plan.to_text()
    assert "24.0 tokens (3 per GPU-hour)" in text
    assert text.splitlines()[0].split() == list(plan.COLUMNS)


def test_calibrate_uses_benchmark_records_where_they_exist(tmp_path):
    bench = tmp_path / "features.tsv"
    bench.write_text("s\th:m:s\tmax_rss\n7000\t1:56:40\t1\n7400\t2:03:20\t1\n")
    jobs = [
        job("features", 1, 30, model="m", variant="a", benchmark=str(bench)),
        job("features", 1, 30, model="m", variant="b", benchmark=str(tmp_path / "none.tsv")),
    ]
    assert read_benchmark_seconds(bench) == 7200
    estimated = summarize(jobs)
    assert estimated.gpu_hours == 1.0
    calibrated = summarize(jobs, calibrate=True)
    rows = {r.variant: r for r in calibrated.rows}
    assert (rows["a"].gpu_hours, rows["a"].source) == (2.0, "measured")
    assert (rows["b"].gpu_hours, rows["b"].source) == (0.5, "estimate")


def plan_cli(work: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "brainshape.cli", "plan", "--snakefile", str(REPO / "Snakefile")]
    cmd += ["--directory", str(work), "--configfile", str(work / "config.yaml"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def tsv_rows(text: str) -> dict[tuple[str, str, str], list[str]]:
    lines = [ln.split("\t") for ln in text.strip().splitlines()]
    assert lines[0][:4] == ["rule", "model", "variant", "jobs"]
    return {tuple(r[:3]): r[3:] for r in lines[1:]}


def test_plan_reads_resources_from_the_dag_and_the_profile(tmp_path):
    work = write_small_demo(tmp_path / "work")
    proc = plan_cli(
        work,
        "--tsv",
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--set-resources",
        "features:gpu=2",
        "features:runtime=90",
        "encode:gpus=1",
        "encode:runtime=60",
    )
    rows = tsv_rows(proc.stdout)
    # jobs, gpus/job, runtime h/job, GPU-hours, core-hours, source
    assert rows[("features", "tiny-gpt2", "fp32")] == [
        "1",
        "2",
        "1.50",
        "3.00",
        "12.00",
        "estimate",
    ]
    # encode: one job per subject here (group_size 1), each with one GPU and 60 min from
    # set-resources (over the computed runtime), and encoding.threads (the profile leaves it)
    threads = yaml.safe_load((work / "config.yaml").read_text())["encoding"]["threads"]
    assert rows[("encode", "tiny-neox", "untrained")] == [
        "2",
        "1",
        "1.00",
        "2.00",
        f"{2 * threads:.2f}",
        "estimate",
    ]
    assert rows[("fmri", "-", "-")][:2] == ["2", "0"]
    # The QC job, one per dataset, with its runtime from the study's size (its 10-minute floor
    # here), counted like every other job.
    assert rows[("qc", "-", "-")] == ["1", "0", f"{10 / 60:.2f}", "0.00", f"{10 / 60:.2f}",
                                     "estimate"]  # fmt: skip
    assert rows["total", "-", "-"][3] == f"{4 * 3.0 + 8 * 1.0:.2f}"
    # The same jobs as the dry run, less the target-only rule `all`.
    dry = snakemake(work, "-n", "--cores", "2").stdout
    total = int(dry.split("Job stats:")[1].split("total")[1].split()[0])
    assert int(rows["total", "-", "-"][0]) == total - 1
    text = plan_cli(
        work,
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--set-resources",
        "features:gpu=2",
        "features:runtime=90",
    ).stdout
    assert "36.0 tokens (3 per GPU-hour)" in text


@pytest.mark.workflow
def test_plan_counts_only_jobs_that_would_run(small_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(small_run, work, symlinks=True)
    assert "Nothing to be done" in plan_cli(work).stdout
    (work / "results" / "demo" / "brainscores.parquet").unlink()
    rows = tsv_rows(plan_cli(work, "--tsv").stdout)
    assert set(rows) == {
        ("brainscores", "-", "-"),
        ("plot_brainscores", "tiny-gpt2", "-"),
        ("plot_brainscores", "tiny-neox", "-"),
        ("regressions", "-", "-"),
        ("plot_regressions", "-", "-"),
        ("summary", "-", "-"),
        ("total", "-", "-"),
    }
    dry = snakemake(work, "-n", "--cores", "2").stdout
    assert int(dry.split("Job stats:")[1].split("total")[1].split()[0]) == 6 + 1  # and `all`


@pytest.mark.workflow
def test_calibrate_reads_the_benchmarks_of_the_earlier_run(small_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(small_run, work, symlinks=True)
    bench = work / "results" / "demo" / "benchmarks" / "features" / "tiny-gpt2" / "fp32.tsv"
    seconds = read_benchmark_seconds(bench)
    assert seconds and seconds > 0
    bench.write_text("s\th:m:s\n5400\t1:30:00\n")
    # A job whose benchmark record is gone keeps its estimate.
    (work / "results" / "demo" / "benchmarks" / "words.tsv").unlink()
    # Two threads per features job: core-hours are twice the runtime.
    args = ["--tsv", "--forceall", "--set-resources", "features:gpu=1", "features:runtime=10"]
    estimated = tsv_rows(plan_cli(work, *args).stdout)
    calibrated = tsv_rows(plan_cli(work, *args, "--calibrate").stdout)
    assert estimated[("features", "tiny-gpt2", "fp32")][1:5] == ["1", "0.17", "0.17", "0.33"]
    assert calibrated[("features", "tiny-gpt2", "fp32")][1:5] == ["1", "1.50", "1.50", "3.00"]
    assert calibrated[("features", "tiny-gpt2", "fp32")][-1] == "measured"
    # Jobs without benchmark records keep their estimates.
    assert calibrated[("words", "-", "-")] == estimated[("words", "-", "-")]


def test_bad_config_is_one_clear_line(tmp_path):
    work = write_small_demo(tmp_path / "work")
    config = work / "config.yaml"
    config.write_text(config.read_text().replace("models:", "modelz:", 1))
    cmd = [sys.executable, "-m", "brainshape.cli", "plan", "--snakefile", str(REPO / "Snakefile")]
    cmd += ["--directory", str(work), "--configfile", str(config)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(f"brainshape: {config}: unknown key 'modelz' (did you mean 'models'?)")
    )


def _study_of(work: Path):
    import yaml

    from brainshape.config import load_registry_dict, validate
    from brainshape.sizing import JobSizing
    from brainshape.study import Study

    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["registry"] = str(work / cfg["registry"])
    cfg = validate(cfg, REPO / "workflow" / "schemas" / "config.schema.yaml", "config.yaml")
    registry = load_registry_dict(
        cfg["registry"], REPO / "workflow" / "schemas" / "models.schema.yaml"
    )
    return JobSizing(Study(cfg, registry, source="config.yaml"))


@pytest.mark.parametrize("shape", ["demo", "between"])
def test_plan_shows_the_computed_encode_runtime_and_gpu_hours(tmp_path, shape):
    import yaml

    work = write_small_demo(tmp_path / "work")
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["encoding"].update(gpus=1, gpu_tflops=0.0005, threads=2)
    if shape == "between":
        # Between the demo and the study: voxel targets, more delays, a trained 30-layer model,
        # subjects stacked in one group.
        cfg["models"] = ["tiny-gpt2", "smollm2-135m"]
        cfg["fmri"]["targets"] = "voxels"
        cfg["encoding"].update(delays=[1, 2, 3, 4, 5, 6], group_size=2, n_permutations=20)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    study = _study_of(work)
    model = "tiny-gpt2" if shape == "demo" else "smollm2-135m"
    groups = list(study.study.subject_groups("demo"))
    minutes = [study.encode_runtime_min("demo", model, g) for g in groups]
    rows = tsv_rows(plan_cli(work, "--tsv").stdout)
    jobs, gpus, hours, gpu_hours, core_hours, _ = rows[("encode", model, "fp32")]
    assert (int(jobs), gpus) == (len(groups), "1")
    assert float(hours) == pytest.approx(sum(minutes) / 60 / len(groups), abs=0.005)
    assert float(gpu_hours) == pytest.approx(sum(minutes) / 60, abs=0.005)
    assert float(core_hours) == pytest.approx(2 * sum(minutes) / 60, abs=0.005)
    # At this (deliberately slow) rate the bigger shape is above the 10-minute floor: the
    # figure is computed, not the floor.
    if shape == "between":
        assert min(minutes) > 10
    # Memory, per job, straight from the DAG.
    from brainshape.plan import dry_run_jobs

    args = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(work)]
    jobs = dry_run_jobs([*args, "--configfile", str(work / "config.yaml")])
    for job in jobs:
        if job.rule == "encode":
            w = job.wildcards
            assert job.mem_mb == study.encode_mem_mb(w["dataset"], w["model"], w["group"])


# --- limits, budget, Aquarius charges ---------------------------------------------------------

PARTITIONS = REPO / "profiles" / "slurm" / "partitions.example.yaml"
PJM_SUBMIT = REPO / "profiles" / "wisteria" / "pjm_submit.py"


def big(rule, gpus, runtime, mem_mb, cores=1, model="m", variant="v"):
    return JobRecord(rule, {"model": model, "variant": variant}, gpus, runtime, cores, mem_mb)


def test_slurm_partitions_name_the_limit_a_job_exceeds():
    from brainshape.plan import SlurmPartitions

    limits = SlurmPartitions.read(PARTITIONS)
    assert limits.problems(big("encode", 1, 600, 400_000, cores=8)) == []
    assert limits.problems(big("encode", 0, 2880, 250_000, cores=64)) == []
    assert limits.problems(big("encode", 0, 3000, 1000)) == [
        "runtime 3,000 min > 2,880 (largest, partition cpu)"
    ]
    assert limits.problems(big("encode", 1, 60, 600_000)) == [
        "mem_mb 600,000 MB > 500,000 (largest, partition gpu)"
    ]
    assert limits.problems(big("features", 9, 60, 1000)) == ["gpus 9 > 8 (most in any partition)"]
    # A CPU job may use the GPU partition's memory; each limit alone is met, not together.
    assert limits.problems(big("encode", 0, 60, 400_000, cores=48)) == [
        "no single partition allows its runtime, memory, cores and GPUs together"
    ]


def test_slurm_partition_file_errors_are_one_line(tmp_path):
    from brainshape.errors import BrainshapeError
    from brainshape.plan import SlurmPartitions

    with pytest.raises(BrainshapeError, match=r"partition file .*nope.yaml does not exist"):
        SlurmPartitions.read(tmp_path / "nope.yaml")
    (tmp_path / "p.yaml").write_text("cpu: {max_runtime: 10}\n")
    with pytest.raises(BrainshapeError, match=r"p.yaml: no 'partitions' mapping"):
        SlurmPartitions.read(tmp_path / "p.yaml")


def test_aquarius_groups_charge_what_pjm_submit_asks_for():
    from brainshape.plan import AquariusGroups

    groups = AquariusGroups.load(PJM_SUBMIT)
    # No GPU: one shared GPU all the same; memory beyond 60 GiB a GPU: more GPUs.
    assert groups.charged(big("fmri", 0, 30, 4000)) == 1
    assert groups.charged(big("features", 2, 30, 4000)) == 2
    assert groups.charged(big("encode", 1, 30, 130 * 1024)) == 3
    # More than 4 GPUs: a whole node of 8.
    assert groups.charged(big("features", 6, 30, 4000)) == 8
    assert groups.problems(big("encode", 1, 47 * 60, 4000)) == []
    assert groups.problems(big("encode", 1, 3000, 4000)) == [
        "runtime 3000 min exceeds the 2880 min limit of share"
    ]
    assert groups.problems(big("baseline", 0, 60, 600_000)) == [
        "mem_mb 600,000 > 491,520 (one Aquarius node)"
    ]
    plan = summarize(
        [big("fmri", 0, 60, 4000), big("encode", 1, 120, 130 * 1024)], charge=groups.charged
    )
    assert (plan.gpu_hours, plan.charged_gpu_hours, plan.tokens) == (2.0, 7.0, 21.0)


def test_limit_warnings_say_how_many_jobs_of_a_variant_exceed():
    from brainshape.plan import SlurmPartitions, limit_warnings

    limits = SlurmPartitions.read(PARTITIONS)
    jobs = [
        big("encode", 0, 3000, 1000),
        big("encode", 0, 3500, 1000),
        big("encode", 0, 60, 1000),
        big("fmri", 0, 60, 1000, model="", variant=""),
    ]
    assert limit_warnings(jobs, limits) == [
        f"encode model=m variant=v: 2 of 3 job(s) exceed the SLURM limits of {PARTITIONS}: "
        "runtime 3,500 min > 2,880 (largest, partition cpu)"
    ]


def test_budget_warns_only_above_it():
    from brainshape.plan import budget_warning

    plan = summarize([job("features", 2, 90), job("encode", 1, 60)])
    assert plan.gpu_hours == 4.0
    assert budget_warning(plan, None) is None
    assert budget_warning(plan, 4.0) is None
    assert budget_warning(plan, 2.0) == (
        "the plan needs 4.0 GPU-hours, 2.00 times the budget of 2.0 (--budget); "
        "config/README.md ('What the study costs') lists what lowers it"
    )


def test_plan_warns_about_limits_and_budget_from_the_command_line(tmp_path):
    work = write_small_demo(tmp_path / "work")
    args = ["--profile", str(REPO / "profiles" / "slurm"), "--set-resources"]
    args += ["features:gpu=1", "features:runtime=3000", "encode:mem_mb=600000"]
    text = plan_cli(work, *args, "--partitions", str(PARTITIONS), "--budget", "1").stdout
    warnings = [ln for ln in text.splitlines() if ln.startswith("warning: ")]
    # Four features jobs (two models x two variants) over the runtime limit, every encode job
    # over the memory limit, and the total over the budget: one line per variant and the total.
    assert len([w for w in warnings if w.startswith("warning: features ")]) == 4
    assert len([w for w in warnings if w.startswith("warning: encode ")]) == 4
    assert "runtime 3,000 min > 2,880 (largest, partition gpu)" in text
    assert "mem_mb 600,000 MB > 500,000 (largest, partition gpu)" in text
    assert "warning: the plan needs 200.0 GPU-hours, 200.00 times the budget of 1.0" in text
    # Wisteria: the Aquarius groups of the profile, and the GPUs PJM charges.
    text = plan_cli(work, "--profile", str(REPO / "profiles" / "wisteria")).stdout
    assert "as Aquarius charges them (every job holds at least one GPU there)" in text
    assert "warning" not in text


# --- calibration from benchmarks/gpu.sh records ------------------------------------------------


def write_records(folder: Path, device: str, device_type: str | None, **parts) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for part, results in parts.items():
        record = {
            "part": part,
            "status": results.pop("_status", "ok"),
            "reason": results.pop("_reason", None),
            "device": device,
            "device_type": device_type,
            "tiny": False,
            "results": results,
        }
        (folder / f"{part}.json").write_text(json.dumps(record))
    return folder


def test_rates_measured_on_the_planned_gpu_are_used_as_measured(tmp_path):
    from brainshape.plan import rate_overrides, read_gpu_records

    folder = write_records(
        tmp_path / "h100",
        "NVIDIA H100 80GB HBM3",
        "H100-80GB",
        extract={"fraction_of_matmul": 0.5, "matmul_tflops": 780.0},
        quantized={"slowdown": {"bnb8": 1.9, "bnb4": 1.05}, "slowdown_from": "the 7B shape"},
        encode={"gflops": 40000.0, "backend_device": "cuda", "matmul_tflops": 800.0},
    )
    overrides, notes = rate_overrides(read_gpu_records(folder), "H100-80GB", 395.0, 80.0)
    assert overrides["gpu"]["tflops"] == pytest.approx(390.0)  # 0.5 x the measured 780
    assert overrides["gpu"]["slowdown"] == {"bnb8": 1.9, "bnb4": 1.05}
    assert overrides["encoding"] == {"gpu_tflops": pytest.approx(40.0)}
    assert notes[0].startswith(f"calibrated with the rates benchmarks/gpu.sh measured in {folder}")
    # Planned on another type: the measured shares of its matrix-product rate carry over.
    overrides, notes = rate_overrides(read_gpu_records(folder), "A100-40GB", 125.0, 40.0)
    assert overrides["gpu"]["tflops"] == pytest.approx(0.5 * 2 * 125)
    assert overrides["encoding"]["gpu_tflops"] == pytest.approx(40.0 / 800 * 2 * 125)
    assert "(measured on H100-80GB, not A100-40GB)" in notes[1]


def test_records_without_a_rate_leave_the_plan_alone(tmp_path):
    from brainshape.plan import rate_overrides, read_gpu_records

    folder = write_records(
        tmp_path / "none",
        "NVIDIA H200",
        "H200-141GB",
        extract={"_status": "error", "_reason": "CUDA out of memory"},
        quantized={"_status": "skipped", "_reason": "bitsandbytes is not installed"},
    )
    overrides, notes = rate_overrides(read_gpu_records(folder), "H100-80GB", 395.0)
    assert overrides == {}
    assert notes[1:] == [
        "  not used: extract.json: error (CUDA out of memory)",
        "  not used: quantized.json: skipped (bitsandbytes is not installed)",
        "  no rate in these records: the plan keeps its assumed rates",
    ]


def test_missing_records_are_one_clear_error(tmp_path):
    from brainshape.errors import BrainshapeError
    from brainshape.plan import read_gpu_records

    with pytest.raises(BrainshapeError) as missing:
        read_gpu_records(tmp_path / "nope")
    assert str(missing.value) == (
        f"--gpu-records {tmp_path / 'nope'}: no such folder; run benchmarks/gpu.sh --out "
        f"{tmp_path / 'nope'} on a GPU machine first (docs/benchmarks.md)"
    )
    with pytest.raises(BrainshapeError, match="none of extract.json, quantized.json"):
        read_gpu_records(tmp_path)
    (tmp_path / "extract.json").write_text("{not json")
    with pytest.raises(BrainshapeError, match="extract.json: not a JSON record"):
        read_gpu_records(tmp_path)


# --- Snakemake's private API, in one place ------------------------------------------------------


def test_the_snakemake_internals_plan_uses_are_there():
    from brainshape.plan import SNAKEMAKE_INTERNALS, check_snakemake_internals

    missing = check_snakemake_internals()
    assert missing == [], (
        f"this Snakemake changed the private calls brainshape.plan._built_dag makes: {missing}; "
        "adapt _built_dag (and SNAKEMAKE_INTERNALS) to it"
    )
    assert len(SNAKEMAKE_INTERNALS) == 5


def test_a_changed_snakemake_internal_is_one_clear_error(monkeypatch):
    from types import SimpleNamespace

    from snakemake.workflow import Workflow

    from brainshape.errors import BrainshapeError
    from brainshape.plan import _built_dag, check_snakemake_internals

    monkeypatch.delattr(Workflow, "_build_dag")
    assert check_snakemake_internals() == ["snakemake.workflow.Workflow._build_dag"]
    workflow = SimpleNamespace(_prepare_dag=lambda **kwargs: None)
    dag_api = SimpleNamespace(workflow_api=SimpleNamespace(_workflow=workflow))
    with pytest.raises(BrainshapeError, match=r"Snakemake internals that Snakemake \S+ no longer"):
        _built_dag(dag_api, SimpleNamespace(forceall=False))


# --- the full study with the shipped settings ----------------------------------------------------


@pytest.mark.workflow
def test_the_shipped_config_plans_the_full_study_within_a_lab_budget(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_study

    from brainshape.plan import plan

    config = gpu_study.write(tmp_path / "study")
    args = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path / "study")]
    args += ["--configfile", str(config), "--profile", str(REPO / "profiles" / "slurm")]
    result = plan(args, partitions=PARTITIONS, budget=1_100)
    rules = gpu_study.by_rule(result)
    assert rules["features"][0] == 214 and rules["encode"][0] == 214 * 3  # 190 subjects / 64
    # Cross-fitting: per variant one job per half, every subject on a sample of the voxels.
    assert rules["encode_half"][0] == 214 * 2
    # Encode jobs solve on GPUs: the study costs under a thousand GPU-hours before the
    # cross-fitted halves, which add under a tenth (the budget warns otherwise), not millions of
    # core-hours, 2% of the reference allocation's 55,680.
    halves = rules["encode_half"][1]
    assert rules["encode"][1] > 0 and result.gpu_hours - halves <= 1_000
    assert 0 < halves <= 0.1 * (result.gpu_hours - halves)
    assert result.core_hours < 50_000
    assert not [w for w in result.warnings if w.startswith(("encode", "features", "the plan"))]


def test_gpu_records_need_calibrate():
    from brainshape.errors import BrainshapeError
    from brainshape.plan import plan

    with pytest.raises(BrainshapeError) as error:
        plan([], gpu_records="benchmarks/out/gpu")
    assert str(error.value) == "--gpu-records calibrates the plan: use it with --calibrate"
