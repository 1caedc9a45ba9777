"""GPU-hour planning: what a run would cost, from the dry-run DAG, before spending it.

The DAG is built exactly as ``snakemake -n`` builds it (same Snakefile, config, profile), so the
estimate counts only the jobs that would run. Every job's rule, wildcards and resources are read
from the DAG itself: no list of rules lives here, so new rules and new resource functions are
planned without touching this module.

Resources read per job (all optional): ``gpu`` or ``gpus`` (GPUs per job), ``runtime`` (wall
minutes), ``cpus_per_task`` or the job's threads (cores), ``mem_mb``. ``--calibrate`` replaces a
job's runtime with the mean ``s`` column of its ``benchmark:`` TSV where an earlier run left one,
and with ``--gpu-records DIR`` plans with the rates that ``benchmarks/gpu.sh`` measured
(:func:`read_gpu_records`): they reach the workflow's resource functions as config values
(``gpu.tflops``, ``gpu.slowdown``, ``encoding.gpu_tflops``, ``encoding.cpu_gflops``), the same
keys a user sets by hand.

Warnings (:func:`limit_warnings`, :func:`budget_warning`): jobs whose runtime, memory, cores or
GPUs no partition of the profile allows (a SLURM partition file, or the Aquarius resource groups
of ``profiles/wisteria/pjm_submit.py``), and a total over ``--budget`` GPU-hours.

Snakemake's public API builds a DAG but does not hand it out; the few private calls that read
it are in :func:`_built_dag` alone, listed in :data:`SNAKEMAKE_INTERNALS` and checked by
:func:`check_snakemake_internals` (tests/test_plan.py), so a Snakemake release that changes
them fails one named test and one clear error instead of a traceback.
"""

from __future__ import annotations

import csv
import importlib.util
import inspect
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainshape.errors import BrainshapeError

#: Wisteria/BDEC-01 Aquarius charges 3 tokens per GPU-hour.
TOKENS_PER_GPU_HOUR = 3.0

