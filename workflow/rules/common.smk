# Config validation, the study, input functions and resources. Rule files hold rules only.
#
# Paths: the rule that writes a file spells its path, once; everything else refers to it as
# rules.<name>.output.<key> and fills the wildcards here (expand, format). The library knows
# which subjects, stories, models and variants exist (brainshape.study), what each job computes
# with (brainshape.params) and how large it is (brainshape.sizing), but no output path.
import sys
from pathlib import Path

from brainshape import crossfit
from brainshape import params as P
from brainshape.checks import check_study
from brainshape.codestamp import code_stamp
from brainshape.config import check_planted, load_registry_dict, validate
from brainshape.errors import BrainshapeError
from brainshape.exclusions import decided, for_subjects
from brainshape.qc import Thresholds, planned_exclusions
from brainshape.sizing import JobSizing
from brainshape.study import Study

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"

try:
    _source = ", ".join(str(p) for p in workflow.configfiles) or "config"
    validate(config, SCHEMAS / "config.schema.yaml", source=_source)
    REGISTRY = load_registry_dict(config["registry"], SCHEMAS / "models.schema.yaml")
    check_planted(config, REGISTRY, source=_source)
    STUDY = Study(config, REGISTRY, source=_source, schemas=SCHEMAS)
    SIZING = JobSizing(STUDY)
    # The checks read every run's header and word timings: once, where the workflow is planned,
    # not again in each job that a cluster executor starts from this Snakefile.
    if workflow.is_main_process:
        check_study(STUDY, SIZING)
except BrainshapeError as _error:
    # One line for the user instead of a traceback through the Snakefile.
    raise SystemExit(f"brainshape: {_error}")


wildcard_constraints:
    dataset="[A-Za-z0-9]+",
    model="[a-z0-9][a-z0-9.-]*",
    variant="[a-z0-9][a-z0-9-]*",
    subject="[A-Za-z0-9]+",
    group="g[0-9]+",
    half="A|B",
    baseline="[a-z_]+",


def code_version(script):
    """Hash of the brainshape modules that workflow/scripts/<script> imports (a params entry)."""
    return code_stamp(Path(workflow.basedir) / "workflow" / "scripts" / script)


def fill(path, wildcards):
    """Another rule's output ``path`` with this job's wildcards filled in."""
    return str(path).format(**dict(wildcards.items()))


# --- what rule all asks for -------------------------------------------------------------------


def all_targets():
    """Every dataset's tables and figures. Evaluated once the rules exist, so it also makes
    the planning-time checks that need their paths."""
    try:
        for ds in STUDY.datasets:
            if STUDY.is_demo(ds):
                P.demo(STUDY, ds, demo_dir(ds), config["model_root"])
    except BrainshapeError as error:
        raise SystemExit(f"brainshape: {error}")
    targets = []
    for ds in STUDY.datasets:
        targets.append(rules.qc.output[0].format(dataset=ds))
        targets += [path.format(dataset=ds) for path in rules.plot_qc.output]
        targets.append(rules.brainscores.output[0].format(dataset=ds))
        targets += expand(
            rules.plot_brainscores.output[0], dataset=ds, model=STUDY.models()
        )
        targets.append(rules.topology_table.output[0].format(dataset=ds))
        targets += expand(
            rules.plot_topology.output[0], dataset=ds, model=STUDY.models()
        )
        if STUDY.regressions_planned():
            targets.append(rules.regressions.output.regressions.format(dataset=ds))
            targets += [
                path.format(dataset=ds) for path in rules.plot_regressions.output
            ]
        targets += maps_dirs(ds)
        if STUDY.needs_atlas(ds):
            targets += expand(
                rules.plot_maps.output[0], dataset=ds, model=STUDY.models()
            )
            if config["encoding"]["ceiling"]:
                targets.append(rules.plot_ceiling_map.output[0].format(dataset=ds))
        targets += [path.format(dataset=ds) for path in rules.summary.output]
    return targets


# --- files of other rules, wildcards filled ----------------------------------------------------


