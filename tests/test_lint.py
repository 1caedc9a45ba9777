"""Static checks: ruff on the code, snakefmt on the rules, Snakemake's own linter."""

import subprocess
import sys
from pathlib import Path

from conftest import REPO


def run(*cmd):
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)


#: Every Python file of the project: the library, its scripts, tests, benchmarks and profiles.
PYTHON = ("src", "tests", "benchmarks", "workflow/scripts", "profiles")


def test_ruff_clean():
    proc = run(sys.executable, "-m", "ruff", "check", *PYTHON)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run(sys.executable, "-m", "ruff", "format", "--check", *PYTHON)
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


def test_every_rule_stamps_the_code_of_its_script():
    """A library edit reruns a rule only if the rule carries its script's code stamp."""
    import re

    missing = []
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"(?m)^(?=rule )", path.read_text())[1:]:
            name = block.split(":", 1)[0].removeprefix("rule ")
            script = re.search(r'script:\n\s+"\.\./scripts/([\w.]+)"', block)
            if script and f'code=code_version("{script.group(1)}")' not in block:
                missing.append(f"{path.name}: rule {name}")
    assert not missing, "rules without code=code_version(<their script>): " + ", ".join(missing)