#: The records ``benchmarks/gpu.sh`` writes, one per part, that calibration reads.
GPU_RECORDS = ("extract.json", "quantized.json", "ridge.json", "encode.json")


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
    charged_gpu_hours: float = 0.0  # GPU-hours the scheduler charges (see summarize's charge)
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
    #: Where the charged GPU-hours come from: None (the jobs' own GPUs) or a scheduler's name.
    charged_by: str | None = None
    notes: list[str] = field(default_factory=list)  # calibration: which rates, from where
    warnings: list[str] = field(default_factory=list)  # limits and budget

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
    def charged_gpu_hours(self) -> float:
        return sum(r.charged_gpu_hours for r in self.rows)

    @property
    def tokens(self) -> float:
        return self.charged_gpu_hours * self.tokens_per_gpu_hour

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

    def _total(self, blank: str) -> list[str]:
        return [
            "total",
            blank,
            blank,
            str(self.jobs),
            blank,
            blank,
            f"{self.gpu_hours:.2f}",
            f"{self.core_hours:.2f}",
            blank,
        ]

    def to_tsv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
        writer.writerow(self.COLUMNS)
        writer.writerows(self.table())
        writer.writerow(self._total("-"))
        return buf.getvalue()

    def cost_line(self) -> str:
        line = (
            f"Wisteria/BDEC-01 Aquarius: {self.tokens:.1f} tokens "
            f"({self.tokens_per_gpu_hour:g} per GPU-hour)"
        )
        if self.charged_by:
            line += (
                f" for {self.charged_gpu_hours:.1f} GPU-hours as {self.charged_by} charges them "
                "(every job holds at least one GPU there)"
            )
        return line

    def to_text(self) -> str:
        header = list(self.COLUMNS)
        body = self.table()
        total = self._total("")
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
        lines.append(self.cost_line())
        lines += self.notes
        lines += [f"warning: {w}" for w in self.warnings]
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
    charge: Callable[[JobRecord], int] | None = None,
) -> Plan:
    """Group jobs per (rule, model, variant) and add up GPU-hours and CPU core-hours.

    With ``calibrate``, a job whose benchmark TSV exists counts its measured seconds instead of
    its ``runtime`` resource. ``charge`` gives the GPUs a scheduler bills a job for (the
    Aquarius groups bill at least one); by default the job's own GPUs.
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
        row.charged_gpu_hours += (charge(job) if charge else job.gpus) * minutes / 60
    ordered = sorted(rows.values(), key=lambda r: (r.rule, r.model, r.variant))
    return Plan(ordered, tokens_per_gpu_hour)


def budget_warning(plan: Plan, budget_gpu_hours: float | None) -> str | None:
    """A line when the plan's GPU-hours (charged ones, where a scheduler bills more) exceed
    ``budget_gpu_hours``; None within it."""
    if budget_gpu_hours is None:
        return None
    hours = max(plan.gpu_hours, plan.charged_gpu_hours)
    if hours <= budget_gpu_hours:
        return None
    what = f"{plan.charged_by}-charged GPU-hours" if plan.charged_by else "GPU-hours"
    return (
        f"the plan needs {hours:,.1f} {what}, {hours / budget_gpu_hours:.2f} times the budget of "
        f"{budget_gpu_hours:,.1f} (--budget); config/README.md ('What the study costs') lists "
        "what lowers it"
    )


# --- partition limits ---------------------------------------------------------------------------


def _minutes(value: Any) -> float:
    """Minutes from a number or a SLURM time ``[D-]HH:MM[:SS]`` / ``MM``."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    days = 0.0
    if "-" in text:
        d, text = text.split("-", 1)
        days = float(d)
    parts = [float(p) for p in text.split(":")]
    if len(parts) == 1:
        minutes = parts[0]
    elif len(parts) == 2:
        minutes = parts[0] * 60 + parts[1]
    else:
        minutes = parts[0] * 60 + parts[1] + parts[2] / 60
    return days * 24 * 60 + minutes


@dataclass(frozen=True)
class SlurmPartitions:
    """Partition limits as the SLURM executor plugin reads them (``--slurm-partition-config``):
    ``partitions: {name: {max_runtime, max_mem_mb, max_mem_mb_per_cpu, max_cpus_per_task,
    max_threads, max_gpu}}``, every limit optional (absent: no limit; ``max_gpu`` absent: 0)."""

    source: str
    partitions: dict[str, dict[str, float]]
    name = "SLURM"

    @classmethod
    def read(cls, path: str | Path) -> SlurmPartitions:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise BrainshapeError(
                f"partition file {p} does not exist; give the file the profile's "
                "slurm-partition-config names (see profiles/slurm/partitions.example.yaml)"
            )
        data = yaml.safe_load(p.read_text()) or {}
        parts = data.get("partitions") if isinstance(data, dict) else None
        if not isinstance(parts, dict) or not parts:
            raise BrainshapeError(
                f"{p}: no 'partitions' mapping; see profiles/slurm/partitions.example.yaml"
            )
        limits = {}
        for name, spec in parts.items():
            spec = spec or {}
            limits[str(name)] = {
                "runtime": _minutes(spec.get("max_runtime", math.inf)),
                "mem_mb": float(spec.get("max_mem_mb", math.inf)),
                "mem_mb_per_cpu": float(spec.get("max_mem_mb_per_cpu", math.inf)),
                "cores": float(
                    min(spec.get("max_cpus_per_task", math.inf), spec.get("max_threads", math.inf))
                ),
                "gpus": float(spec.get("max_gpu", 0)),
            }
        return cls(str(p), limits)

    def problems(self, job: JobRecord) -> list[str]:
        """Why no partition takes ``job`` (empty: one does)."""
        need = {
            "runtime": job.runtime_min or 0.0,
            "mem_mb": float(job.mem_mb or 0),
            "mem_mb_per_cpu": float(job.mem_mb or 0) / max(1, job.cores),
            "cores": float(job.cores),
            "gpus": float(job.gpus),
        }

        def fits(lim: dict[str, float], key: str) -> bool:
            if key == "gpus":
                return lim["gpus"] >= need["gpus"] and (need["gpus"] > 0) == (lim["gpus"] > 0)
            return need[key] <= lim[key]

        # A GPU job only goes to a partition with GPUs; a CPU job to any partition.
        usable = {
            n: lim
            for n, lim in self.partitions.items()
            if (lim["gpus"] > 0 if need["gpus"] else True)
        }
        if any(all(fits(lim, k) for k in need) for lim in usable.values()):
            return []
        if not usable:
            return [f"{job.gpus} GPU(s): no partition has GPUs"]
        units = {"runtime": "min", "mem_mb": "MB", "mem_mb_per_cpu": "MB per core"}
        out = []
        for key in need:
            if key != "gpus" and not any(fits(lim, key) for lim in usable.values()):
                largest = max(usable.items(), key=lambda kv: kv[1][key])
                out.append(
                    f"{key} {need[key]:,.0f} {units.get(key, '')}".rstrip()
                    + f" > {largest[1][key]:,.0f} (largest, partition {largest[0]})"
                )
        if need["gpus"] and not any(fits(lim, "gpus") for lim in usable.values()):
            most = max(lim["gpus"] for lim in usable.values())
            out.append(f"gpus {job.gpus} > {most:g} (most in any partition)")
        return out or ["no single partition allows its runtime, memory, cores and GPUs together"]

    def charged(self, job: JobRecord) -> int:
        return job.gpus


