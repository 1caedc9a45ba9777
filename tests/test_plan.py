"""`brainshape plan`: GPU-hours, core-hours and tokens of the jobs a run would start."""

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
        ("total", "-", "-"),
    }
    dry = snakemake(work, "-n", "--cores", "2").stdout
    assert int(dry.split("Job stats:")[1].split("total")[1].split()[0]) == 5 + 1  # and `all`


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
    cfg["encoding"].update(gpus=1, gpu_tflops=0.002, threads=2)
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
