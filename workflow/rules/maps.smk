# Brain maps of the scores in the dataset's space (one job per model variant, one for the noise
# ceiling) and their report figures.


rule maps:
    input:
        unpack(maps_inputs),
    output:
        directory("results/{dataset}/maps/{model}/{variant}"),
    log:
        "logs/{dataset}/maps/{model}/{variant}.log",
    benchmark:
        "results/{dataset}/benchmarks/maps/{model}/{variant}.tsv"
    priority: model_priority
    conda:
        "../envs/brainshape.yaml"
    resources:
        mem_mb=maps_mem_mb,
    params:
        code=code_version("maps.py"),
        settings=maps_params,
    script:
        "../scripts/maps.py"


rule ceiling_map:
    input:
        unpack(ceiling_map_inputs),
    output:
        directory("results/{dataset}/maps/ceiling"),
    log:
        "logs/{dataset}/maps/ceiling.log",
    benchmark:
        "results/{dataset}/benchmarks/maps/ceiling.tsv"
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("ceiling_map.py"),
        settings=maps_params,
    script:
        "../scripts/ceiling_map.py"


rule plot_maps:
    input:
        unpack(plot_maps_inputs),
    output:
        report(
            "results/{dataset}/plots/maps_{model}.png",
            caption="../report/maps.rst",
            category="2. Maps",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "{model}"},
        ),
    log:
        "logs/{dataset}/plots/maps_{model}.log",
    benchmark:
        "results/{dataset}/benchmarks/plots/maps_{model}.tsv"
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("plot_maps.py"),
        settings=plot_maps_params,
        model="{model}",
    script:
        "../scripts/plot_maps.py"


rule plot_ceiling_map:
    input:
        rules.ceiling_map.output[0],
    output:
        report(
            "results/{dataset}/plots/ceiling_map.png",
            caption="../report/ceiling_map.rst",
            category="2. Maps",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "noise ceiling"},
        ),
    log:
        "logs/{dataset}/plots/ceiling_map.log",
    benchmark:
        "results/{dataset}/benchmarks/plots/ceiling_map.tsv"
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("plot_ceiling_map.py"),
        counts=counts_params,
    script:
        "../scripts/plot_ceiling_map.py"