@dataclass(frozen=True)
class AquariusGroups:
    """Wisteria/BDEC-01 Aquarius resource groups, as ``pjm_submit.py`` of the profile picks them
    (loaded from the profile, so the limits live in one place)."""

    source: str
    module: Any
    name = "Aquarius"

    @classmethod
    def load(cls, script: str | Path) -> AquariusGroups:
        spec = importlib.util.spec_from_file_location("brainshape_pjm_submit", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return cls(str(script), module)

    def _options(self, job: JobRecord) -> list[str]:
        return self.module.choose_resources(job.gpus, job.runtime_min or 0.0, job.mem_mb or 0)

    def problems(self, job: JobRecord) -> list[str]:
        m = self.module
        out = []
        try:
            self._options(job)
        except m.SubmitError as error:
            out.append(str(error).split(";")[0])
        node_mb = m.GPUS_PER_NODE * m.MEM_MB_PER_GPU
        if (job.mem_mb or 0) > node_mb:
            out.append(f"mem_mb {job.mem_mb:,} > {node_mb:,} (one Aquarius node)")
        if job.gpus > m.GPUS_PER_NODE:
            out.append(f"gpus {job.gpus} > {m.GPUS_PER_NODE} (one Aquarius node)")
        return out

    def charged(self, job: JobRecord) -> int:
        try:
            options = self._options(job)
        except self.module.SubmitError:
            # Planned anyway at the longest group: the warning says it cannot be submitted.
            options = self.module.choose_resources(job.gpus, 0, job.mem_mb or 0)
        amount = options[3]
        kind, n = amount.split("=")
        return int(n) * (self.module.GPUS_PER_NODE if kind == "node" else 1)


def limit_warnings(jobs: Iterable[JobRecord], limits) -> list[str]:
    """One line per (rule, model, variant) with jobs that ``limits`` cannot take, naming the
    resources over the limit and how many of its jobs are affected."""
    grouped: dict[tuple[str, str, str], list[tuple[JobRecord, list[str]]]] = {}
    totals: dict[tuple[str, str, str], int] = {}
    for job in jobs:
        key = (job.rule, job.wildcards.get("model", ""), job.wildcards.get("variant", ""))
        totals[key] = totals.get(key, 0) + 1
        problems = limits.problems(job)
        if problems:
            grouped.setdefault(key, []).append((job, problems))
    out = []
    for key in sorted(grouped):
        bad = grouped[key]
        # The worst job of the group stands for it (longest runtime, then most memory).
        job, problems = max(bad, key=lambda jp: (jp[0].runtime_min or 0, jp[0].mem_mb or 0))
        labels = zip(("model", "variant"), key[1:], strict=True)
        what = key[0] + "".join(f" {k}={v}" for k, v in labels if v)
        out.append(
            f"{what}: {len(bad)} of {totals[key]} job(s) exceed the {limits.name} limits of "
            f"{limits.source}: {'; '.join(problems)}"
        )
    return out


# --- measured rates (benchmarks/gpu.sh) ----------------------------------------------------------


@dataclass(frozen=True)
class MeasuredRates:
    """Rates read from the records of ``benchmarks/gpu.sh`` (see :func:`read_gpu_records`).

    ``extraction_fraction``: feature extraction's FLOP rate over the dense bf16 (GPU) or float32
    (CPU) matrix-product rate measured in the same run, on ``matmul_tflops``; ``slowdown``:
    bf16 tokens/s over each quantised kind's; ``encode_fraction``: the ridge engine's FLOP rate
    on a GPU over the matrix-product rate of that run; ``cpu_gflops``: its rate per CPU thread
    where the encode part ran on the CPU.
    """

    folder: str
    device: str | None = None
    device_type: str | None = None
    tiny: bool = False
    matmul_tflops: float | None = None
    extraction_fraction: float | None = None
    slowdown: dict[str, float] = field(default_factory=dict)
    slowdown_from: str = ""
    encode_fraction: float | None = None
    encode_matmul_tflops: float | None = None
    cpu_gflops: float | None = None
    skipped: list[str] = field(default_factory=list)


def _record(folder: Path, name: str, skipped: list[str]) -> dict | None:
    path = folder / name
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise BrainshapeError(f"{path}: not a JSON record of benchmarks/gpu.sh ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("results"), dict):
        raise BrainshapeError(f"{path}: no 'results' object; was it written by benchmarks/gpu.sh?")
    if record.get("status") not in ("ok", "partial", "timeout"):
        skipped.append(f"{name}: {record.get('status')} ({record.get('reason') or 'no reason'})")
        return None
    return record


def read_gpu_records(folder: str | Path) -> MeasuredRates:
    """The rates of the JSON records ``benchmarks/gpu.sh`` wrote into ``folder``.

    ``extract.json`` gives ``results.fraction_of_matmul`` and ``results.matmul_tflops``;
    ``quantized.json`` ``results.slowdown`` (kind -> factor) and ``results.slowdown_from``;
    ``encode.json`` ``results.gflops``, ``results.backend``, ``results.threads`` and
    ``results.matmul_tflops``. A record whose part was skipped or failed gives nothing (said in
    ``skipped``); a part cut by its time box gives what it measured before.
    """
    root = Path(folder)
    if not root.is_dir():
        raise BrainshapeError(
            f"--gpu-records {root}: no such folder; run benchmarks/gpu.sh --out {root} on a GPU "
            "machine first (docs/benchmarks.md)"
        )
    if not any((root / name).is_file() for name in GPU_RECORDS):
        raise BrainshapeError(
            f"--gpu-records {root}: none of {', '.join(GPU_RECORDS)} is there; run "
            f"benchmarks/gpu.sh --out {root} on a GPU machine first (docs/benchmarks.md)"
        )
    skipped: list[str] = []
    found: dict[str, Any] = {"folder": str(root), "skipped": skipped}
    extract = _record(root, "extract.json", skipped)
    if extract:
        res = extract["results"]
        found.update(device=extract.get("device"), device_type=extract.get("device_type"))
        found["tiny"] = bool(extract.get("tiny"))
        if res.get("fraction_of_matmul") and res.get("matmul_tflops"):
            found["extraction_fraction"] = float(res["fraction_of_matmul"])
            found["matmul_tflops"] = float(res["matmul_tflops"])
    quantized = _record(root, "quantized.json", skipped)
    if quantized:
        slowdown = quantized["results"].get("slowdown") or {}
        found["slowdown"] = {k: float(v) for k, v in slowdown.items() if v}
        found["slowdown_from"] = str(quantized["results"].get("slowdown_from") or "")
        found["tiny"] = found.get("tiny", False) or bool(quantized.get("tiny"))
    encode = _record(root, "encode.json", skipped)
    if encode and encode["results"].get("gflops"):
        res = encode["results"]
        found.setdefault("device", encode.get("device"))
        found.setdefault("device_type", encode.get("device_type"))
        found["tiny"] = found.get("tiny", False) or bool(encode.get("tiny"))
        if res.get("backend_device") == "cuda" and res.get("matmul_tflops"):
            found["encode_fraction"] = float(res["gflops"]) / 1e3 / float(res["matmul_tflops"])
            found["encode_matmul_tflops"] = float(res["matmul_tflops"])
        elif res.get("backend_device") == "cpu":
            found["cpu_gflops"] = float(res["gflops"]) / max(1, int(res.get("threads") or 1))
    return MeasuredRates(**found)


def rate_overrides(
    rates: MeasuredRates, gpu_name: str, gpu_tflops: float, gpu_memory_gib: float | None = None
) -> tuple[dict, list[str]]:
    """Config values (``gpu.tflops``, ``gpu.slowdown``, ``encoding.gpu_tflops``,
    ``encoding.cpu_gflops``) that plan with ``rates`` on the planned GPU type, and one line per
    value saying where it comes from.

    A share of the matrix-product rate carries over to the planned type: measured on that type,
    its measured matrix-product rate; on another device, the planned type's
    (:func:`resources.matmul_tflops`, from ``gpu_tflops``, the sustained rate planned with).
    """
    from brainshape import resources

    same = bool(rates.device_type) and rates.device_type == gpu_name
    planned = resources.GpuType(gpu_memory_gib or 0.0, gpu_tflops)
    on = f"{rates.device or 'unknown device'}"
    notes = [f"calibrated with the rates benchmarks/gpu.sh measured in {rates.folder} ({on}):"]
    if rates.tiny:
        notes.append("  (tiny shapes: these records test the plumbing, they are no basis to plan)")
    out: dict[str, dict] = {}

    def matmul(measured: float | None) -> tuple[float, str]:
        if same and measured:
            return measured, f"the {measured:.0f} TFLOP/s matrix products measured on {gpu_name}"
        value = resources.matmul_tflops(planned)
        return value, (
            f"{value:.0f} TFLOP/s, {resources.MATMUL_PER_SUSTAINED:g} x the {gpu_tflops:g} planned "
            f"for {gpu_name} (measured on {rates.device_type or on}, not {gpu_name})"
        )

    if rates.extraction_fraction:
        rate, basis = matmul(rates.matmul_tflops)
        tflops = rates.extraction_fraction * rate
        out.setdefault("gpu", {})["tflops"] = tflops
        notes.append(
            f"  gpu.tflops {tflops:.1f} (was {gpu_tflops:g}): extraction at "
            f"{rates.extraction_fraction:.3f} of {basis}"
        )
    if rates.slowdown:
        out.setdefault("gpu", {})["slowdown"] = dict(rates.slowdown)
        shown = ", ".join(f"{k} {v:.2f}" for k, v in sorted(rates.slowdown.items()))
        notes.append(
            f"  gpu.slowdown {shown} (bf16 tokens/s over the kind's, {rates.slowdown_from})"
        )
    if rates.encode_fraction:
        rate, basis = matmul(rates.encode_matmul_tflops)
        tflops = rates.encode_fraction * rate
        out.setdefault("encoding", {})["gpu_tflops"] = tflops
        notes.append(
            f"  encoding.gpu_tflops {tflops:.2f}: the ridge engine at "
            f"{rates.encode_fraction:.4f} of {basis}"
        )
    if rates.cpu_gflops:
        out.setdefault("encoding", {})["cpu_gflops"] = rates.cpu_gflops
        notes.append(
            f"  encoding.cpu_gflops {rates.cpu_gflops:.2f} per thread (the encode part ran on "
            f"the CPU of {on})"
        )
    notes += [f"  not used: {s}" for s in rates.skipped]
    if not out:
        notes.append("  no rate in these records: the plan keeps its assumed rates")
    return out, notes


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


#: The private parts of Snakemake that :func:`_built_dag` uses: (where, name, the keyword
#: arguments it passes). ``snakemake --summary`` makes the same calls before reading a DAG.
SNAKEMAKE_INTERNALS = (
    ("snakemake.api.DAGApi", "workflow_api", ()),
    ("snakemake.api.WorkflowApi", "_workflow", ()),
    (
        "snakemake.workflow.Workflow",
        "_prepare_dag",
        ("forceall", "ignore_incomplete", "lock_warn_only", "nolock"),
    ),
    ("snakemake.workflow.Workflow", "_build_dag", ()),
    ("snakemake.workflow.Workflow", "dag", ()),
)


def check_snakemake_internals() -> list[str]:
    """What of :data:`SNAKEMAKE_INTERNALS` the installed Snakemake lacks (empty: all there)."""
    import dataclasses
    import importlib

    missing = []
    for where, name, kwargs in SNAKEMAKE_INTERNALS:
        module, cls_name = where.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), cls_name)
        is_dc = dataclasses.is_dataclass(cls)
        fields = {f.name for f in dataclasses.fields(cls)} if is_dc else set()
        if not hasattr(cls, name) and name not in fields:
            missing.append(f"{where}.{name}")
            continue
        if kwargs:
            params = inspect.signature(getattr(cls, name)).parameters
            lost = [k for k in kwargs if k not in params]
            if lost:
                missing.append(f"{where}.{name}({', '.join(lost)}=...)")
    return missing


