"""Time `snakemake -n` and `brainshape plan` on the full study's DAG, on placeholder inputs.

The full study: 39 models with their variants, 190 subjects, 27 stories. Inputs are empty
placeholder files in the fMRIPrep layout (the dry run only needs them to exist). The registry is
synthetic unless --registry names one (e.g. the study's config/models.yaml). Reported: wall time
of each command as a whole (process start included) and the number of jobs.

    python benchmarks/dag.py [--registry config/models.yaml] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SPACE = "MNI152NLin2009cAsym"

# Families and sizes in the spirit of the study (ids and sizes are placeholders).
FAMILIES = {
    "gpt2": [124e6, 355e6, 774e6, 1.5e9],
    "pythia": [70e6, 160e6, 410e6, 1e9, 1.4e9, 2.8e9, 6.9e9, 12e9],
    "opt": [125e6, 350e6, 1.3e9, 2.7e9, 6.7e9, 13e9, 30e9],
    "llama": [7e9, 13e9, 70e9],
    "qwen": [0.5e9, 1.5e9, 3e9, 7e9, 14e9, 32e9, 72e9],
    "mistral": [7e9],
    "gemma": [2e9, 9e9, 27e9],
    "phi": [1.3e9, 2.7e9, 3.8e9],
    "smollm2": [135e6, 360e6, 1.7e9],
}


def synthetic_registry() -> dict:
    """39 hub models; every one has full and untrained variants, the larger ones quantized."""
    models = {}
    for family, sizes in FAMILIES.items():
        for size in sizes:
            label = f"{size / 1e9:g}b" if size >= 1e9 else f"{size / 1e6:g}m"
            name = f"{family}-{label}"
            variants = {
                "fp16": {"kind": "full", "dtype": "float16"},
                "untrained": {"kind": "untrained", "dtype": "float16", "seed": 1234},
            }
            if size >= 1e9:
                variants["bnb8"] = {"kind": "bnb8"}
                variants["nf4"] = {"kind": "bnb4"}
                variants["gptq"] = {"kind": "gptq"}
            models[name] = {
                "hf_id": f"placeholder/{name}",
                "revision": "0" * 40,
                "family": family,
                "params": int(size),
                "arch": "decoder",
                "context": 2048,
                "source": {"kind": "hub"},
                "variants": variants,
            }
    assert len(models) == 39, len(models)
    return {"models": models}


def placeholder_dataset(root: Path, subjects: list[str], stories: list[str]) -> None:
    for story in stories:
        p = root / "stimuli" / story / "align.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
    for sub in subjects:
        func = root / "derivatives" / "fmriprep" / f"sub-{sub}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        for story in stories:
            stem = f"sub-{sub}_task-{story}"
            (func / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz").touch()
            (func / f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz").touch()
            (func / f"{stem}_desc-confounds_timeseries.tsv").touch()
    atlas = root / "atlas"
    atlas.mkdir(exist_ok=True)
    (atlas / "atlas_dseg.nii.gz").touch()
    (atlas / "atlas_dseg.tsv").touch()


def write_study(work: Path, registry: Path | None, n_subjects: int, n_stories: int) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    if registry is None:
        registry = work / "models.yaml"
        registry.write_text(yaml.safe_dump(synthetic_registry(), sort_keys=False))
    subjects = [f"{i:03d}" for i in range(1, n_subjects + 1)]
    stories = [f"story{i:02d}" for i in range(1, n_stories + 1)]
    placeholder_dataset(work / "bids", subjects, stories)
    config = {
        "registry": str(Path(registry).resolve()),
        "models": "all",
        "variants": "all",
        "datasets": {
            "study": {
                "bids_root": str(work / "bids"),
                "space": SPACE,
                "tr": 1.5,
                "subjects": subjects,
                "stories": stories,
                "words": {"format": "gentle", "path": "stimuli/{story}/align.json"},
                "atlas": {
                    "image": str(work / "bids" / "atlas" / "atlas_dseg.nii.gz"),
                    "labels": str(work / "bids" / "atlas" / "atlas_dseg.tsv"),
                },
            }
        },
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def timed(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds and CPU seconds (user + system) of a command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed, cpu, proc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--registry", type=Path, help="a registry YAML instead of the synthetic one"
    )
    parser.add_argument("--subjects", type=int, default=190)
    parser.add_argument("--stories", type=int, default=27)
    parser.add_argument(
        "--workdir", type=Path, help="where to write the study (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        config = write_study(work, args.registry, args.subjects, args.stories)
        common = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(work)]
        common += ["--configfile", str(config)]
        profile = ["--profile", str(REPO / "profiles" / "slurm")]
        dry_s, dry_cpu, dry = timed(
            [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", *common]
        )
        dry_jobs = int(re.search(r"^total\s+(\d+)", dry.stdout, flags=re.MULTILINE).group(1))
        plan_s, plan_cpu, plan = timed(
            [sys.executable, "-m", "brainshape.cli", "plan", "--tsv", *profile, *common]
        )
        total = [ln for ln in plan.stdout.splitlines() if ln.startswith("total\t")][0]
        plan_jobs = int(total.split("\t")[3])
    print(
        f"full study: {args.subjects} subjects, {args.stories} stories, registry "
        f"{args.registry or 'synthetic (39 models)'}"
    )
    print(f"load average before: {load[0]:.1f}")
    print("| command | wall s | CPU s | jobs |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| snakemake -n | {dry_s:.1f} | {dry_cpu:.1f} | {dry_jobs} |")
    print(
        f"| brainshape plan --profile profiles/slurm | {plan_s:.1f} | {plan_cpu:.1f} "
        f"| {plan_jobs} |"
    )


if __name__ == "__main__":
    main()
