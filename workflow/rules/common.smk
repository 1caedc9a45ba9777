# Config validation, the model registry, input functions and resources. Rule files hold rules only.
from pathlib import Path

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
        "model": STUDY.model_dir_input(wildcards.model),
    }


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
    return STUDY.features_runtime_min(wildcards.dataset, wildcards.model) * attempt


def encode_mem_mb(wildcards, attempt):
    return STUDY.encode_mem_mb(wildcards.dataset, wildcards.model) * attempt


def encode_threads(wildcards):
    return STUDY.config["encoding"]["threads"]


def baseline_mem_mb(wildcards, attempt):
    return STUDY.encode_mem_mb(wildcards.dataset, None) * attempt
