"""Command line: ``brainshape demo-data DIR`` and friends."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from brainshape import __version__
from brainshape import demo as demo_module
from brainshape.config import schema_default
from brainshape.errors import BrainshapeError


def _demo_data(args: argparse.Namespace) -> None:
    from brainshape.runner import setup_logging

    setup_logging(None)
    subjects = [f"{i:02d}" for i in range(1, args.subjects + 1)]
    demo_module.generate(
        args.dir,
        registry_path=args.registry,
        model_root=args.model_root,
        subjects=subjects,
        tr=args.tr,
        seed=args.seed,
        snr=args.snr,
    )
    print(f"demo dataset written to {args.dir} (ground truth: {args.dir}/ground_truth.json)")


def _plan(args: argparse.Namespace) -> None:
    from brainshape import plan as plan_module

    result = plan_module.plan(
        args.snakemake_args,
        calibrate=args.calibrate,
        tokens_per_gpu_hour=args.tokens_per_gpu_hour,
        gpu_records=args.gpu_records,
        budget=args.budget,
        partitions=args.partitions,
    )
    if args.tsv:
        # The table stays machine-readable; what calibrated it and the warnings go to stderr.
        print(result.to_tsv(), end="")
        for line in [result.cost_line(), *result.notes]:
            print(line, file=sys.stderr)
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    else:
        print(result.to_text(), end="")


def _pin_revisions(args: argparse.Namespace) -> None:
    from brainshape import pin
    from brainshape.runner import setup_logging

    setup_logging(None)
    pins = pin.pin_registry(
        args.registry,
        cache_dir=args.cache_dir,
        model_root=args.model_root,
        hub=args.hub,
        dry_run=args.dry_run,
    )
    print(pin.report(pins), end="")
    changed = sum(p.changes for p in pins)
    verb = "would pin" if args.dry_run else "pinned"
    print(f"{verb} {changed} revision(s) in {args.registry}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brainshape",
        description="Brainscores of language models on story-listening fMRI.",
    )
    parser.add_argument("--version", action="version", version=f"brainshape {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo_data(sub)
    _add_plan(sub)
    _add_pin_revisions(sub)
    return parser


def _add_demo_data(sub) -> None:
    demo = sub.add_parser(
        "demo-data",
        help="generate the demo BIDS dataset with planted signal",
        description="Write a BIDS dataset with fMRIPrep-style derivatives, word timings in three "
        "formats and BOLD driven by known model layers (ground_truth.json says which).",
    )
    demo.add_argument("dir", help="output directory (created)")
    demo.add_argument(
        "--registry",
        default="config/models.demo.yaml",
        help="model registry holding the planted models (default: %(default)s)",
    )
    demo.add_argument(
        "--model-root",
        default=schema_default("model_root"),
        help="where models are prepared or found (default: %(default)s)",
    )
    demo.add_argument("--subjects", type=int, default=4, help="number of subjects (default: 4)")
    demo.add_argument("--tr", type=float, default=2.0, help="repetition time in s (default: 2)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument(
        "--snr",
        type=float,
        default=demo_module.DEFAULT_SNR,
        help="per-voxel signal-to-noise variance ratio (default: %(default)s)",
    )
    demo.set_defaults(func=_demo_data)


def _add_plan(sub) -> None:
    plan = sub.add_parser(
        "plan",
        help="GPU-hours, CPU core-hours and Wisteria tokens of the jobs a run would start",
        description="Build the DAG as `snakemake -n` does and add up, per rule and per model "
        "variant, the jobs, GPUs per job, runtime, GPU-hours and CPU core-hours of the jobs that "
        "would run. Every other argument goes to Snakemake unchanged: --profile, --configfile, "
        "--snakefile, --directory, --set-resources, targets.",
        epilog="example: brainshape plan --profile profiles/slurm --configfile config/config.yaml "
        "--budget 5000 --partitions profiles/slurm/partitions.example.yaml",
    )
    plan.add_argument(
        "--calibrate",
        action="store_true",
        help="use the runtime measured in earlier runs' benchmark: records where they exist "
        "(and, with --gpu-records, the rates benchmarks/gpu.sh measured)",
    )
    plan.add_argument(
        "--gpu-records",
        metavar="DIR",
        default=None,
        help="with --calibrate: plan with the extraction rate, quantised kinds' slowdowns and "
        "encode rate in the JSON records benchmarks/gpu.sh wrote to DIR",
    )
    plan.add_argument(
        "--budget",
        type=float,
        metavar="GPU_HOURS",
        default=None,
        help="warn when the plan needs more GPU-hours than this",
    )
    plan.add_argument(
        "--partitions",
        metavar="FILE",
        default=None,
        help="SLURM partition limits to check every job against (the format of "
        "profiles/slurm/partitions.example.yaml; default: the profile's "
        "slurm-partition-config, or the Aquarius groups of profiles/wisteria)",
    )
    plan.add_argument("--tsv", action="store_true", help="print a tab-separated table")
    plan.add_argument(
        "--tokens-per-gpu-hour",
        type=float,
        default=3.0,
        help="token price of one GPU-hour (default: %(default)s, Wisteria Aquarius)",
    )
    plan.set_defaults(func=_plan, snakemake_args=[])


def _add_pin_revisions(sub) -> None:
    pin = sub.add_parser(
        "pin-revisions",
        help="replace the registry's branch revisions by the commits that were downloaded",
        description="For every hub model (and gptq/gguf checkpoint) whose revision is a branch "
        "or tag, look up the commit it was downloaded at: in the Hugging Face cache the jobs "
        "read, then in a copy under --model-root, then (with --hub) on the hub; write the "
        "commits into the registry, keeping its comments. Run it on a login node after "
        "downloading the models.",
    )
    pin.add_argument(
        "registry",
        nargs="?",
        default="config/models.yaml",
        help="registry file to edit (default: %(default)s)",
    )
    pin.add_argument("--cache-dir", default=None, help="HF hub cache (default: HF_HUB_CACHE)")
    pin.add_argument(
        "--model-root",
        default=schema_default("model_root"),
        help="folder of hf download --local-dir copies, one per model (default: %(default)s)",
    )
    pin.add_argument(
        "--hub",
        action="store_true",
        help="ask the hub for revisions not found locally (network; may be newer than a download)",
    )
    pin.add_argument("--dry-run", action="store_true", help="print the table, change nothing")
    pin.set_defaults(func=_pin_revisions)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # `plan` hands every argument it does not know to Snakemake.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "plan":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "plan":
        args.snakemake_args = extra
    try:
        args.func(args)
    except BrainshapeError as error:
        print(f"brainshape: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
