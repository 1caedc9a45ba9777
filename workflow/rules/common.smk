# Config validation, the model registry, input functions and resources. Rule files hold rules only.
from pathlib import Path

from brainshape.codestamp import code_stamp
from brainshape.config import check_planted, load_registry_dict, validate
from brainshape.errors import BrainshapeError
from brainshape.workflow import Study

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"

try:
    _source = ", ".join(str(p) for p in workflow.configfiles) or "config"
    validate(config, SCHEMAS / "config.schema.yaml", source=_source)
    REGISTRY = load_registry_dict(config["registry"], SCHEMAS / "models.schema.yaml")
    check_planted(config["demo"]["planted"], REGISTRY, source=_source)
    STUDY = Study(config, REGISTRY, source=_source)
    STUDY.check_inputs()
except BrainshapeError as _error:
    # One line for the user instead of a traceback through the Snakefile.
    raise SystemExit(f"brainshape: {_error}")


wildcard_constraints:
    dataset="[A-Za-z0-9]+",
    model="[a-z0-9][a-z0-9.-]*",
    variant="[a-z0-9][a-z0-9-]*",
    subject="[A-Za-z0-9]+",
    group="g[0-9]+",
    baseline="[a-z_]+",


def all_targets():
    return STUDY.all_targets()


# --- input functions (named, so rules stay declarative) -----------------------------------


def demo_inputs(wildcards):
    """Prepared models needed to plant the demo signal."""
    return STUDY.demo_model_dirs(wildcards.dataset)


def demo_params(wildcards):
    return STUDY.demo_params(wildcards.dataset)


def stimuli_inputs(wildcards):
    return STUDY.word_files(wildcards.dataset)


def stimuli_params(wildcards):
    return STUDY.words_params(wildcards.dataset)


def features_inputs(wildcards):
    return {
        "words": f"results/{wildcards.dataset}/words.parquet",
        "model": STUDY.model_dir_input(wildcards.model)
        + STUDY.quantized_dir_input(wildcards.model, wildcards.variant),
    }


def features_conda_env(wildcards):
    env = STUDY.features_env(wildcards.model, wildcards.variant)
    return str(Path(workflow.basedir) / "workflow" / "envs" / env)


def quantize_inputs(wildcards):
    return STUDY.model_dir_input(wildcards.model)


def quantize_params(wildcards):
    return STUDY.quantize_params(wildcards.model, wildcards.variant)


def features_params(wildcards):
    return STUDY.features_params(wildcards.dataset, wildcards.model, wildcards.variant)


def fmri_inputs(wildcards):
    return STUDY.fmri_files(wildcards.dataset, wildcards.subject)


def fmri_params(wildcards):
    return STUDY.fmri_params(wildcards.dataset, wildcards.subject)


def encode_inputs(wildcards):
    return {
        "words": f"results/{wildcards.dataset}/words.parquet",
        "features": f"results/{wildcards.dataset}/features/{wildcards.model}/{wildcards.variant}",
        "fmri": STUDY.group_fmri_dirs(wildcards.dataset, wildcards.group),
    }


def encode_params(wildcards):
    return STUDY.encode_group_params(wildcards.dataset, wildcards.group)


def baseline_inputs(wildcards):
    return {
        "words": f"results/{wildcards.dataset}/words.parquet",
        "fmri": STUDY.fmri_dirs(wildcards.dataset),
    }


def baseline_params(wildcards):
    return {**STUDY.encode_params(wildcards.dataset), "baseline": wildcards.baseline}


def ceiling_inputs(wildcards):
    return STUDY.fmri_dirs(wildcards.dataset)


def brainscores_inputs(wildcards):
    return {
        "encoding": STUDY.encoding_tables(wildcards.dataset),
        "baselines": STUDY.baseline_tables(wildcards.dataset),
        "ceiling": STUDY.ceiling_tables(wildcards.dataset),
    }


def plot_inputs(wildcards):
    return f"results/{wildcards.dataset}/brainscores.parquet"


# --- resources, from the registry ------------------------------------------------------------


def features_mem_mb(wildcards, attempt):
    return STUDY.features_mem_mb(wildcards.model, wildcards.variant) * attempt


def features_runtime(wildcards, attempt):
    return (
        STUDY.features_runtime_min(
            wildcards.dataset, wildcards.model, wildcards.variant
        )
        * attempt
    )


def features_gpus(wildcards):
    return STUDY.features_gpus(wildcards.model, wildcards.variant)


def quantize_gpus(wildcards):
    return STUDY.quantize_gpus(wildcards.model)


def quantize_mem_mb(wildcards, attempt):
    return STUDY.quantize_mem_mb(wildcards.model) * attempt


