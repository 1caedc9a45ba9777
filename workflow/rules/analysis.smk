# Brainscores per (model, variant, layer, subject, ROI, hemisphere) and their report figures.


rule brainscores:
    input:
        unpack(brainscores_inputs),
    output:
        "results/{dataset}/brainscores.parquet",
    log:
        "logs/{dataset}/brainscores.log",
    benchmark:
        "results/{dataset}/benchmarks/brainscores.tsv"
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("brainscores.py"),
    script:
        "../scripts/brainscores.py"


rule plot_brainscores:
    input:
        unpack(plot_inputs),
    output:
        report(
            "results/{dataset}/plots/brainscores_{model}.png",
            caption="../report/brainscores.rst",
            category="3. Brainscores by layer",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{model}"},
        ),
    log:
        "logs/{dataset}/plots/brainscores_{model}.log",
    benchmark:
        "results/{dataset}/benchmarks/plots/brainscores_{model}.tsv"
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("plot_brainscores.py"),
        model="{model}",
        counts=counts_params,
    script:
        "../scripts/plot_brainscores.py"