def demo_dir(ds):
    return rules.demo_data.output[0].format(dataset=ds)


def dataset_files(ds, files):
    """A demo dataset is one directory, the output of demo_data; depend on it, not its files."""
    return [demo_dir(ds)] if STUDY.is_demo(ds) else [str(f) for f in files]


def prepared_dir(model):
    """The folder rule prepare_model writes for a model built here; None for hub models."""
    if STUDY.is_prepared(model):
        return rules.prepare_model.output[0].format(model=model)
    return None


def quantized_dir(model, variant):
    """The folder rule quantize_model writes for a variant quantised here; else None."""
    if STUDY.is_quantized_here(model, variant):
        return rules.quantize_model.output[0].format(model=model, variant=variant)
    return None


def local_hub_dir(model):
    """A downloaded copy of a hub model where prepared models live (hf download --local-dir),
    used instead of the Hugging Face cache; else None."""
    path = Path(rules.prepare_model.output[0].format(model=model))
    if not STUDY.is_prepared(model) and (path / "config.json").is_file():
        # Read, not made, by the workflow: a copy refreshed in place reruns nothing by itself
        # (the registry's revision is in the job's params).
        return ancient(str(path))
    return None


def qc_table(ds):
    return rules.qc.output[0].format(dataset=ds)


_QC_EXCLUSIONS = {}


def qc_exclusions(ds):
    """The runs the QC excludes (fmri.qc.exclude) while the workflow is planned: the measures
    of its table under the current thresholds; none when the config excludes nothing or the
    table is not written yet. The jobs that read subject folders apply them from their params
    (brainshape.exclusions), so a changed decision reruns exactly those it touches."""
    checks = P.qc_exclude(STUDY)
    if not checks:
        return {}
    if ds not in _QC_EXCLUSIONS:
        # Decided once per process, where the run is planned (the QC job of the same run may
        # remove and rewrite the table meanwhile); a cluster job's process reads that decision.
        thresholds = Thresholds.from_config(P.qc_thresholds(STUDY))
        record = Path(".snakemake", "brainshape", f"qc-exclusions-{ds}.json")
        try:
            _QC_EXCLUSIONS[ds] = decided(
                qc_table(ds),
                record,
                lambda table: planned_exclusions(table, thresholds, checks),
                main=workflow.is_main_process,
            )
        except BrainshapeError as error:
            raise SystemExit(f"brainshape: {error}")
        if workflow.is_main_process:
            for sub, stories in _QC_EXCLUSIONS[ds].items():
                for story, why in stories.items():
                    print(
                        f"brainshape: QC excludes sub-{sub} story {story} ({why})",
                        file=sys.stderr,
                    )
    return _QC_EXCLUSIONS[ds]


def qc_exclusion_params(ds, subjects=None):
    """The runs a job that reads subject folders leaves out: the QC exclusions of its subjects
    as planned (subject -> story -> reason); empty when none, so that enabling fmri.qc.exclude
    reruns only the jobs whose subjects lose a run."""
    subjects = STUDY.subjects(ds) if subjects is None else subjects
    return for_subjects(qc_exclusions(ds), subjects)


def fmri_dirs(ds, subjects=None):
    subjects = STUDY.subjects(ds) if subjects is None else subjects
    return expand(rules.fmri.output[0], dataset=ds, subject=subjects)


def maps_dirs(ds, model=None):
    """The maps folders of every model variant of ``ds`` (or of one model's variants)."""
    return [
        rules.maps.output[0].format(dataset=ds, model=m, variant=v)
        for m, v in STUDY.model_variants()
        if model is None or m == model
    ]


def grid_files(ds):
    """The images whose headers give the subjects' grids, and the atlas ROI means are painted
    with: read by the maps jobs (a demo dataset: its folder)."""
    grids = [STUDY.grid_file(ds, s) for s in STUDY.subjects(ds)]
    files = [g for g in grids if g is not None]
    if files:
        files += list(STUDY.atlas(ds).values())
    return dataset_files(ds, list(dict.fromkeys(files)))


