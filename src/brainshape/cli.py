"""Command line: ``brainshape demo-data DIR``, ``brainshape sheet DATASET ROOT`` and friends."""

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


def _sheet(args: argparse.Namespace) -> None:
    from brainshape import importers, sheet

    overrides = args.tr_overrides_header or None
    options = {
        "ds003020": {"labels": args.labels, "tr": args.tr},
        "narratives": {
            "tasks": args.task,
            "space": args.space,
            "fmriprep_dir": args.fmriprep_dir,
            "scan_exclude": False if args.without_scan_exclude else None,
            "tr_overrides_header": overrides,
        },
        "alice": {"onsets": _onsets(args.onset), "tr_overrides_header": overrides},
        "fmriprep": {
            "tr_overrides_header": overrides,
            "fmriprep_dir": args.fmriprep_dir,
            "space": args.space,
            "res": args.res,
            "tasks": args.task,
            "words": args.words,
            "words_format": args.words_format,
            "tier": args.tier,
            "onset_from_events": args.onset_from_events or None,
        },
    }[args.dataset]
    # Options not given take the importer's defaults.
    options = {k: v for k, v in options.items() if v is not None}
    if args.dataset == "ds003020" and args.test_story is not None:
        options["test_story"] = args.test_story or None
    imported = importers.run(args.dataset, args.root, **options)
    sheet.write_sheet(args.output, imported.runs)
    print(imported.report(), end="")
    print(f"runs sheet written to {args.output} (paths relative to {args.root}: bids_root)")


def _onsets(pairs: Sequence[str] | None) -> dict[str, float]:
    """``SUBJECT=SECONDS`` pairs of --onset as a mapping."""
    out = {}
    for pair in pairs or []:
        subject, _, seconds = pair.partition("=")
        try:
            out[subject.removeprefix("sub-")] = float(seconds)
        except ValueError:
            raise BrainshapeError(
                f"--onset {pair!r} is not SUBJECT=SECONDS (e.g. --onset 23=1.5)"
            ) from None
    return out


def _standin(args: argparse.Namespace) -> None:
    from brainshape import standins
    from brainshape.runner import setup_logging

    setup_logging(None)
    standins.generate(
        args.dataset,
        args.dir,
        registry_path=args.registry,
        model_root=args.model_root,
        seed=args.seed,
    )
    print(
        f"{args.dataset} stand-in written to {args.dir} (ground truth: "
        f"{args.dir}/{standins.GROUND_TRUTH})"
    )


def _summary(args: argparse.Namespace) -> None:
    from brainshape import summary

    info, board = summary.read_results(args.results)
    if args.tsv:
        # Machine-readable: the leaderboard's numbers only; what was run goes to stderr.
        print(summary.board_tsv(board), end="")
        for line in summary.overview_lines(info):
            print(line, file=sys.stderr)
    else:
        print(summary.summary_text(info, board), end="")


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
    _add_sheet(sub)
    _add_standin(sub)
    _add_summary(sub)
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


def _add_sheet(sub) -> None:
    sheet = sub.add_parser(
        "sheet",
        help="write the runs sheet of a published dataset from its folder",
        description="Read a dataset folder as published and write its runs sheet (one row per "
        "subject, story and run; see docs/datasets.md), then print what was found, what was "
        "excluded and why. Nothing is written when the folder has a fault: the error names the "
        "file and the fix.",
    )
    sheet.add_argument("dataset", choices=("ds003020", "narratives", "alice", "fmriprep"))
    sheet.add_argument("root", help="the dataset's root folder (the config's bids_root)")
    sheet.add_argument(
        "-o", "--output", default="runs.tsv", help="runs sheet to write (default: %(default)s)"
    )
    _add_sheet_options(sheet)
    sheet.set_defaults(func=_sheet)


