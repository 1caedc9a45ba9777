# BOLD to targets: mask, atlas ROI x hemisphere, confounds, detrending, z-scoring, trimming.


rule fmri:
    input:
        fmri_inputs,
    output:
        directory("results/{dataset}/fmri/sub-{subject}"),
    log:
        "logs/{dataset}/fmri/sub-{subject}.log",
    benchmark:
        "results/{dataset}/benchmarks/fmri/sub-{subject}.tsv"
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("fmri.py"),
        settings=fmri_params,
    script:
        "../scripts/fmri.py"
