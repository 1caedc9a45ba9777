# The study summary: the report's first page and the leaderboard table (one job per dataset).


rule summary:
    input:
        unpack(summary_inputs),
    output:
        page=report(
            "results/{dataset}/summary.html",
            caption="../report/summary.rst",
            category="1. Summary",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "1 summary and leaderboard"},
        ),
        table="results/{dataset}/leaderboard.tsv",
    log:
        "logs/{dataset}/summary.log",
    benchmark:
        "results/{dataset}/benchmarks/summary.tsv"
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("summary.py"),
        settings=summary_params,
    script:
        "../scripts/summary.py"
