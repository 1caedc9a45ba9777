# Hidden states of every layer for every word, one job per (dataset, model, variant).


rule prepare_model:
    output:
        directory(f"{config['model_root']}/{{model}}"),
    log:
        "logs/models/{model}.log",
    benchmark:
        "results/benchmarks/models/{model}.tsv"
    priority: model_priority
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("prepare_model.py"),
        model="{model}",
        entry=prepare_model_params,
    script:
        "../scripts/prepare_model.py"


rule quantize_model:
    input:
        quantize_inputs,
    output:
        directory(f"{config['model_root']}/gptq/{{model}}/{{variant}}"),
    log:
        "logs/models/gptq/{model}/{variant}.log",
    benchmark:
        "results/benchmarks/models/gptq/{model}/{variant}.tsv"
    conda:
        "../envs/gptq.yaml"
    resources:
        mem_mb=quantize_mem_mb,
        runtime=quantize_runtime,
        gpu=quantize_gpus,
    params:
        code=code_version("quantize_model.py"),
        settings=quantize_params,
    script:
        "../scripts/quantize_model.py"


rule features:
    input:
        unpack(features_inputs),
    output:
        directory("results/{dataset}/features/{model}/{variant}"),
    log:
        "logs/{dataset}/features/{model}/{variant}.log",
    benchmark:
        "results/{dataset}/benchmarks/features/{model}/{variant}.tsv"
    priority: model_priority
    conda:
        features_conda_env
    threads: 2
    resources:
        mem_mb=features_mem_mb,
        runtime=features_runtime,
        gpu=features_gpus,
    params:
        code=code_version("features.py"),
        settings=features_params,
    script:
        "../scripts/features.py"