def quantize_runtime(wildcards, attempt):
    return STUDY.quantize_runtime_min(wildcards.model) * attempt


def encode_mem_mb(wildcards, attempt):
    """Host memory from the shape of the job: TRs, hidden x delays, stacked targets."""
    return (
        STUDY.encode_mem_mb(wildcards.dataset, wildcards.model, wildcards.group)
        * attempt
    )


def encode_runtime(wildcards, attempt):
    """Minutes from the ridge engine's FLOPs at the CPU (or, with encoding.gpus, GPU) rate."""
    return (
        STUDY.encode_runtime_min(wildcards.dataset, wildcards.model, wildcards.group)
        * attempt
    )


def encode_gpus(wildcards):
    return STUDY.encode_gpus(wildcards.model)


def encode_threads(wildcards):
    return STUDY.config["encoding"]["threads"]


def baseline_mem_mb(wildcards, attempt):
    return STUDY.encode_mem_mb(wildcards.dataset, None) * attempt


def baseline_runtime(wildcards, attempt):
    return STUDY.encode_runtime_min(wildcards.dataset, None) * attempt


# --- topology and regressions ----------------------------------------------------------------


def topology_timebase_inputs(wildcards):
    # The time base depends on the subjects' runs, not on their data: a replaced derivative
    # (newer file, same runs) must not recompute every layer's diagrams. A new or removed
    # subject still reruns it (the set of inputs changes); compute_brain checks that the runs
    # still match.
    return [ancient(d) for d in STUDY.fmri_dirs(wildcards.dataset)]


def topology_timebase_params(wildcards):
    return STUDY.topology_timebase_params(wildcards.dataset)


def topology_brain_inputs(wildcards):
    return {
        "fmri": STUDY.fmri_dirs(wildcards.dataset),
        "time_base": f"results/{wildcards.dataset}/topology/timebase.json",
    }


def topology_brain_params(wildcards):
    return STUDY.topology_brain_params(wildcards.dataset)


def layer_diagrams_inputs(wildcards):
    ds = wildcards.dataset
    return {
        "words": f"results/{ds}/words.parquet",
        "features": f"results/{ds}/features/{wildcards.model}/{wildcards.variant}",
        "time_base": f"results/{ds}/topology/timebase.json",
    }


def layer_diagrams_params(wildcards):
    return STUDY.layer_diagrams_params(wildcards.dataset)


def layer_diagrams_mem_mb(wildcards, attempt):
    return STUDY.layer_diagrams_mem_mb(wildcards.dataset, wildcards.model) * attempt


def topology_pairs_inputs(wildcards):
    ds = wildcards.dataset
    return {
        "layers": f"results/{ds}/topology/layers/{wildcards.model}/{wildcards.variant}",
        "brain": f"results/{ds}/topology/brain",
        "words": f"results/{ds}/words.parquet",
        "features": f"results/{ds}/features/{wildcards.model}/{wildcards.variant}",
        "time_base": f"results/{ds}/topology/timebase.json",
    }


def topology_pairs_mem_mb(wildcards, attempt):
    return STUDY.topology_pairs_mem_mb(wildcards.dataset, wildcards.model) * attempt


def topology_pairs_params(wildcards):
    return STUDY.topology_pairs_params(wildcards.dataset)


def topology_table_inputs(wildcards):
    return STUDY.topology_pairs(wildcards.dataset)


def regressions_inputs(wildcards):
    return {
        "topology": f"results/{wildcards.dataset}/topology.parquet",
        "scores": STUDY.regression_scores(wildcards.dataset),
    }


def regressions_params(wildcards):
    return STUDY.regressions_params(wildcards.dataset)


def plot_regressions_inputs(wildcards):
    ds = wildcards.dataset
    return {
        "regressions": f"results/{ds}/regressions.parquet",
        "contrasts": f"results/{ds}/contrasts.parquet",
        "scores": STUDY.regression_scores(ds),
    }


def plot_regressions_params(wildcards):
    return STUDY.plot_regressions_params(wildcards.dataset)


# --- code versions: a library change reruns the rules whose scripts use it -------------------


def code_version(script):
    """Hash of the brainshape modules that workflow/scripts/<script> imports (a params entry)."""
    return code_stamp(Path(workflow.basedir) / "workflow" / "scripts" / script)


def prepare_model_params(wildcards):
    """The registry entry without its variants: editing the model's source, config or seed
    prepares it again; adding or editing a variant does not."""
    entry = STUDY.registry[wildcards.model]
    return {k: v for k, v in entry.items() if k != "variants"}


def plot_topology_params(wildcards):
    return STUDY.plot_topology_params(wildcards.dataset)