# --- input functions (named, so rules stay declarative) -----------------------------------------


def demo_inputs(wildcards):
    """Prepared models needed to plant the demo signal."""
    planted = sorted({p["model"] for p in config["demo"]["planted"]})
    return [d for d in map(prepared_dir, planted) if d is not None]


def stimuli_inputs(wildcards):
    ds = wildcards.dataset
    return dataset_files(
        ds, [p for s in STUDY.stories(ds) for p in STUDY.word_inputs(ds, s)]
    )


def features_inputs(wildcards):
    model, variant = wildcards.model, wildcards.variant
    return {
        "words": fill(rules.words.output[0], wildcards),
        "model": [
            d
            for d in (
                prepared_dir(model),
                quantized_dir(model, variant),
                local_hub_dir(model),
            )
            if d is not None
        ],
    }


def features_conda_env(wildcards):
    env = STUDY.kind(wildcards.model, wildcards.variant).environment
    return str(Path(workflow.basedir) / "workflow" / "envs" / env)


def quantize_inputs(wildcards):
    return [d for d in (prepared_dir(wildcards.model),) if d is not None]


def fmri_inputs(wildcards):
    ds, sub = wildcards.dataset, wildcards.subject
    files = STUDY.input_files(ds, sub)
    if STUDY.needs_atlas(ds):
        files += list(STUDY.atlas(ds).values())
    return dataset_files(ds, files)


def encode_inputs(wildcards):
    ds = wildcards.dataset
    return {
        "words": fill(rules.words.output[0], wildcards),
        "features": fill(rules.features.output[0], wildcards),
        "fmri": fmri_dirs(ds, STUDY.group_subjects(ds, wildcards.group)),
    }


def encode_half_inputs(wildcards):
    ds, half = wildcards.dataset, wildcards.half
    return {
        "words": fill(rules.words.output[0], wildcards),
        "features": fill(rules.features.output[0], wildcards),
        "fmri": fmri_dirs(ds, STUDY.crossfit_group_subjects(ds, half, wildcards.group)),
    }


def baseline_inputs(wildcards):
    ds = wildcards.dataset
    return {
        "words": fill(rules.words.output[0], wildcards),
        "fmri": fmri_dirs(ds, STUDY.group_subjects(ds, wildcards.group)),
    }


def ceiling_inputs(wildcards):
    return fmri_dirs(wildcards.dataset)


def qc_inputs(wildcards):
    ds = wildcards.dataset
    return {
        "fmri": fmri_dirs(ds),
        "data": dataset_files(ds, STUDY.input_files(ds)),
    }


def brainscores_inputs(wildcards):
    ds = wildcards.dataset
    return {
        "encoding": [
            rules.encode.output[0].format(dataset=ds, model=m, variant=v, group=g)
            for m, v in STUDY.model_variants()
            for g in STUDY.subject_groups(ds)
        ],
        "baselines": baseline_files(ds),
        "ceiling": ceiling_files(ds),
    }


def baseline_files(ds):
    """Every baseline table of ``ds`` (each baseline, each subject group)."""
    return expand(
        rules.baseline.output[0],
        dataset=ds,
        baseline=config["encoding"]["baselines"],
        group=list(STUDY.subject_groups(ds)),
    )


def ceiling_files(ds):
    """The noise ceiling's table of ``ds``, where ``encoding.ceiling`` asks for it."""
    if not config["encoding"]["ceiling"]:
        return []
    return [rules.ceiling.output[0].format(dataset=ds)]


def plot_inputs(wildcards):
    return {
        "scores": fill(rules.brainscores.output[0], wildcards),
        "ceiling": ceiling_files(wildcards.dataset),
    }


def maps_inputs(wildcards):
    ds = wildcards.dataset
    return {
        "encoding": [
            rules.encode.output[0].format(
                dataset=ds, model=wildcards.model, variant=wildcards.variant, group=g
            )
            for g in STUDY.subject_groups(ds)
        ],
        "baselines": baseline_files(ds),
        "fmri": fmri_dirs(ds),
        "grids": grid_files(ds),
    }


