#!/usr/bin/env python3
"""Cancel PJM jobs (cluster-generic cancel command): ``pjm_cancel.py JOBID [JOBID ...]``."""

import subprocess
import sys

if __name__ == "__main__":
    raise SystemExit(subprocess.run(["pjdel", *sys.argv[1:]]).returncode if sys.argv[1:] else 0)
