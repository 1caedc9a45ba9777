"""Static checks: ruff on the code, snakefmt on the rules, Snakemake's own linter."""

import subprocess
import sys
from pathlib import Path

from conftest import REPO


def run(*cmd):
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)


def test_ruff_clean():
    proc = run(sys.executable, "-m", "ruff", "check", "src", "tests")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run(sys.executable, "-m", "ruff", "format", "--check", "src", "tests")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakefmt_clean():
    proc = run(
        str(Path(sys.executable).parent / "snakefmt"), "--check", "Snakefile", "workflow/rules"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakemake_lint_clean():
    proc = run(sys.executable, "-m", "snakemake", "--lint", "--configfile", "config/demo.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations" in out, out