def _built_dag(dag_api, args):
    """The DAG of a dry run: the one place that reaches into Snakemake's private API.

    The public API runs or prints a DAG but does not hand it out; these are the calls
    ``snakemake --summary`` makes before reading it. A Snakemake release that renames them
    stops here with one clear error (and fails ``check_snakemake_internals`` in the tests).
    """
    try:
        workflow = dag_api.workflow_api._workflow
        workflow._prepare_dag(
            forceall=args.forceall, ignore_incomplete=False, lock_warn_only=True, nolock=True
        )
        workflow._build_dag()
        return workflow.dag
    except (AttributeError, TypeError) as error:
        from snakemake import __version__ as version

        missing = check_snakemake_internals()
        if not missing:
            raise
        raise BrainshapeError(
            f"brainshape plan reads the DAG through Snakemake internals that Snakemake {version} "
            f"no longer has ({', '.join(missing)}; {error}); install the Snakemake version "
            "pyproject.toml allows, or plan with `snakemake -n`"
        ) from None


def _parse(snakemake_args: Sequence[str]):
    from snakemake.cli import parse_args

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
    return args


def dry_run_jobs(
    snakemake_args: Sequence[str] | Any, config_overrides: Mapping[str, Any] | None = None
) -> list[JobRecord]:
    """Jobs that ``snakemake -n <snakemake_args>`` would run, with their resources.

    ``snakemake_args`` are ordinary snakemake command-line arguments (``--profile``,
    ``--configfile``, ``--snakefile``, ``--directory``, targets, ``--set-resources`` ...), parsed
    by Snakemake itself so profiles mean exactly what they mean to ``snakemake`` (or the parsed
    arguments). ``config_overrides`` are merged over the config, as ``--config`` would be.
    """
    # Imported here: the library stays importable without Snakemake.
    from snakemake.api import SnakemakeApi
    from snakemake.cli import parse_config
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
    from snakemake.utils import update_config

    args = _parse(snakemake_args) if isinstance(snakemake_args, list | tuple) else snakemake_args
    config = parse_config(args.config)
    if config_overrides:
        update_config(config, dict(config_overrides))
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
                config=config,
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
        dag = _built_dag(dag_api, args)
        return [
            record_of(job, str(dag.reason(job)))
            for job in dag.needrun_jobs()
            if not job.rule.norun  # target-only rules such as `all` submit nothing
        ]


