"""Checks made when the workflow is planned, before any job runs.

The schemas catch wrong keys and types (:mod:`brainshape.config`); these catch what only the
study as a whole, or its input files, can tell: missing inputs, encode jobs that cannot fit the
GPUs they ask for. Each failure is one :class:`BrainshapeError` naming the key or file and the
fix, raised while ``snakemake -n`` plans, not hours later in a job.
"""

from __future__ import annotations

from pathlib import Path

from brainshape.errors import BrainshapeError
from brainshape.sizing import JobSizing
from brainshape.study import Study


def check_study(study: Study, sizing: JobSizing) -> None:
    """Every planning-time check of ``study``, in order; the first failure is raised."""
    check_published_scores(study)
    for ds in study.datasets:
        if not study.is_demo(ds):
            check_dataset_inputs(study, ds)
    if study.config["encoding"]["gpus"]:
        for ds in study.datasets:
            for model in study.models():
                check_encode_gpu(sizing, ds, model)


def check_published_scores(study: Study) -> None:
    published = study.published_scores()
    if published is not None and not published.is_file():
        raise BrainshapeError(
            f"{study.source}: regressions.published_scores {published} does not exist; give "
            "a CSV with columns model, roi, hemisphere, score, or null for the pipeline's"
            " brainscores"
        )


def check_dataset_inputs(study: Study, ds: str) -> None:
    """The dataset's root, runs sheet, word files, every run's files and the atlas exist."""
    root = study.root(ds)
    if not root.is_dir():
        raise BrainshapeError(
            f"{study.source}: datasets.{ds}.bids_root {root} does not "
            "exist; point it at the BIDS dataset"
        )
    wanted: list[Path] = [study.word_file(ds, s) for s in study.stories(ds)]
    wanted += study.input_files(ds)
    if study.needs_atlas(ds):
        wanted += list(study.atlas(ds).values())
    missing = [p for p in dict.fromkeys(wanted) if not p.exists()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        where = (
            f"the runs sheet {study.dataset(ds)['runs']}"
            if study.dataset(ds).get("runs")
            else f"bids_root, fmriprep_dir, space, subjects and stories in {study.source}"
        )
        raise BrainshapeError(
            f"datasets.{ds}: {len(missing)} input file(s) missing: {shown}{more}. Check {where}"
        )


def check_encode_gpu(sizing: JobSizing, ds: str, model: str, group: str | None = None) -> None:
    """Refuse an encode job whose float32 arrays exceed one GPU."""
    if not sizing.encode_gpus(model):
        return
    need, usable = sizing.encode_gpu_bytes(ds, model, group)
    if need > usable:
        gpu = sizing.gpu()
        raise BrainshapeError(
            f"{sizing.study.source}: an encode job of model '{model}' on datasets.{ds} needs "
            f"about {need / 2**30:.1f} GiB on its GPU, more than a {gpu.memory_gib:g} GiB "
            f"gpu.type holds; lower encoding.target_chunk or encoding.group_size, or set "
            "encoding.gpus to 0"
        )
