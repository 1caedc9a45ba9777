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


def check_encoding(study: Study) -> None:
    delays = list(study.config["encoding"]["delays"])
    if delays != sorted(delays):
        raise BrainshapeError(
            f"{study.source}: encoding.delays {delays} must be in increasing order; write "
            f"{sorted(delays)}"
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
    """The TR of one run: the header's, unless the sheet or config gives one. A given TR that
    disagrees with the header's is an error unless ``tr_overrides_header`` says so."""
    given = row.tr if row.tr is not None else config_tr
    if given is None:
        if header_tr is None:
            raise BrainshapeError(
                f"{path} states no TR in its header; give it in the runs sheet's tr column (or "
                f"datasets.{ds}.tr)"
            )
        return header_tr
    override = study.dataset(ds)["tr_overrides_header"]
    if header_tr is not None and abs(header_tr - given) > 0.01 * given and not override:
        raise BrainshapeError(
            f"{path}: its header says TR {header_tr:g} s but the config (or runs sheet) says "
            f"{given:g} s; remove the configured tr to use the header's, or, if the header is "
            f"wrong, set datasets.{ds}.tr_overrides_header: true"
        )
    return float(given)


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
