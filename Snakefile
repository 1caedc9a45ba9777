# brainshape: brainscores of language models on story-listening fMRI, and their shape.
# Entry point only: config, includes and the target list. Logic lives in src/brainshape/.
from snakemake.utils import min_version

min_version("9.19")


# The study config is the default; a --configfile on the command line (the demo, a site's
# study) replaces it instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/stimuli.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/fmri.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/encoding.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/topology.smk"
include: "workflow/rules/crossfit.smk"
include: "workflow/rules/regressions.smk"
include: "workflow/rules/maps.smk"
include: "workflow/rules/summary.smk"


rule all:
    default_target: True
    input:
        all_targets(),
