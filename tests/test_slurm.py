"""The SLURM profile on a real one-node SLURM cluster (Debian's slurm-wlm) on localhost.

The test installs slurm-wlm and munge with apt-get (as CI does on a fresh Debian machine),
starts munged, slurmctld and slurmd, runs the small demo through profiles/slurm and checks the
results equal those of the local run. It stops the daemons it started, by PID, and removes the
packages it installed, even when it fails: with SLURM client tools installed and no controller
answering, every later snakemake start waits for the SLURM plugin's probe (~9 s). conftest.py
runs this module last for the same reason.
"""

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, snakemake, write_small_demo

PACKAGES = ["slurm-wlm", "munge"]
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def apt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["apt-get", "-q", "-y", *args], capture_output=True, text=True, env=APT_ENV
    )


def install() -> list[str]:
    """Install the packages; return those this test installed (to remove afterwards)."""
    missing = [
        p for p in PACKAGES if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode
    ]
    if not missing:
        return []
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"{', '.join(missing)} not installed and cannot be (needs root and apt-get)")
    proc = apt("install", "--no-install-recommends", *missing)
    if proc.returncode != 0:
        apt("update")
        proc = apt("install", "--no-install-recommends", *missing)
    if proc.returncode != 0:
        pytest.skip(f"apt-get could not install {', '.join(missing)}: {proc.stderr.strip()[-300:]}")
    return missing


def slurm_conf(root: Path, host: str) -> Path:
    mem_mb = int(open("/proc/meminfo").read().split()[1]) // 1024 // 2
    cpus = os.cpu_count() or 2
    for d in ("state", "spool", "log"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "gres.conf").write_text(f"AutoDetect=off\nNodeName={host} Name=gpu File=/dev/null\n")
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=brainshape",
                f"SlurmctldHost={host}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                f"StateSaveLocation={root / 'state'}",
                f"SlurmdSpoolDir={root / 'spool'}",
                f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'slurmd.pid'}",
                f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
                f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "AccountingStorageType=accounting_storage/none",
                "JobAcctGatherType=jobacct_gather/none",
                "JobCompType=jobcomp/none",
                "ReturnToService=2",
                "MpiDefault=none",
                "GresTypes=gpu",
                f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} "
                "Gres=gpu:1 State=UNKNOWN",
                f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    return conf


ETC = Path("/etc/slurm")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    installed = install()
    root = tmp_path_factory.mktemp("slurm")
    host = socket.gethostname().split(".")[0]
    conf = slurm_conf(root, host)
    # Job steps (srun inside each job) look for the config at its compiled-in path, not in
    # SLURM_CONF: put ours there, and put back whatever was there before.
    saved = {}
    env = {**os.environ, "SLURM_CONF": str(ETC / "slurm.conf")}
    daemons: list[subprocess.Popen] = []
    try:
        for name in ("slurm.conf", "gres.conf"):
            target = ETC / name
            if target.exists():
                saved[target] = root / f"{name}.saved"
                shutil.move(target, saved[target])
        ETC.mkdir(parents=True, exist_ok=True)
        shutil.copy(conf, ETC / "slurm.conf")
        shutil.copy(root / "gres.conf", ETC / "gres.conf")
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run(["mungekey", "--create", "--force"], check=True, capture_output=True)
            shutil.chown(key, "munge", "munge")
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        for cmd in (
            ["runuser", "-u", "munge", "--", "munged", "--foreground"],
            ["slurmctld", "-D"],
            ["slurmd", "-D"],
        ):
            log = open(root / "log" / f"{cmd[0]}.out", "w")
            daemons.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
            time.sleep(1)
        deadline = time.time() + 60
        state = ""
        while time.time() < deadline:
            state = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env
            ).stdout.strip()
            if state == "idle":
                break
            time.sleep(1)
        else:
            logs = "".join(p.read_text()[-1500:] for p in sorted((root / "log").iterdir()))
            raise AssertionError(f"the SLURM node did not come up (sinfo: {state!r}):\n{logs}")
        yield env
    finally:
        for proc in reversed(daemons):
            proc.terminate()
        for proc in reversed(daemons):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for name in ("slurm.conf", "gres.conf"):
            (ETC / name).unlink(missing_ok=True)
        for target, backup in saved.items():
            shutil.move(backup, target)
        if installed:
            apt("remove", *installed, "slurm-client", "slurmctld", "slurmd")


def test_profile_is_valid_for_snakemake_and_the_plugin(monkeypatch, tmp_path):
    from snakemake.cli import parse_args

    monkeypatch.chdir(tmp_path)
    _, args = parse_args(["--profile", str(REPO / "profiles" / "slurm"), "-n"])
    assert args.executor == "slurm"
    assert args.retries == 2
    assert args.slurm_array_jobs == "fmri,plot_brainscores"


def test_partition_example_is_read_by_the_plugin():
    from snakemake_executor_plugin_slurm.partitions import read_partition_file

    parts = {
        p.name: p for p in read_partition_file(REPO / "profiles/slurm/partitions.example.yaml")
    }
    assert parts["gpu"].limits.max_gpu == 8
    assert parts["cpu"].limits.max_gpu == 0


@pytest.mark.workflow
@pytest.mark.slurm
def test_small_demo_through_slurm_matches_local(slurm, small_run, tmp_path):
    # One model keeps the run short (each SLURM job starts Snakemake afresh); encoding is per
    # model, so its rows must equal the local run's rows of that model exactly.
    work = write_small_demo(tmp_path / "work")
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["models"] = ["tiny-gpt2"]
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(
        work,
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--jobs",
        "4",
        # The one-node cluster: its partition, no accounting, 2 cores, a stand-in GPU.
        "--default-resources",
        "slurm_partition=debug",
        "mem_mb=1000",
        "runtime=30",
        "--set-threads",
        "features=1",
        "encode=1",
        "--set-resources",
        "features:gpu=1",
        "--slurm-no-account",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
        env=slurm,
    )
    out = proc.stdout + proc.stderr
    local = pd.read_parquet(small_run / "results" / "demo" / "brainscores.parquet")
    local = local[local.model == "tiny-gpt2"].reset_index(drop=True)
    remote = pd.read_parquet(work / "results" / "demo" / "brainscores.parquet")
    pd.testing.assert_frame_equal(remote, local)
    # Every job went through sbatch; the per-subject jobs as one array.
    submitted = set(re.findall(r"submitted with SLURM jobid \d+ \(log: \S+/rule_(\w+)/", out))
    assert {"prepare_model", "demo_data", "words", "features", "encode", "brainscores"} <= submitted
    # One model family: the shape table is made, the family-grouped regressions are not planned.
    assert (work / "results" / "demo" / "topology.parquet").exists()
    assert "regressions" not in submitted
    assert "fmri" not in submitted  # two subjects: one array job, not two submissions
    assert re.search(r"Submitted array job with Snakemake IDs \d+,\d+ and SLURM job ID", out), out
