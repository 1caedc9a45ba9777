"""Checks made when the workflow is planned, before any job runs.

The schemas catch wrong keys and types (:mod:`brainshape.config`); these catch what only the
study as a whole, or its input files, can tell: missing inputs, encode jobs that cannot fit the
GPUs they ask for. Each failure is one :class:`BrainshapeError` naming the key or file and the
fix, raised while ``snakemake -n`` plans, not hours later in a job.
"""

from __future__ import annotations

from pathlib import Path

from brainshape import responses
from brainshape.clock import scan_end
from brainshape.errors import BrainshapeError
from brainshape.sizing import JobSizing
from brainshape.study import Study


def placeholder(path: Path) -> bool:
    """An empty file stands in for an input to plan a study before its data exist (the
    checks that read files skip it; its jobs would fail on it)."""
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def check_study(study: Study, sizing: JobSizing) -> None:
    """Every planning-time check of ``study``, in order; the first failure is raised.

    The checks that read files (headers, label and confounds tables, word timings) skip empty
    placeholder files (:func:`placeholder`), so a study can be planned before its data exist.
    """
    from brainshape.topology import pairs

    check_published_scores(study)
    check_encoding(study)
    pairs.check_settings(study.config["topology"], study.config["fmri"]["targets"])
    for ds in study.datasets:
        check_story_folds(study, ds)
        if not study.is_demo(ds):
            check_dataset_inputs(study, ds)
            check_rois(study, ds)
            check_confounds(study, ds)
            check_runs_cover_words(study, ds)
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
    wanted: list[Path] = [p for s in study.stories(ds) for p in study.word_inputs(ds, s)]
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


def check_encoding(study: Study) -> None:
    delays = list(study.config["encoding"]["delays"])
    if delays != sorted(delays):
        raise BrainshapeError(
            f"{study.source}: encoding.delays {delays} must be in increasing order; write "
            f"{sorted(delays)}"
        )


def check_story_folds(study: Study, ds: str) -> None:
    """With ``encoding.folds: stories`` every subject needs 3 stories (one held out, two to
    choose alphas), or 2 beside a fixed test story (``split: test``): the encode and baseline
    jobs would refuse the subject after the GPU jobs ran; refuse it here."""
    if study.config["encoding"]["folds"] != "stories":
        return
    runs = study.runs(ds)
    short = []
    for sub, rows in runs.groupby("subject", sort=False):
        train = list(dict.fromkeys(rows.loc[rows["split"] != "test", "story"]))
        test = list(dict.fromkeys(rows.loc[rows["split"] == "test", "story"]))
        if len(train) < (2 if test else 3):
            heard = ", ".join(train + [f"{t} (test)" for t in test])
            short.append(f"{sub} ({heard})")
    if short:
        raise BrainshapeError(
            f"{study.source}: encoding.folds: stories needs 3 stories per subject (or 2 beside "
            f"a test story), and datasets.{ds} has {len(short)} subject(s) with fewer: "
            f"{'; '.join(short[:5])}{' and more' if len(short) > 5 else ''}; set encoding.folds: "
            f"blocks, or leave them out (datasets.{ds}.subjects, or exclude their rows in the "
            "runs sheet)"
        )


def check_rois(study: Study, ds: str) -> None:
    """``fmri.rois`` names labels of the atlas (its labels TSV) or of the runs' label tables."""
    wanted = study.config["fmri"]["rois"]
    if not wanted:
        return
    names: set[str] = set()
    tables = []
    if study.needs_atlas(ds):
        tables.append((study.atlas(ds)["labels"], "name"))
    runs = study.runs(ds)
    tables += [(study.under_root(ds, t), "roi") for t in runs["labels"].dropna().unique()]
    if not tables:
        return
    for path, column in tables:
        if placeholder(path):
            return
        table = _read_tsv(path, "labels table")
        if column not in table.columns:
            raise BrainshapeError(
                f"labels table {path} has no column '{column}' (it has: "
                f"{', '.join(map(str, table.columns))})"
            )
        names |= set(map(str, table[column]))
    unknown = [r for r in wanted if r not in names]
    if unknown:
        raise BrainshapeError(
            f"{study.source}: fmri.rois lists {', '.join(unknown)}, which no label of datasets."
            f"{ds} has ({', '.join(str(t) for t, _ in tables[:2])}: {', '.join(sorted(names))}); "
            "fix the names or set fmri.rois to null for every label"
        )


