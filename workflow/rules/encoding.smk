# Ridge encoding models: one job per (dataset, model, variant), all subjects, layers and targets.


rule encode:
    input:
        unpack(encode_inputs),
    output:
        "results/{dataset}/encoding/{model}/{variant}.parquet",
    log:
        "logs/{dataset}/encoding/{model}/{variant}.log",
    conda:
        "../envs/brainshape.yaml"
    threads: 2
    resources:
        mem_mb=encode_mem_mb,
    params:
        code=code_version("encode.py"),
        settings=encode_params,
    script:
        "../scripts/encode.py"
