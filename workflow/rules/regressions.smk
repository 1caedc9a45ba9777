# The aggregate regressions (one job per dataset) and their report figures.


rule regressions:
    input:
        unpack(regressions_inputs),
    output:
        regressions="results/{dataset}/regressions.parquet",
        contrasts="results/{dataset}/contrasts.parquet",
    log:
        "logs/{dataset}/regressions.log",
    benchmark:
        "results/{dataset}/benchmarks/regressions.tsv"
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("regressions.py"),
        settings=regressions_params,
    script:
        "../scripts/regressions.py"


rule plot_regressions:
    input:
        unpack(plot_regressions_inputs),
    output:
        regressions=report(
            "results/{dataset}/plots/regressions.png",
            caption="../report/regressions.rst",
            category="1. Summary",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "regressions"},
        ),
        scaling=report(
            "results/{dataset}/plots/scaling.png",
            caption="../report/scaling.rst",
            category="1. Summary",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "scaling"},
        ),
        contrasts=report(
            "results/{dataset}/plots/contrasts.png",
            caption="../report/contrasts.rst",
            category="1. Summary",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "contrasts"},
        ),
    log:
        "logs/{dataset}/plots/regressions.log",
    benchmark:
        "results/{dataset}/benchmarks/plots/regressions.tsv"
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("plot_regressions.py"),
        settings=plot_regressions_params,
        counts=counts_params,
    script:
        "../scripts/plot_regressions.py"
