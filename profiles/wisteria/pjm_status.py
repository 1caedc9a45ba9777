#!/usr/bin/env python3
"""Print ``running``, ``success`` or ``failed`` for one PJM job id (cluster-generic status).

The exit status comes from the marker pjm_submit.py's wrapper writes when the job ends; while
there is none, ``pjstat`` says whether PJM still holds the job, and ``pjstat -H`` whether it was
cancelled or rejected. A job PJM no longer knows and that left no marker is failed after a grace
period for file-system latency.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

STATE_DIR = Path(".snakemake") / "pjm"
ACTIVE = {"ACC", "QUE", "RNA", "RUN", "RNO", "RNE", "RNP", "HLD", "SPD", "SPP", "SPR"}
FAILED = {"CCL", "ERR", "RJT"}
GRACE_S = 120


def pjm_state(jobid: str, history: bool = False) -> str | None:
    """The state code pjstat shows for the job, or None if it is not listed."""
    cmd = ["pjstat", "-H", jobid] if history else ["pjstat", jobid]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN"
    for line in out.splitlines():
        tokens = line.split()
        if jobid in tokens:
            for token in tokens:
                if token in ACTIVE | FAILED | {"EXT"}:
                    return token
    return None


def status(jobid: str) -> str:
    marker = STATE_DIR / "exit" / jobid
    if marker.is_file():
        return "success" if marker.read_text().strip() == "0" else "failed"
    state = pjm_state(jobid)
    if state in ACTIVE or state == "UNKNOWN":
        return "running"
    if pjm_state(jobid, history=True) in FAILED:
        return "failed"
    # Ended (or vanished) without a marker: allow the shared file system to catch up.
    seen = STATE_DIR / "gone" / jobid
    seen.parent.mkdir(parents=True, exist_ok=True)
    if not seen.exists():
        seen.write_text(str(time.time()))
    if time.time() - float(seen.read_text() or 0) > GRACE_S:
        return "failed"
    return "running"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: pjm_status.py JOBID", file=sys.stderr)
        raise SystemExit(2)
    print(status(sys.argv[1]))
