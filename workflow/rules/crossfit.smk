# Cross-fitting (regressions.crossfit): brainscores from one half of the stories, shape features
# from the other. Encoding models fitted and scored within each half (one job per dataset,
# half, model, variant and subject group), their brainscores, and each variant's geometry
# against the brain clouds of each half; the regressions pair the halves crosswise.


rule encode_half:
    input:
        unpack(encode_half_inputs),
    output:
        "results/{dataset}/crossfit/{half}/encoding/{model}/{variant}/{group}.parquet",
    log:
        "logs/{dataset}/crossfit/{half}/encoding/{model}/{variant}/{group}.log",
    benchmark:
        "results/{dataset}/benchmarks/crossfit/{half}/encoding/{model}/{variant}/{group}.tsv"
    priority: model_priority
    conda:
        "../envs/brainshape.yaml"
    threads: encode_threads
    resources:
        mem_mb=encode_half_mem_mb,
        runtime=encode_half_runtime,
        gpu=encode_gpus,
    params:
        code=code_version("encode_half.py"),
        settings=encode_half_params,
        qc=half_group_exclusions,
    script:
        "../scripts/encode_half.py"


rule brainscores_half:
    input:
        encoding=encode_half_outputs,
        baselines=[],
        ceiling=[],
    output:
        "results/{dataset}/crossfit/{half}/brainscores.parquet",
    log:
        "logs/{dataset}/crossfit/{half}/brainscores.log",
    benchmark:
        "results/{dataset}/benchmarks/crossfit/{half}/brainscores.tsv"
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("brainscores.py"),
    script:
        "../scripts/brainscores.py"


rule topology_pairs_half:
    input:
        unpack(topology_pairs_inputs),
    output:
        "results/{dataset}/crossfit/{half}/topology/pairs/{model}/{variant}.parquet",
    log:
        "logs/{dataset}/crossfit/{half}/topology/pairs/{model}/{variant}.log",
    benchmark:
        "results/{dataset}/benchmarks/crossfit/{half}/topology/pairs/{model}/{variant}.tsv"
    priority: model_priority
    conda:
        "../envs/brainshape.yaml"
    resources:
        mem_mb=topology_pairs_mem_mb,
        runtime=topology_pairs_half_runtime,
    params:
        code=code_version("topology_pairs.py"),
        settings=topology_pairs_half_params,
    script:
        "../scripts/topology_pairs.py"


rule topology_table_half:
    input:
        tables=topology_pairs_half_outputs,
    output:
        "results/{dataset}/crossfit/{half}/topology.parquet",
    log:
        "logs/{dataset}/crossfit/{half}/topology/table.log",
    benchmark:
        "results/{dataset}/benchmarks/crossfit/{half}/topology/table.tsv"
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("topology_table.py"),
    script:
        "../scripts/topology_table.py"
