"""The SLURM profile on a real one-node SLURM cluster (Debian's slurm-wlm) on localhost.

The test installs slurm-wlm and munge with apt-get (as CI does on a fresh Debian machine),
starts munged, slurmctld and slurmd, runs the small demo through profiles/slurm and checks the
results equal those of the local run. It stops the daemons it started, by PID, and removes the
packages it installed, even when it fails: with SLURM client tools installed and no controller
answering, every later snakemake start waits for the SLURM plugin's probe (~9 s). conftest.py
runs this module last for the same reason.
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ONE_THREAD, REPO, write_small_demo

from brainshape.io import ENGINE_FILES, MANIFEST

PACKAGES = ["slurm-wlm", "munge"]
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def apt(*args: str) -> subprocess.CompletedProcess:
    """apt-get, waiting up to 10 minutes for dpkg's lock (another test may be installing)."""
    cmd = ["apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout=600", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=APT_ENV)


def is_installed(package: str) -> bool:
    """Whether dpkg has ``package`` installed (a package removed with its configuration left
    behind is known to ``dpkg -s`` but not installed)."""
    query = ["dpkg-query", "-W", "-f=${Status}", package]
    status = subprocess.run(query, capture_output=True, text=True).stdout
    return status.strip() == "install ok installed"


def install() -> list[str]:
    """Install the packages; return those this test installed (to remove afterwards)."""
    missing = [p for p in PACKAGES if not is_installed(p)]
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


@dataclass
class Cluster:
    """The one-node cluster: the environment its clients need, and its daemons (started and
    stopped by PID), which the chaos test restarts and drains."""

    root: Path
    host: str
    env: dict
    daemons: dict = field(default_factory=dict)

    def start(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "a")
        self.daemons[name] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env
        )

    def stop(self, name: str) -> None:
        proc = self.daemons.pop(name)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env)

    def wait_until_idle(self, timeout: float = 60) -> None:
        deadline, state = time.time() + timeout, ""
        while time.time() < deadline:
            state = self.run("sinfo", "-h", "-o", "%T").stdout.strip()
            if state in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.5)
        logs = "".join(p.read_text()[-1500:] for p in sorted((self.root / "log").iterdir()))
        raise AssertionError(f"the SLURM node did not come up (sinfo: {state!r}):\n{logs}")

    def restart_controller(self) -> float:
        """Stop slurmctld (it saves its state) and start it again on the same state; return
        the seconds it was away. SLURM's clients retry a controller for about 9 s before they
        fail, so a restart shorter than that delays Snakemake's queries without failing them
        (a longer outage: docs/troubleshooting.md, controller-restarted)."""
        start = time.time()
        self.stop("slurmctld")
        self.start("slurmctld", ["slurmctld", "-D"])
        self.wait_until_idle()
        return time.time() - start


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    installed = install()
    root = tmp_path_factory.mktemp("slurm")
    host = socket.gethostname().split(".")[0]
    conf = slurm_conf(root, host)
    # Job steps (srun inside each job) look for the config at its compiled-in path, not in
    # SLURM_CONF: put ours there, and put back whatever was there before.
    saved = {}
    cluster = Cluster(root, host, {**os.environ, "SLURM_CONF": str(ETC / "slurm.conf")})
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
        cluster.start("munged", ["runuser", "-u", "munge", "--", "munged", "--foreground"])
        for name in ("slurmctld", "slurmd"):
            time.sleep(1)
            cluster.start(name, [name, "-D"])
        cluster.wait_until_idle()
        yield cluster
    finally:
        for name in reversed(list(cluster.daemons)):
            cluster.stop(name)
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
    # A restarted controller: status queries retried for 2.5 minutes; preempted jobs requeued.
    assert args.slurm_status_attempts / args.max_status_checks_per_second == 150
    assert args.slurm_requeue


def test_partition_example_is_read_by_the_plugin():
    from snakemake_executor_plugin_slurm.partitions import read_partition_file

    parts = {
        p.name: p for p in read_partition_file(REPO / "profiles/slurm/partitions.example.yaml")
    }
    assert parts["gpu"].limits.max_gpu == 8
    assert parts["cpu"].limits.max_gpu == 0


# --- a chaos run: killed jobs, a restarted controller, a drained node -----------------------------