def ceiling_map_inputs(wildcards):
    ds = wildcards.dataset
    return {
        "ceiling": rules.ceiling.output[0].format(dataset=ds),
        "fmri": fmri_dirs(ds),
        "grids": grid_files(ds),
    }


def plot_maps_inputs(wildcards):
    """Every variant's maps (one colour scale for the dataset), and this model's in order."""
    ds = wildcards.dataset
    return {"all": maps_dirs(ds), "model": maps_dirs(ds, wildcards.model)}


def summary_inputs(wildcards):
    ds = wildcards.dataset
    planned = STUDY.regressions_planned()
    figures = {
        name: [path.format(dataset=ds)] if planned else []
        for name, path in rules.plot_regressions.output.items()
    }
    return {
        "scores": fill(rules.brainscores.output[0], wildcards),
        "ceiling": ceiling_files(ds),
        "words": fill(rules.words.output[0], wildcards),
        "fmri": fmri_dirs(ds),
        **figures,
    }


def topology_timebase_inputs(wildcards):
    # The time base depends on the subjects' runs, not on their data: a replaced derivative
    # (newer file, same runs) must not recompute every layer's diagrams. A new or removed
    # subject still reruns it (the set of inputs changes); compute_brain checks that the runs
    # still match.
    return [ancient(d) for d in fmri_dirs(wildcards.dataset)]


def topology_brain_inputs(wildcards):
    return {
        "fmri": fmri_dirs(wildcards.dataset),
        "time_base": fill(rules.topology_timebase.output[0], wildcards),
    }


def layer_diagrams_inputs(wildcards):
    return {
        "words": fill(rules.words.output[0], wildcards),
        "features": fill(rules.features.output[0], wildcards),
        "time_base": fill(rules.topology_timebase.output[0], wildcards),
    }


def topology_pairs_inputs(wildcards):
    return {
        "layers": fill(rules.layer_diagrams.output[0], wildcards),
        "brain": fill(rules.topology_brain.output[0], wildcards),
        "words": fill(rules.words.output[0], wildcards),
        "features": fill(rules.features.output[0], wildcards),
        "time_base": fill(rules.topology_timebase.output[0], wildcards),
    }


def topology_table_inputs(wildcards):
    ds, variants = wildcards.dataset, STUDY.model_variants()
    pairs = rules.topology_pairs.output
    return {
        "tables": [
            pairs.table.format(dataset=ds, model=m, variant=v) for m, v in variants
        ],
        "null_max": [
            pairs.null_max.format(dataset=ds, model=m, variant=v) for m, v in variants
        ],
    }


def regression_scores(ds):
    """The scores to explain: a published CSV, or the pipeline's brainscores."""
    published = STUDY.published_scores()
    return (
        str(published) if published else rules.brainscores.output[0].format(dataset=ds)
    )


def crossfit_planned(ds):
    """Whether the regressions of dataset ``ds`` pair halves of its stories crosswise."""
    r = config["regressions"]
    if STUDY.published_scores() is not None:
        return False
    heard = {sub: STUDY.subject_stories(ds, sub) for sub in STUDY.subjects(ds)}
    stories, least = STUDY.stories(ds), r["crossfit_min_stories"]
    return crossfit.planned(r["crossfit"], stories, least, heard)


def encode_half_outputs(wildcards):
    ds, half = wildcards.dataset, wildcards.half
    return [
        rules.encode_half.output[0].format(
            dataset=ds, half=half, model=m, variant=v, group=g
        )
        for m, v in STUDY.model_variants()
        for g in STUDY.crossfit_groups(ds, half)
    ]


def topology_pairs_half_outputs(wildcards):
    ds, half = wildcards.dataset, wildcards.half
    return [
        rules.topology_pairs_half.output[0].format(
            dataset=ds, half=half, model=m, variant=v
        )
        for m, v in STUDY.model_variants()
    ]


