#!/usr/bin/env python3
"""Submit one Snakemake jobscript to Fujitsu PJM (Wisteria/BDEC-01 Aquarius) and print its id.

Called by Snakemake's cluster-generic executor as ``pjm_submit.py JOBSCRIPT``. The job's rule,
wildcards and resources are read from the ``# properties = {...}`` line Snakemake writes into
every jobscript, so nothing about the job has to be spelled out in the profile.

Resources read: ``gpu``/``gpus`` (GPUs), ``runtime`` (minutes, becomes ``-L elapse``),
``mem_mb``, ``pjm_group`` (``-g``, required), ``pjm_rscgrp`` (forces a resource group).
Standard library only: it runs on the login node with whatever python3 is there.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

#: (resource group, longest elapse in minutes); check against the centre's current limits.
SHARED_GROUPS = [("share-debug", 30), ("share-short", 120), ("share", 48 * 60)]
NODE_GROUPS = [("debug-a", 30), ("short-a", 120), ("regular-a", 48 * 60)]
GPUS_PER_NODE = 8  # Aquarius: 8 x A100-40GB per node
MAX_SHARED_GPUS = 4  # larger requests take whole nodes
MEM_MB_PER_GPU = 60 * 1024  # a shared-group GPU comes with 1/8 of the node's 512 GiB (rounded)
PLACEHOLDER_GROUP = "CHANGE_ME"
STATE_DIR = Path(".snakemake") / "pjm"


class SubmitError(Exception):
    pass


def job_properties(jobscript: str | Path) -> dict:
    """The JSON Snakemake embeds in a jobscript as ``# properties = {...}``."""
    text = Path(jobscript).read_text()
    match = re.search(r"^# properties = (.*)$", text, flags=re.MULTILINE)
    if not match:
        raise SubmitError(
            f"{jobscript}: no '# properties = ...' line; is it a Snakemake jobscript?"
        )
    return json.loads(match.group(1))


def _number(value, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def elapse(minutes: float) -> str:
    """``-L elapse`` value (HH:MM:SS) for a runtime in minutes, rounded up to whole minutes."""
    total = max(1, int(math.ceil(minutes)))
    return f"{total // 60:02d}:{total % 60:02d}:00"


def choose_resources(gpus: int, runtime_min: float, mem_mb: float = 0) -> list[str]:
    """``-L`` options for a job: shared-GPU groups up to 4 GPUs, whole nodes beyond.

    A job without GPUs takes one shared GPU, the smallest unit Aquarius hands out. A job whose
    memory exceeds what its GPUs bring in a shared group asks for more GPUs.
    """
    gpus = max(1, int(gpus))
    if mem_mb:
        gpus = max(gpus, int(math.ceil(mem_mb / MEM_MB_PER_GPU)))
    if gpus <= MAX_SHARED_GPUS:
        groups, amount = SHARED_GROUPS, f"gpu={gpus}"
    else:
        groups, amount = NODE_GROUPS, f"node={int(math.ceil(gpus / GPUS_PER_NODE))}"
    for name, limit in groups:
        if runtime_min <= limit:
            return ["-L", f"rscgrp={name}", "-L", amount, "-L", f"elapse={elapse(runtime_min)}"]
    raise SubmitError(
        f"runtime {runtime_min:g} min exceeds the {groups[-1][1]} min limit of {groups[-1][0]}; "
        "split the job, or set the resource pjm_rscgrp to a group that allows it"
    )


def pjsub_command(props: dict, jobscript: str, log_dir: Path = Path("logs/pjm")) -> list[str]:
    res = props.get("resources") or {}
    group = str(res.get("pjm_group") or os.environ.get("BRAINSHAPE_PJM_GROUP") or "")
    if not group or group == PLACEHOLDER_GROUP:
        raise SubmitError(
            "no PJM group: set default-resources: pjm_group: <your group> in "
            "profiles/wisteria/config.yaml (the -g of pjsub)"
        )
    gpus = int(max(_number(res.get("gpu")), _number(res.get("gpus"))))
    runtime = _number(res.get("runtime"), 60.0)
    mem_mb = _number(res.get("mem_mb"))
    options = choose_resources(gpus, runtime, mem_mb)
    if res.get("pjm_rscgrp"):
        options[1] = f"rscgrp={res['pjm_rscgrp']}"
    rule = props.get("rule") or "group_" + str(props.get("groupid", "job"))
    wildcards = props.get("wildcards") or {}
    label = "_".join(str(v) for v in wildcards.values()) or "job"
    label = re.sub(r"[^A-Za-z0-9._-]", "-", label)
    log = log_dir / rule / f"{label}.{props.get('jobid', 0)}.out"
    return [
        "pjsub",
        "-z",
        "jid",
        "-g",
        group,
        *options,
        "-N",
        f"smk-{rule}"[:63],
        "-j",
        "-o",
        str(log),
        "-X",
        jobscript,
    ]


def wrap(jobscript: str) -> str:
    """A script that runs the jobscript and leaves its exit status for pjm_status.py."""
    exit_dir = (STATE_DIR / "exit").resolve()
    wrapper = STATE_DIR / "scripts" / (Path(jobscript).name)
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    exit_dir.mkdir(parents=True, exist_ok=True)
    marker = f'{shlex.quote(str(exit_dir))}/"$PJM_JOBID"'
    wrapper.write_text(
        "#!/bin/bash\n"
        f"bash {shlex.quote(str(Path(jobscript).resolve()))}\n"
        "status=$?\n"
        f'echo "$status" > {marker}.tmp && mv {marker}.tmp {marker}\n'
        'exit "$status"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper.resolve())


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: pjm_submit.py JOBSCRIPT", file=sys.stderr)
        return 2
    try:
        props = job_properties(argv[0])
        cmd = pjsub_command(props, wrap(argv[0]))
    except SubmitError as error:
        print(f"pjm_submit: {error}", file=sys.stderr)
        return 1
    Path(cmd[cmd.index("-o") + 1]).parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"pjm_submit: {shlex.join(cmd)} failed:\n{proc.stdout}{proc.stderr}", file=sys.stderr)
        return proc.returncode
    # `pjsub -z jid` prints the job id alone.
    print(proc.stdout.strip().split()[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