def _planned_gpu(args) -> tuple[str, float, float | None]:
    """(gpu.type, its sustained TFLOP/s, its memory) of the config the dry run reads: the
    ``--configfile`` files (else the Snakefile's ``config/config.yaml``) with ``--config`` over
    them, and the schema's default type."""
    import yaml
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    from brainshape import resources

    base = Path(args.directory) if args.directory else Path.cwd()
    files = [Path(f) for f in (args.configfile or [])] or [base / "config" / "config.yaml"]
    config: dict = {}
    for path in files:
        path = path if path.is_absolute() or path.is_file() else base / path
        if path.is_file():
            update_config(config, yaml.safe_load(path.read_text()) or {})
    update_config(config, parse_config(args.config))
    gpu = config.get("gpu") or {}
    schema = Path(args.snakefile).resolve().parent / "workflow" / "schemas" / "config.schema.yaml"
    default = yaml.safe_load(schema.read_text())["properties"]["gpu"]["properties"]["type"]
    planned = resources.gpu_type(
        gpu.get("type") or default["default"], gpu.get("memory_gib"), gpu.get("tflops")
    )
    return gpu.get("type") or default["default"], planned.tflops, planned.memory_gib


def profile_limits(args, partitions: str | Path | None = None):
    """The limits the jobs must fit: ``partitions`` (a SLURM partition file) if given, else
    the profile's ``slurm-partition-config``, or the Aquarius groups of a profile that submits
    with ``pjm_submit.py``; None where the profile names no limits."""
    if partitions:
        return SlurmPartitions.read(partitions)
    submit = getattr(args, "cluster_generic_submit_cmd", None)
    if isinstance(submit, str) and submit.split() and submit.split()[0].endswith("pjm_submit.py"):
        script = Path(submit.split()[0])
        if script.is_file():
            return AquariusGroups.load(script)
    config = getattr(args, "slurm_partition_config", None)
    if isinstance(config, str | os.PathLike) and str(config):
        path = Path(config)
        for profile in getattr(args, "profile", None) or []:
            if not path.is_file() and (Path(profile) / path).is_file():
                path = Path(profile) / path
        return SlurmPartitions.read(path)
    return None