def regressions_inputs(wildcards):
    ds = wildcards.dataset
    inputs = {
        "topology": fill(rules.topology_table.output[0], wildcards),
        "scores": regression_scores(ds),
    }
    if crossfit_planned(ds):
        halves = crossfit.HALVES
        inputs["half_topology"] = [
            rules.topology_table_half.output[0].format(dataset=ds, half=h)
            for h in halves
        ]
        inputs["half_scores"] = [
            rules.brainscores_half.output[0].format(dataset=ds, half=h) for h in halves
        ]
    return inputs


def plot_regressions_inputs(wildcards):
    return {
        "regressions": fill(rules.regressions.output.regressions, wildcards),
        "contrasts": fill(rules.regressions.output.contrasts, wildcards),
        "scores": regression_scores(wildcards.dataset),
    }


# --- params (what each job computes with: brainshape.params) -----------------------------------


def demo_params(wildcards):
    ds = wildcards.dataset
    return P.demo(STUDY, ds, demo_dir(ds), config["model_root"])


def stimuli_params(wildcards):
    return P.words(STUDY, wildcards.dataset)


def prepare_model_params(wildcards):
    return P.prepare_model(STUDY, wildcards.model)


def quantize_params(wildcards):
    return P.quantize(
        STUDY, wildcards.model, wildcards.variant, prepared_dir(wildcards.model)
    )


def features_params(wildcards):
    m, v = wildcards.model, wildcards.variant
    folder = quantized_dir(m, v) or prepared_dir(m) or local_hub_dir(m) or ""
    return P.features(STUDY, wildcards.dataset, m, v, str(folder))


def fmri_params(wildcards):
    return P.fmri(STUDY, wildcards.dataset, wildcards.subject)


def encode_params(wildcards):
    return P.encode(STUDY, wildcards.dataset, wildcards.group)


def group_exclusions(wildcards):
    """QC exclusions of an encode or baseline job's subject group."""
    ds = wildcards.dataset
    return qc_exclusion_params(ds, STUDY.group_subjects(ds, wildcards.group))


def half_group_exclusions(wildcards):
    """QC exclusions of a cross-fitting half's encode job's subject group."""
    ds = wildcards.dataset
    subjects = STUDY.crossfit_group_subjects(ds, wildcards.half, wildcards.group)
    return qc_exclusion_params(ds, subjects)


def dataset_exclusions(wildcards):
    """QC exclusions of a job that reads every subject of its dataset."""
    return qc_exclusion_params(wildcards.dataset)


def qc_params(wildcards):
    return P.qc(STUDY, wildcards.dataset)


def plot_qc_params(wildcards):
    return P.plot_qc(STUDY, wildcards.dataset)


def baseline_params(wildcards):
    return P.baseline(STUDY, wildcards.dataset, wildcards.baseline, wildcards.group)


def topology_timebase_params(wildcards):
    return P.topology_timebase(STUDY, wildcards.dataset)


def topology_brain_params(wildcards):
    return P.topology_brain(STUDY, wildcards.dataset)


def layer_diagrams_params(wildcards):
    return P.layer_diagrams(STUDY, wildcards.dataset)


def topology_pairs_params(wildcards):
    return P.topology_pairs(STUDY, wildcards.dataset)


def topology_pairs_half_params(wildcards):
    return P.topology_pairs(STUDY, wildcards.dataset, wildcards.half)


def encode_half_params(wildcards):
    return P.encode_half(STUDY, wildcards.dataset, wildcards.group, wildcards.half)


def regressions_params(wildcards):
    folders = {m: prepared_dir(m) or "" for m in STUDY.models()}
    params = P.regressions(STUDY, wildcards.dataset, folders)
    return {**params, "crossfit": crossfit_planned(wildcards.dataset)}


def plot_regressions_params(wildcards):
    return regressions_params(wildcards)


def counts_params(wildcards):
    """The n a dataset's figures state (subjects, stories)."""
    return P.counts(STUDY, wildcards.dataset)


def maps_params(wildcards):
    return P.maps(STUDY, wildcards.dataset)


