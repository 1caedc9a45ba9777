"""`brainshape plan` of the full study with the shipped settings, before or after calibration.

The full study: the 39 models of config/models.yaml with all their variants, 190 subjects and
27 stories, with the features, fmri (voxel targets), encoding and topology settings of
config/config.yaml. Inputs are empty placeholder files in the fMRIPrep layout (the dry run
needs them to exist; their sizes are planned with the defaults: 600 volumes per story, 20,000
voxels per subject). Prints the plan per rule and its totals: GPU-hours, CPU core-hours and the
Wisteria tokens (as PJM charges them with --profile profiles/wisteria).

    python benchmarks/gpu_study.py [--profile profiles/slurm] [--gpu-records DIR] [--budget H]
        [--set encoding.n_blocks=5 ...] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import dag  # noqa: E402  (benchmarks/dag.py: the placeholder dataset of the full study)

#: Sections of config/config.yaml that say how the study is processed (datasets aside).
SETTINGS = ("features", "gpu", "fmri", "encoding", "topology", "regressions")


def write(work: Path, subjects: int = 190, stories: int = 27, changes: dict | None = None) -> Path:
    """The full study's config (placeholder inputs) with the shipped settings; its path."""
    config = dag.write_study(work, REPO / "config" / "models.yaml", subjects, stories)
    cfg = yaml.safe_load(config.read_text())
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for key in SETTINGS:
        if key in shipped:
            cfg[key] = dict(shipped[key])
    for dotted, value in (changes or {}).items():
        section, key = dotted.split(".", 1)
        cfg.setdefault(section, {})[key] = value
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return config


def by_rule(plan) -> dict[str, list[float]]:
    """Per rule: jobs, GPU-hours, CPU core-hours."""
    out: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for row in plan.rows:
        entry = out[row.rule]
        entry[0] += row.jobs
        entry[1] += row.gpu_hours
        entry[2] += row.core_hours
    return dict(out)


def main(argv: list[str] | None = None) -> None:
    from brainshape import plan as planning

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=str(REPO / "profiles" / "slurm"))
    parser.add_argument("--gpu-records", default=None, help="calibrate with these records")
    parser.add_argument("--budget", type=float, default=None)
    parser.add_argument("--partitions", default=None)
    parser.add_argument("--subjects", type=int, default=190)
    parser.add_argument("--stories", type=int, default=27)
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="change a setting"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    changes = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        config = write(work, args.subjects, args.stories, changes)
        snakemake_args = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(work)]
        snakemake_args += ["--configfile", str(config), "--profile", args.profile]
        result = planning.plan(
            snakemake_args,
            calibrate=args.gpu_records is not None,
            gpu_records=args.gpu_records,
            budget=args.budget,
            partitions=args.partitions,
        )
    print("| rule | jobs | GPU-hours | CPU core-hours |\n| --- | ---: | ---: | ---: |")
    for rule, (jobs, gpu, cpu) in sorted(by_rule(result).items()):
        print(f"| {rule} | {jobs:,} | {gpu:,.0f} | {cpu:,.0f} |")
    print(f"| total | {result.jobs:,} | {result.gpu_hours:,.0f} | {result.core_hours:,.0f} |")
    print(result.cost_line())
    for line in result.notes:
        print(line)
    for warning in result.warnings:
        print(f"warning: {warning}")


if __name__ == "__main__":
    main()
