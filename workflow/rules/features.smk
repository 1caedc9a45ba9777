# Hidden states of every layer for every word, one job per (dataset, model, variant).


rule prepare_model:
    output:
        directory(f"{config['model_root']}/{{model}}"),
    log:
        "logs/models/{model}.log",
    conda:
        "../envs/brainshape.yaml"
    params:
        model="{model}",
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
        gpu=features_gpus,
        gpu_model=features_gpu_model,
    params:
        settings=features_params,
    script:
        "../scripts/features.py"