def plot_maps_params(wildcards):
    return P.plot_maps(STUDY, wildcards.dataset, wildcards.model)


def summary_params(wildcards):
    return P.summary(STUDY, wildcards.dataset)


# --- resources (brainshape.sizing); memory and runtime grow with each retry ---------------------


def features_mem_mb(wildcards, attempt):
    return SIZING.features_mem_mb(wildcards.model, wildcards.variant) * attempt


def features_runtime(wildcards, attempt):
    m, v = wildcards.model, wildcards.variant
    return SIZING.features_runtime_min(wildcards.dataset, m, v) * attempt


def features_gpus(wildcards):
    return SIZING.features_gpus(wildcards.model, wildcards.variant)


def quantize_gpus(wildcards):
    return SIZING.quantize_gpus(wildcards.model)


def quantize_mem_mb(wildcards, attempt):
    return SIZING.quantize_mem_mb(wildcards.model) * attempt


def quantize_runtime(wildcards, attempt):
    return SIZING.quantize_runtime_min(wildcards.model) * attempt


def encode_mem_mb(wildcards, attempt):
    """Host memory from the shape of the job: TRs, hidden x delays, stacked targets."""
    ds, m, g = wildcards.dataset, wildcards.model, wildcards.group
    return SIZING.encode_mem_mb(ds, m, g) * attempt


def encode_runtime(wildcards, attempt):
    """Minutes from the ridge engine's FLOPs at the CPU (or, with encoding.gpus, GPU) rate."""
    ds, m, g = wildcards.dataset, wildcards.model, wildcards.group
    return SIZING.encode_runtime_min(ds, m, g) * attempt


def topology_pairs_half_runtime(wildcards, attempt):
    ds = wildcards.dataset
    stories = crossfit.half_stories(STUDY.stories(ds), wildcards.half)
    return SIZING.topology_pairs_runtime_min(ds, wildcards.model, stories) * attempt


def encode_half_mem_mb(wildcards, attempt):
    """Host memory of an encode job of one half: its group, a sample of the voxels, no null."""
    w = wildcards
    return SIZING.encode_half_mem_mb(w.dataset, w.model, w.group, w.half) * attempt


def encode_half_runtime(wildcards, attempt):
    """Minutes of an encode job of one half: its group, a sample of the voxels, no null."""
    w = wildcards
    return SIZING.encode_half_runtime_min(w.dataset, w.model, w.group, w.half) * attempt


def encode_gpus(wildcards):
    return SIZING.encode_gpus(wildcards.model)


def model_priority(wildcards):
    """Jobs of larger models first where cores are few (JobSizing.priority)."""
    return SIZING.priority(wildcards.model)


def encode_threads(wildcards):
    return config["encoding"]["threads"]


def baseline_mem_mb(wildcards, attempt):
    return SIZING.encode_mem_mb(wildcards.dataset, None, wildcards.group) * attempt


def baseline_runtime(wildcards, attempt):
    return SIZING.encode_runtime_min(wildcards.dataset, None, wildcards.group) * attempt


def qc_mem_mb(wildcards, attempt):
    return SIZING.qc_mem_mb(wildcards.dataset) * attempt


def qc_runtime(wildcards, attempt):
    return SIZING.qc_runtime_min(wildcards.dataset) * attempt


def layer_diagrams_mem_mb(wildcards, attempt):
    return SIZING.layer_diagrams_mem_mb(wildcards.dataset, wildcards.model) * attempt


def maps_mem_mb(wildcards, attempt):
    return SIZING.maps_mem_mb(wildcards.dataset, wildcards.model) * attempt


def topology_pairs_mem_mb(wildcards, attempt):
    return SIZING.topology_pairs_mem_mb(wildcards.dataset, wildcards.model) * attempt


def topology_pairs_runtime(wildcards, attempt):
    minutes = SIZING.topology_pairs_runtime_min(wildcards.dataset, wildcards.model)
    return minutes * attempt


def plot_topology_params(wildcards):
    return P.plot_topology(STUDY, wildcards.dataset)
