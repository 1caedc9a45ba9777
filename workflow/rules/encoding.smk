# Ridge encoding models: one job per (dataset, model, variant, subject group), all layers and
# targets; baselines and the noise ceiling: a few jobs per dataset, shared by every model.


rule encode:
    input:
        unpack(encode_inputs),
    output:
        "results/{dataset}/encoding/{model}/{variant}/{group}.parquet",
    log:
        "logs/{dataset}/encoding/{model}/{variant}/{group}.log",
    benchmark:
        "results/{dataset}/benchmarks/encoding/{model}/{variant}/{group}.tsv"
    priority: model_priority
    conda:
        "../envs/brainshape.yaml"
    threads: encode_threads
    resources:
        mem_mb=encode_mem_mb,
        runtime=encode_runtime,
        gpu=encode_gpus,
    params:
        code=code_version("encode.py"),
        settings=encode_params,
        qc=group_exclusions,
    script:
        "../scripts/encode.py"


rule baseline:
    input:
        unpack(baseline_inputs),
    output:
        "results/{dataset}/baselines/{baseline}/{group}.parquet",
    log:
        "logs/{dataset}/baselines/{baseline}/{group}.log",
    benchmark:
        "results/{dataset}/benchmarks/baselines/{baseline}/{group}.tsv"
    conda:
        "../envs/brainshape.yaml"
    threads: encode_threads
    resources:
        mem_mb=baseline_mem_mb,
        runtime=baseline_runtime,
    params:
        code=code_version("baseline.py"),
        settings=baseline_params,
        qc=group_exclusions,
    script:
        "../scripts/baseline.py"


rule ceiling:
    input:
        ceiling_inputs,
    output:
        "results/{dataset}/ceiling.parquet",
    log:
        "logs/{dataset}/ceiling.log",
    benchmark:
        "results/{dataset}/benchmarks/ceiling.tsv"
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("ceiling.py"),
        qc=dataset_exclusions,
    script:
        "../scripts/ceiling.py"