def _add_sheet_options(sheet) -> None:
    """The options of ``brainshape sheet`` for one dataset or another."""
    lebel = sheet.add_argument_group("ds003020")
    lebel.add_argument(
        "--test-story",
        default=None,
        help="story held out as the fixed test set; '' for none (default: wheretheressmoke)",
    )
    lebel.add_argument(
        "--tr",
        type=float,
        default=None,
        help="seconds between rows; the offset follows it (default: 2.0, as the reference code "
        "simulates; its TR files average 2.0045: docs/datasets.md)",
    )
    lebel.add_argument(
        "--labels",
        default=None,
        help="per-subject column table (column, roi, hemisphere), relative to ROOT, with "
        "{subject} (e.g. rois/{subject}.tsv); without it each response is one target set",
    )
    sheet.add_argument(
        "--tr-overrides-header",
        action="store_true",
        help="narratives, alice, fmriprep: where an image header's TR and its sidecar's differ "
        "by more than 2%%, take the sidecar's (set datasets.<name>.tr_overrides_header: true in "
        "the config too)",
    )
    bids = sheet.add_argument_group("narratives and fmriprep")
    bids.add_argument(
        "--without-scan-exclude",
        action="store_true",
        help="narratives: proceed without code/scan_exclude.json (the authors' list of scans "
        "to leave out), excluding none of them",
    )
    bids.add_argument("--task", action="append", help="keep only this task (repeatable)")
    bids.add_argument(
        "--space", default=None, help="the space- entity (narratives: MNI152NLin2009cAsym)"
    )
    bids.add_argument(
        "--res", default=None, help="fmriprep: the res- entity, where runs have several"
    )
    bids.add_argument(
        "--fmriprep-dir",
        default=None,
        help="the fMRIPrep derivatives folder, relative to ROOT (default: derivatives/fmriprep)",
    )
    bids.add_argument(
        "--words",
        default=None,
        help="fmriprep: word timings per story, relative to ROOT, with {story} (default: "
        "stimuli/{story}/align.json)",
    )
    bids.add_argument(
        "--words-format",
        default=None,
        choices=("gentle", "textgrid", "events", "annotations"),
        help="fmriprep: format of the word timings (default: gentle)",
    )
    bids.add_argument(
        "--tier", default=None, help="fmriprep: TextGrid tier, by name or position (default: words)"
    )
    bids.add_argument(
        "--onset-from-events",
        action="store_true",
        help="fmriprep: word time 0 is the first row's onset of each run's events.tsv",
    )
    alice = sheet.add_argument_group("alice")
    alice.add_argument(
        "--onset",
        action="append",
        metavar="SUBJECT=SECONDS",
        help="audio onset (s into the scan) of a subject whose events.tsv says n/a (repeatable)",
    )


def _add_standin(sub) -> None:
    standin = sub.add_parser(
        "standin",
        help="write a small stand-in of a published dataset, with planted signal",
        description="Write a dataset with the layout of ds003020, Narratives or Alice as "
        "published, a few subjects and stories, and signal planted from layer 2 of tiny-gpt2 "
        "at the dataset's real offset (standin/ground_truth.json says what and where).",
    )
    standin.add_argument("dataset", choices=("ds003020", "narratives", "alice"))
    standin.add_argument("dir", help="output folder (new or empty)")
    standin.add_argument(
        "--registry",
        default="config/models.demo.yaml",
        help="registry holding tiny-gpt2 (default: %(default)s)",
    )
    standin.add_argument(
        "--model-root",
        default=schema_default("model_root"),
        help="where tiny-gpt2 is prepared or found (default: %(default)s)",
    )
    standin.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    standin.set_defaults(func=_standin)


def _add_summary(sub) -> None:
    summary = sub.add_parser(
        "summary",
        help="print a dataset's study summary and leaderboard",
        description="What was run on a dataset and the leaderboard of its model variants (each "
        "variant's best layer chosen out of sample and its score per ROI x hemisphere, with "
        "intervals over subjects, the score over the noise ceiling, and the excess over the "
        "untrained twin and the baselines): the table of the report's summary page, read from "
        "the dataset's results folder.",
        epilog="example: brainshape summary ./results/demo --tsv > leaderboard.tsv",
    )
    summary.add_argument("results", help="the dataset's results folder (results/<dataset>)")
    summary.add_argument(
        "--tsv", action="store_true", help="print the leaderboard's numbers, tab-separated"
    )
    summary.set_defaults(func=_summary)


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
