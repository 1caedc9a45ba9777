"""Wisteria/BDEC-01 profile: resource-group choice, and a run through stand-in PJM commands."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, snakemake, write_small_demo

PROFILE = REPO / "profiles" / "wisteria"
STANDIN = REPO / "tests" / "data" / "pjm"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, PROFILE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


submit = load("pjm_submit")
status = load("pjm_status")


@pytest.mark.parametrize(
    ("gpus", "runtime", "mem_mb", "expected"),
    [
        (1, 20, 0, ["rscgrp=share-debug", "gpu=1", "elapse=00:20:00"]),
        (0, 45, 4000, ["rscgrp=share-short", "gpu=1", "elapse=00:45:00"]),
        (2, 121, 0, ["rscgrp=share", "gpu=2", "elapse=02:01:00"]),
        (4, 30, 0, ["rscgrp=share-debug", "gpu=4", "elapse=00:30:00"]),
        (1, 10.2, 150_000, ["rscgrp=share-debug", "gpu=3", "elapse=00:11:00"]),
        (8, 100, 0, ["rscgrp=short-a", "node=1", "elapse=01:40:00"]),
        (12, 600, 0, ["rscgrp=regular-a", "node=2", "elapse=10:00:00"]),
        (1, 2000, 300_000, ["rscgrp=regular-a", "node=1", "elapse=33:20:00"]),
    ],
)
def test_resource_group_follows_gpus_runtime_and_memory(gpus, runtime, mem_mb, expected):
    options = submit.choose_resources(gpus, runtime, mem_mb)
    assert options[0::2] == ["-L"] * 3
    assert options[1::2] == expected


def test_runtime_beyond_every_group_is_refused():
    with pytest.raises(submit.SubmitError, match="exceeds the 2880 min limit of share"):
        submit.choose_resources(1, 3000)


def properties_script(tmp_path: Path, props: dict) -> Path:
    script = tmp_path / "snakejob.features.3.sh"
    script.write_text(f"#!/bin/sh\n# properties = {json.dumps(props)}\necho run\n")
    return script


def test_pjsub_command_from_jobscript_properties(tmp_path):
    props = {
        "rule": "features",
        "jobid": 3,
        "wildcards": {"dataset": "study", "model": "llama-70b", "variant": "nf4"},
        "resources": {"gpu": 2, "runtime": 95, "mem_mb": 64000, "pjm_group": "gz00"},
    }
    script = properties_script(tmp_path, props)
    cmd = submit.pjsub_command(submit.job_properties(script), str(script))
    assert cmd == [
        "pjsub",
        "-z",
        "jid",
        "-g",
        "gz00",
        "-L",
        "rscgrp=share-short",
        "-L",
        "gpu=2",
        "-L",
        "elapse=01:35:00",
        "-N",
        "smk-features",
        "-j",
        "-o",
        "logs/pjm/features/study_llama-70b_nf4.3.out",
        "-X",
        str(script),
    ]
    props["resources"]["pjm_rscgrp"] = "share-interactive"
    cmd = submit.pjsub_command(props, str(script))
    assert "rscgrp=share-interactive" in cmd


def test_missing_group_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.delenv("BRAINSHAPE_PJM_GROUP", raising=False)
    props = {"rule": "fmri", "resources": {"pjm_group": "CHANGE_ME", "runtime": 10}}
    script = properties_script(tmp_path, props)
    proc = subprocess.run(
        [sys.executable, str(PROFILE / "pjm_submit.py"), str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "pjm_submit: no PJM group: set default-resources: pjm_group: <your group> in "
        "profiles/wisteria/config.yaml (the -g of pjsub)"
    )


def test_status_reads_marker_then_pjstat(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PJM_STANDIN_DIR", str(tmp_path / "pjm"))
    monkeypatch.setenv("PATH", f"{STANDIN}{os.pathsep}{os.environ['PATH']}")
    long_job = tmp_path / "sleep.sh"
    long_job.write_text("sleep 30\n")
    jobid = subprocess.run(
        ["pjsub", "-z", "jid", "-g", "g", "-o", "out", str(long_job)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert status.status(jobid) == "running"
    subprocess.run([str(PROFILE / "pjm_cancel.py"), jobid], check=True, capture_output=True)
    assert status.status(jobid) == "failed"  # cancelled: pjstat -H shows CCL
    exit_dir = tmp_path / ".snakemake" / "pjm" / "exit"
    exit_dir.mkdir(parents=True)
    (exit_dir / "77").write_text("0\n")
    (exit_dir / "78").write_text("1\n")
    assert status.status("77") == "success"
    assert status.status("78") == "failed"


@pytest.mark.workflow
def test_run_through_standin_pjm_matches_local(small_run, tmp_path):
    work = write_small_demo(tmp_path / "work")
    profile = tmp_path / "wisteria"
    shutil.copytree(PROFILE, profile)
    cfg = yaml.safe_load((profile / "config.yaml").read_text())
    cfg["default-resources"]["pjm_group"] = "gtest"
    (profile / "config.yaml").write_text(yaml.safe_dump(cfg))
    path = [str(STANDIN), str(Path(sys.executable).parent), os.environ["PATH"]]
    env = {"PJM_STANDIN_DIR": str(tmp_path / "pjm"), "PATH": os.pathsep.join(path)}
    # One encode job per subject in the small demo: both, so that fmri runs for both subjects.
    targets = [f"results/demo/encoding/tiny-gpt2/fp32/g{i}.parquet" for i in (1, 2)]
    proc = snakemake(
        work,
        "--profile",
        str(profile),
        "--jobs",
        "3",
        "--set-resources",
        "features:gpu=2",
        "features:runtime=25",
        "--seconds-between-status-checks",
        "1",
        "--max-status-checks-per-second",
        "10",
        *targets,
        env=env,
    )
    assert "external jobid" in proc.stdout + proc.stderr
    for target in targets:
        pd.testing.assert_frame_equal(
            pd.read_parquet(work / target), pd.read_parquet(small_run / target)
        )
    subs = [json.loads(line) for line in (tmp_path / "pjm" / "submissions.jsonl").open()]
    by_rule = {}
    for s in subs:
        by_rule.setdefault(s["N"].removeprefix("smk-"), []).append(s)
    assert sorted(by_rule) == ["demo_data", "encode", "features", "fmri", "prepare_model", "words"]
    assert len(by_rule["fmri"]) == 2
    assert all(s["g"] == "gtest" and s["j"] and s["X"] for s in subs)
    (features,) = by_rule["features"]
    assert features["L"] == ["rscgrp=share-debug", "gpu=2", "elapse=00:25:00"]
    assert features["o"] == "logs/pjm/features/demo_tiny-gpt2_fp32.{}.out".format(
        features["o"].split(".")[-2]
    )
    log = (work / features["o"]).read_text()
    assert "features" in log