#: The study of the chaos run: the small demo (conftest's small_run, whose undisturbed local
#: run it is compared with), up to one model's encoding (tiny-gpt2, trained and untrained, two
#: subject groups), the baselines, the noise ceiling and the quality control: 17 jobs of every
#: kind up to there (the other model's jobs and the aggregates would only add more of the same).
CHAOS_TARGETS = (
    *[f"results/demo/encoding/tiny-gpt2/{v}/g{g}.parquet" for v in ("fp32", "untrained")
      for g in (1, 2)],
    *[f"results/demo/baselines/{b}/g{g}.parquet" for b in ("word_rate", "word_length_position")
      for g in (1, 2)],
    "results/demo/ceiling.parquet",
    "results/demo/qc.parquet",
)  # fmt: skip
CHAOS_SEED = 22
#: What the run makes after the chaos, undisturbed: the study's tables (the plots, maps and
#: summary that follow them are jobs of the same kind through the same profile).
TABLES = ("results/demo/brainscores.parquet", "results/demo/topology.parquet")
#: Files that legitimately differ from run to run: benchmark records (wall times), and the
#: modification times that folder manifests record (brainshape.io), which are compared without.
UNCOMPARED = ("results/demo/benchmarks/", "results/benchmarks/")
#: The rule of each job submitted on its own (the SLURM plugin's log line).
SUBMITTED = re.compile(r"submitted with SLURM jobid \d+ \(log: \S+/rule_(\w+)/")


def chaos_plan(seed: int, n_jobs: int = 17) -> tuple[dict[int, str], dict[str, int]]:
    """What happens at the n-th job start the chaos run sees (retries count): three of the 17
    jobs, drawn with ``seed``, cancelled (scancel), killed (SIGKILL of the job's process) or
    requeued as a preemption with requeue does it (scontrol requeue); the controller restarted
    once and the node drained (then resumed) once, mid-run."""
    rng = random.Random(seed)
    starts = sorted(rng.sample(range(3, n_jobs - 1), 3))
    kinds = ["scancel", "kill", "requeue"]
    rng.shuffle(kinds)
    return dict(zip(starts, kinds, strict=True)), {
        "restart": rng.randint(5, 8),
        "drain": rng.randint(9, 12),
    }


class Chaos(threading.Thread):
    """Watches the running jobs and disturbs them as ``plan`` and ``events`` say; ``done``
    records what it did, in order: (n-th job start, SLURM job id, what)."""

    def __init__(self, cluster: Cluster, plan: dict[int, str], events: dict[str, int]):
        super().__init__(daemon=True)
        self.cluster, self.plan, self.events = cluster, plan, events
        self.stop = threading.Event()
        self.done: list[tuple[int, str, str]] = []
        self.seen: list[str] = []

    def running(self) -> list[tuple[str, str]]:
        """(job id, own id) of the running jobs: ``12_1`` and the id its environment holds
        (an array task's own), so that scancel hits the task and not its whole array."""
        proc = self.cluster.run("squeue", "-h", "-t", "RUNNING", "-o", "%i %A")
        lines = proc.stdout.splitlines() if proc.returncode == 0 else []
        return [tuple(line.split()) for line in lines if line.strip()]

    def kill(self, own: str) -> str:
        """SIGKILL the newest Python process of a job (the rule's script once it runs)."""
        deadline = time.time() + 10
        while time.time() < deadline:
            pids = [p for p in job_processes(own) if b"python" in p[1]]
            if pids:
                os.kill(max(pids)[0], signal.SIGKILL)
                return "kill"
            time.sleep(0.2)
        return "kill (no process found)"

    def run(self) -> None:
        while not self.stop.is_set():
            for job, own in self.running():
                if job in self.seen:
                    continue
                self.seen.append(job)
                n = len(self.seen)
                what = self.plan.get(n)
                if what in ("scancel", "requeue"):
                    cmd = ["scancel", job] if what == "scancel" else ["scontrol", "requeue", job]
                    proc = self.cluster.run(*cmd)
                    what += f" ({proc.stderr.strip()})" if proc.returncode else ""
                elif what == "kill":
                    what = self.kill(own)
                if what:
                    self.done.append((n, job, what))
                self.disturb_cluster(n, job)
            time.sleep(0.3)

    def disturb_cluster(self, n: int, job: str) -> None:
        if n >= self.events["restart"] and not any(w.startswith("restart") for *_, w in self.done):
            away = self.cluster.restart_controller()
            self.done.append((n, job, "restart" if away < 8 else f"restart (away {away:.0f} s)"))
        if n >= self.events["drain"] and not any(w == "drain" for *_, w in self.done):
            host = self.cluster.host
            self.cluster.run("scontrol", "update", f"nodename={host}", "state=drain",
                             "reason=chaos")  # fmt: skip
            time.sleep(8)
            self.cluster.run("scontrol", "update", f"nodename={host}", "state=resume")
            self.done.append((n, job, "drain"))


def job_processes(job: str) -> list[tuple[int, bytes]]:
    """(pid, command line) of the processes of a SLURM job (its SLURM_JOB_ID)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            if f"SLURM_JOB_ID={job}".encode() in environ:
                found.append((int(proc.name), (proc / "cmdline").read_bytes()))
        except OSError:
            continue
    return found


def compared_files(work: Path) -> list[str]:
    """Every file the run wrote under results/ and resources/, relative to ``work``."""
    files = []
    for top in ("results", "resources"):
        for path in sorted((work / top).rglob("*")):
            rel = str(path.relative_to(work))
            if path.is_file() and path.name not in ENGINE_FILES and not rel.startswith(UNCOMPARED):
                files.append(rel)
    return files


def content(path: Path) -> bytes | dict:
    """A file's bytes; a folder manifest without the modification times it records."""
    if path.name != MANIFEST:
        return path.read_bytes()
    manifest = json.loads(path.read_text())
    for entry in manifest["files"].values():
        entry.pop("mtime_ns")
    return manifest


