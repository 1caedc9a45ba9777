# Hidden states of every layer for every word, one job per (dataset, model, variant).


rule prepare_model:
    output:
        directory(f"{config['model_root']}/{{model}}"),
    log:
        "logs/models/{model}.log",
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("prepare_model.py"),
        model="{model}",
        entry=prepare_model_params,
    script:
        "../scripts/prepare_model.py"


rule features:
    input:
        unpack(features_inputs),
    output:
        directory("results/{dataset}/features/{model}/{variant}"),
    log:
        "logs/{dataset}/features/{model}/{variant}.log",
    benchmark:
        "results/{dataset}/benchmarks/features/{model}/{variant}.tsv"
    conda:
        "../envs/brainshape.yaml"
    threads: 2
    resources:
        mem_mb=features_mem_mb,
        runtime=features_runtime,
    params:
        code=code_version("features.py"),
        settings=features_params,
    script:
        "../scripts/features.py"
