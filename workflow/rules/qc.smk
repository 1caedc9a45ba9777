# Quality control of the data itself (one job per dataset): every run against the other
# listeners of its story and of the other stories, duplicates, motion, tSNR, global signal.


rule qc:
    input:
        unpack(qc_inputs),
    output:
        "results/{dataset}/qc.parquet",
    log:
        "logs/{dataset}/qc.log",
    benchmark:
        "results/{dataset}/benchmarks/qc.tsv"
    conda:
        "../envs/brainshape.yaml"
    resources:
        mem_mb=qc_mem_mb,
        runtime=qc_runtime,
    params:
        code=code_version("qc.py"),
        settings=qc_params,
    script:
        "../scripts/qc.py"


rule plot_qc:
    input:
        rules.qc.output[0],
    output:
        figure=report(
            "results/{dataset}/plots/qc.png",
            caption="../report/qc.rst",
            category="5. Quality control",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "every run"},
        ),
        page=report(
            "results/{dataset}/plots/qc.html",
            caption="../report/qc_page.rst",
            category="5. Quality control",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "decision and reasons"},
        ),
    log:
        "logs/{dataset}/plots/qc.log",
    benchmark:
        "results/{dataset}/benchmarks/plots/qc.tsv"
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("plot_qc.py"),
        settings=plot_qc_params,
    script:
        "../scripts/plot_qc.py"