def snakemake_slurm(work: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    cmd += ["--directory", str(work), "--configfile", str(work / "config.yaml")]
    cmd += ["--profile", str(REPO / "profiles" / "slurm"), "--jobs", "4"]
    # The one-node cluster: its partition, no accounting (status from squeue), a stand-in GPU.
    cmd += ["--default-resources", "slurm_partition=debug", "mem_mb=1000", "runtime=30"]
    cmd += ["--set-resources", "features:gpu=1", "--slurm-no-account"]
    # The threads of the local run (one per job, conftest.ONE_THREAD; the profile asks 8 for
    # extraction on a real GPU node), so that BLAS and torch sum in the same order and the
    # bytes can match.
    cmd += ["--set-threads", *ONE_THREAD]
    cmd += ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1"]
    cmd += ["--max-status-checks-per-second", "1", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    except subprocess.TimeoutExpired as error:
        out = (error.stdout or b"").decode()[-4000:] + (error.stderr or b"").decode()[-8000:]
        raise AssertionError(f"the chaos run hung (15 minutes):\n{out}") from None


@pytest.mark.workflow
@pytest.mark.slurm
def test_chaos_run_finishes_and_matches_an_undisturbed_local_run(slurm, small_run, tmp_path):
    """Jobs cancelled and killed, the controller restarted, the node drained: with the
    profile's retries and at most one restart of Snakemake with --rerun-incomplete (what a lab
    does after its login session dies), the study finishes with the bytes of a local run. Then
    the study's tables for one model, undisturbed: the aggregates and the shape stage go
    through sbatch too, the per-subject jobs as arrays, and the brainscores equal the local
    run's rows of that model."""
    work = write_small_demo(tmp_path / "work")
    env = slurm.env
    plan, events = chaos_plan(CHAOS_SEED)
    chaos = Chaos(slurm, plan, events)
    start = time.time()
    chaos.start()
    runs = [snakemake_slurm(work, env, "--", *CHAOS_TARGETS)]
    if runs[0].returncode != 0:
        runs.append(snakemake_slurm(work, env, "--rerun-incomplete", "--", *CHAOS_TARGETS))
    chaos.stop.set()
    chaos.join()
    wall = time.time() - start
    out = "\n".join(r.stdout + r.stderr for r in runs)
    assert runs[-1].returncode == 0, out[-6000:]
    kinds = {what.split()[0] for *_, what in chaos.done}
    assert kinds == {"scancel", "kill", "requeue", "restart", "drain"}, (chaos.done, out[-3000:])
    assert not [w for *_, w in chaos.done if "(" in w], chaos.done  # each one took effect
    assert "CANCELLED" in out and "Trying to restart job" in out
    # Every output equals the undisturbed local run's, byte for byte.
    files = compared_files(work)
    assert set(CHAOS_TARGETS) <= set(files)
    differ = [f for f in files if content(work / f) != content(small_run / f)]
    assert differ == [], differ
    print(f"chaos run: {wall:.0f} s, {len(runs)} snakemake start(s), {chaos.done}")

    # The study's tables with one model (encoding is per model: its rows must equal the local
    # run's rows of that model exactly); what the chaos run made is not made again.
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["models"] = ["tiny-gpt2"]
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rest = snakemake_slurm(work, env, "--", *TABLES)
    assert rest.returncode == 0, (rest.stdout + rest.stderr)[-6000:]
    local = pd.read_parquet(small_run / "results" / "demo" / "brainscores.parquet")
    local = local[local.model == "tiny-gpt2"].reset_index(drop=True)
    remote = pd.read_parquet(work / "results" / "demo" / "brainscores.parquet")
    pd.testing.assert_frame_equal(remote, local)
    later = rest.stdout + rest.stderr
    submitted, again = set(SUBMITTED.findall(out)), set(SUBMITTED.findall(later))
    assert {"prepare_model", "demo_data", "words", "features", "encode"} <= submitted, submitted
    assert {"brainscores", "layer_diagrams", "topology_pairs", "topology_table"} <= again, again
    assert not again & {"demo_data", "words", "features", "encode", "baseline", "ceiling"}
    # One model family: the shape table is made, the family-grouped regressions are not planned.
    assert (work / "results" / "demo" / "topology.parquet").exists()
    assert "regressions" not in again
    # The per-subject jobs went as array jobs (a retried one goes on its own).
    assert re.search(r"Submitted array job with Snakemake IDs \d+,\d+ and SLURM job ID", out), out
