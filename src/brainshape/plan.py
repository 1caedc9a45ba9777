"""GPU-hour planning: what a run would cost, from the dry-run DAG, before spending it.

The DAG is built exactly as ``snakemake -n`` builds it (same Snakefile, config, profile), so the
estimate counts only the jobs that would run. Every job's rule, wildcards and resources are read
from the DAG itself: no list of rules lives here, so new rules and new resource functions are
planned without touching this module.

Resources read per job (all optional): ``gpu`` or ``gpus`` (GPUs per job), ``runtime`` (wall
minutes), ``cpus_per_task`` or the job's threads (cores), ``mem_mb``. ``--calibrate`` replaces a
job's runtime with the mean ``s`` column of its ``benchmark:`` TSV where an earlier run left one.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from brainshape.errors import BrainshapeError

#: Wisteria/BDEC-01 Aquarius charges 3 tokens per GPU-hour.
TOKENS_PER_GPU_HOUR = 3.0


@dataclass(frozen=True)
class JobRecord:
    """One job of the dry run, reduced to what planning needs.

    ``runtime_min`` is wall-clock minutes (None when the job declares no runtime);
    ``cores`` is CPU cores held for that time; ``benchmark`` is the job's benchmark TSV path.
    """

    rule: str
    wildcards: dict[str, str]
    gpus: int
    runtime_min: float | None
    cores: int
    mem_mb: int | None = None
    benchmark: str | None = None
    reason: str = ""


@dataclass
class PlanRow:
    """Jobs of one rule (and one model variant where the rule has those wildcards)."""

    rule: str
    model: str
    variant: str
    jobs: int = 0
    gpus: set[int] = field(default_factory=set)
    runtime_min: float = 0.0  # summed over jobs
    gpu_hours: float = 0.0
    core_hours: float = 0.0
    measured: int = 0  # jobs whose runtime comes from a benchmark record
    unknown: int = 0  # jobs without any runtime

    @property
    def gpus_per_job(self) -> str:
        if not self.gpus:
            return "0"
        lo, hi = min(self.gpus), max(self.gpus)
        return str(lo) if lo == hi else f"{lo}-{hi}"

    @property
    def runtime_h_per_job(self) -> float:
        known = self.jobs - self.unknown
        return self.runtime_min / 60 / known if known else 0.0

    @property
    def source(self) -> str:
        if self.unknown == self.jobs:
            return "none"
        if self.measured == self.jobs:
            return "measured"
        if self.measured:
            return "mixed"
        return "estimate" if not self.unknown else "partial"


@dataclass
class Plan:
    rows: list[PlanRow]
    tokens_per_gpu_hour: float = TOKENS_PER_GPU_HOUR

    @property
    def jobs(self) -> int:
        return sum(r.jobs for r in self.rows)

    @property
    def gpu_hours(self) -> float:
        return sum(r.gpu_hours for r in self.rows)

    @property
    def core_hours(self) -> float:
        return sum(r.core_hours for r in self.rows)

    @property
    def tokens(self) -> float:
        return self.gpu_hours * self.tokens_per_gpu_hour

    COLUMNS = (
        "rule",
        "model",
        "variant",
        "jobs",
        "gpus_per_job",
        "runtime_h_per_job",
        "gpu_hours",
        "cpu_core_hours",
        "runtime_source",
    )

    def table(self) -> list[list[str]]:
        out = []
        for r in self.rows:
            out.append(
                [
                    r.rule,
                    r.model or "-",
                    r.variant or "-",
                    str(r.jobs),
                    r.gpus_per_job,
                    f"{r.runtime_h_per_job:.2f}",
                    f"{r.gpu_hours:.2f}",
                    f"{r.core_hours:.2f}",
                    r.source,
                ]
            )
        return out

    def to_tsv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
        writer.writerow(self.COLUMNS)
        writer.writerows(self.table())
        writer.writerow(
            [
                "total",
                "-",
                "-",
                str(self.jobs),
                "-",
                "-",
                f"{self.gpu_hours:.2f}",
                f"{self.core_hours:.2f}",
                "-",
            ]
        )
        return buf.getvalue()

    def to_text(self) -> str:
        header = list(self.COLUMNS)
        body = self.table()
        total = [
            "total",
            "",
            "",
            str(self.jobs),
            "",
            "",
            f"{self.gpu_hours:.2f}",
            f"{self.core_hours:.2f}",
            "",
        ]
        widths = [max(len(row[i]) for row in [header, *body, total]) for i in range(len(header))]

        def line(row: list[str]) -> str:
            return "  ".join(
                c.ljust(w) if i < 3 or i == len(row) - 1 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()

        rule_line = "  ".join("-" * w for w in widths)
        lines = [line(header), rule_line, *(line(r) for r in body), rule_line, line(total)]
        if not self.rows:
            lines = ["Nothing to be done: no job would run."]
        lines.append(
            f"Wisteria/BDEC-01 Aquarius: {self.tokens:.1f} tokens "
            f"({self.tokens_per_gpu_hour:g} per GPU-hour)"
        )
        return "\n".join(lines) + "\n"


# --- arithmetic (no Snakemake) -----------------------------------------------------------------


def read_benchmark_seconds(path: str | Path) -> float | None:
    """Mean of the ``s`` column of a Snakemake ``benchmark:`` TSV; None if absent or unusable."""
    p = Path(path)
    if not p.is_file():
        return None
    with p.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    values = []
    for row in rows:
        try:
            values.append(float(row["s"]))
        except (KeyError, TypeError, ValueError):
            continue
    return sum(values) / len(values) if values else None


def summarize(
    jobs: Iterable[JobRecord],
    calibrate: bool = False,
    tokens_per_gpu_hour: float = TOKENS_PER_GPU_HOUR,
) -> Plan:
    """Group jobs per (rule, model, variant) and add up GPU-hours and CPU core-hours.

    With ``calibrate``, a job whose benchmark TSV exists counts its measured seconds instead of
    its ``runtime`` resource.
    """
    rows: dict[tuple[str, str, str], PlanRow] = {}
    for job in jobs:
        key = (job.rule, job.wildcards.get("model", ""), job.wildcards.get("variant", ""))
        row = rows.setdefault(key, PlanRow(*key))
        minutes = job.runtime_min
        measured = False
        if calibrate and job.benchmark:
            seconds = read_benchmark_seconds(job.benchmark)
            if seconds is not None:
                minutes, measured = seconds / 60, True
        row.jobs += 1
        row.gpus.add(job.gpus)
        row.measured += measured
        if minutes is None:
            row.unknown += 1
            continue
        row.runtime_min += minutes
        row.gpu_hours += job.gpus * minutes / 60
        row.core_hours += job.cores * minutes / 60
    ordered = sorted(rows.values(), key=lambda r: (r.rule, r.model, r.variant))
    return Plan(ordered, tokens_per_gpu_hour)


# --- the dry-run DAG (Snakemake) -----------------------------------------------------------------


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def record_of(job, reason: str = "") -> JobRecord:
    """A :class:`JobRecord` from a Snakemake job (attempt 1, as the first submission asks)."""
    res = job.resources
    gpus = 0
    for name in ("gpu", "gpus"):
        n = _number(res.get(name)) if name in res.keys() else None
        if n:
            gpus = max(gpus, int(math.ceil(n)))
    runtime = _number(res.get("runtime")) if "runtime" in res.keys() else None
    cores = _number(res.get("cpus_per_task")) if "cpus_per_task" in res.keys() else None
    if not cores:
        cores = job.threads
    mem = _number(res.get("mem_mb")) if "mem_mb" in res.keys() else None
    bench = job.benchmark
    return JobRecord(
        rule=job.rule.name,
        wildcards={k: str(v) for k, v in dict(job.wildcards_dict).items()},
        gpus=gpus,
        runtime_min=runtime,
        cores=int(cores or 1),
        mem_mb=int(mem) if mem is not None else None,
        # Absolute: the DAG is built inside the workflow's directory, which may not be ours.
        benchmark=os.path.abspath(str(bench)) if bench else None,
        reason=reason,
    )


def dry_run_jobs(snakemake_args: Sequence[str]) -> list[JobRecord]:
    """Jobs that ``snakemake -n <snakemake_args>`` would run, with their resources.

    ``snakemake_args`` are ordinary snakemake command-line arguments (``--profile``,
    ``--configfile``, ``--snakefile``, ``--directory``, targets, ``--set-resources`` ...), parsed
    by Snakemake itself so profiles mean exactly what they mean to ``snakemake``.
    """
    # Imported here: the library stays importable without Snakemake.
    from snakemake.api import SnakemakeApi
    from snakemake.cli import parse_args, parse_config
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        DeploymentSettings,
        OutputSettings,
        Quietness,
        ResourceSettings,
        StorageSettings,
        WorkflowSettings,
    )

    _, args = parse_args(["--dry-run", *snakemake_args])
    if args.snakefile is None:
        for candidate in ("Snakefile", "workflow/Snakefile"):
            if Path(candidate).is_file():
                args.snakefile = Path(candidate)
                break
        else:
            raise BrainshapeError(
                f"no Snakefile in {os.getcwd()}; pass --snakefile PATH (the brainshape checkout's "
                "Snakefile)"
            )
    quiet = {Quietness.PROGRESS, Quietness.RULES, Quietness.HOST, Quietness.REASON}
    with SnakemakeApi(OutputSettings(quiet=quiet, dryrun=True)) as api:
        workflow_api = api.workflow(
            snakefile=Path(args.snakefile),
            workdir=Path(args.directory) if args.directory else None,
            resource_settings=ResourceSettings(
                # Cluster jobs are not capped at the login node's cores: plan the threads the
                # rules and the profile ask for.
                cores=args.cores or 2**20,
                nodes=args.jobs,
                default_resources=args.default_resources,
                overwrite_resources=args.set_resources,
                overwrite_threads=args.set_threads,
                max_threads=args.max_threads,
            ),
            config_settings=ConfigSettings(
                config=parse_config(args.config),
                configfiles=args.configfile,
                config_args=args.config,
            ),
            storage_settings=StorageSettings(),
            workflow_settings=WorkflowSettings(),
            deployment_settings=DeploymentSettings(),
        )
        dag_api = workflow_api.dag(
            DAGSettings(
                targets=set(args.targets),
                forcetargets=args.force,
                forceall=args.forceall,
                forcerun=set(args.forcerun or []),
                rerun_triggers=args.rerun_triggers,
            )
        )
        # The public API runs or prints a DAG but does not hand it out; these two calls are the
        # ones `snakemake --summary` makes before reading it.
        workflow = dag_api.workflow_api._workflow
        workflow._prepare_dag(
            forceall=args.forceall, ignore_incomplete=False, lock_warn_only=True, nolock=True
        )
        workflow._build_dag()
        dag = workflow.dag
        return [
            record_of(job, str(dag.reason(job)))
            for job in dag.needrun_jobs()
            if not job.rule.norun  # target-only rules such as `all` submit nothing
        ]


def plan(
    snakemake_args: Sequence[str],
    calibrate: bool = False,
    tokens_per_gpu_hour: float = TOKENS_PER_GPU_HOUR,
) -> Plan:
    return summarize(dry_run_jobs(snakemake_args), calibrate, tokens_per_gpu_hour)