def plan(
    snakemake_args: Sequence[str],
    calibrate: bool = False,
    tokens_per_gpu_hour: float = TOKENS_PER_GPU_HOUR,
    *,
    gpu_records: str | Path | None = None,
    budget: float | None = None,
    partitions: str | Path | None = None,
) -> Plan:
    """Plan the jobs ``snakemake -n <snakemake_args>`` would run (see the module docstring)."""
    if gpu_records is not None and not calibrate:
        raise BrainshapeError("--gpu-records calibrates the plan: use it with --calibrate")
    args = _parse(snakemake_args)
    overrides, notes = None, []
    if gpu_records is not None:
        rates = read_gpu_records(gpu_records)
        overrides, notes = rate_overrides(rates, *_planned_gpu(args))
    limits = profile_limits(args, partitions)
    jobs = dry_run_jobs(args, overrides)
    result = summarize(
        jobs, calibrate, tokens_per_gpu_hour, charge=limits.charged if limits else None
    )
    if isinstance(limits, AquariusGroups):
        result.charged_by = limits.name
    result.notes = notes
    if limits is None:
        result.notes.append(
            "partition limits: none known (the profile names no partition file); pass "
            "--partitions FILE to check the jobs against them"
        )
    else:
        result.warnings += limit_warnings(jobs, limits)
    over = budget_warning(result, budget)
    if over:
        result.warnings.append(over)
    return result