def check_confounds(study: Study, ds: str) -> None:
    """Every confounds table has the columns ``fmri.confounds`` asks for (its header only)."""
    wanted = list(study.config["fmri"]["confounds"])
    runs = study.runs(ds)
    tables = runs.loc[runs["format"] == "fmriprep", "confounds"].dropna().unique()
    for table in tables:
        path = study.under_root(ds, table)
        if placeholder(path):
            continue
        try:
            with open(path) as handle:
                header = handle.readline().rstrip("\n").split("\t")
        except (OSError, UnicodeDecodeError) as error:
            raise BrainshapeError(f"cannot read confounds table {path}: {error}") from None
        missing = [c for c in wanted if c not in header]
        if missing:
            raise BrainshapeError(
                f"confounds table {path} lacks column(s) {', '.join(missing)} that "
                f"fmri.confounds asks for (it has: {', '.join(header[:12])}"
                f"{', ...' if len(header) > 12 else ''}); fix fmri.confounds in {study.source}"
            )


def check_runs_cover_words(study: Study, ds: str) -> None:
    """Every run lasts as long as its story's words, from the response files' headers (and a
    TR the config or sheet gives agrees with the header's): before any feature is extracted."""
    from brainshape import stimuli

    ends = {}
    for story, source in study.word_sources(ds).items():
        if placeholder(Path(source["path"])):
            continue
        options = {"tier": source["tier"]} if source["format"] == "textgrid" else {}
        nonspeech = study.dataset(ds)["words"]["nonspeech"]
        words = stimuli.read_words(source["path"], source["format"], nonspeech=nonspeech, **options)
        ends[story] = float(words["offset"].max())
    config_tr = study.dataset(ds)["tr"]
    for row in study.runs(ds).itertuples():
        path = study.under_root(ds, row.response)
        if row.story not in ends or placeholder(path):
            continue
        found = responses.shape(path, row.format, row.key)
        tr = _run_tr(study, ds, row, found.tr, config_tr, path)
        covered = scan_end(
            {"offset": row.offset, "n_trs": found.rows, "removed_end": row.removed_end, "tr": tr}
        )
        if ends[row.story] > covered + 1e-6:
            raise BrainshapeError(
                f"story {row.story}, sub-{row.subject}: the words run to {ends[row.story]:.1f} s "
                f"but {path} covers word time up to {covered:.1f} s ({found.rows} volumes at TR "
                f"{tr:g} s from offset {row.offset:g} s); check that this is the right response "
                "file, TR and offset for the story"
            )


def _run_tr(study: Study, ds: str, row, header_tr: float | None, config_tr, path) -> float:
    """The TR of one run: an hdf5 response's from the sheet; a NIfTI image's from its header
    and the TR the sheet or config gives (:func:`brainshape.responses.run_tr`)."""
    given = row.tr if row.tr is not None else config_tr
    if row.format == "hdf5":
        return float(given)
    return responses.run_tr(
        path,
        header_tr,
        responses.configured_tr(given),
        overrides_header=study.dataset(ds)["tr_overrides_header"],
        override=f"set datasets.{ds}.tr_overrides_header: true",
        missing=f"give it in the runs sheet's tr column (or datasets.{ds}.tr)",
    )


def _read_tsv(path: Path, what: str):
    import pandas as pd

    try:
        return pd.read_csv(path, sep="\t")
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise BrainshapeError(f"cannot read {what} {path} as TSV ({error})") from None


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
