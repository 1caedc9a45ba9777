# Shape of representations: the time base and landmarks, brain clouds (one job each per
# dataset), layer diagrams (one job per dataset, model and variant), pairings with geometry
# (same), and the table.


rule topology_timebase:
    input:
        topology_timebase_inputs,
    output:
        "results/{dataset}/topology/timebase.json",
    log:
        "logs/{dataset}/topology/timebase.log",
    benchmark:
        "results/{dataset}/benchmarks/topology/timebase.tsv"
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("topology_timebase.py"),
        settings=topology_timebase_params,
        qc=dataset_exclusions,
    script:
        "../scripts/topology_timebase.py"


rule topology_brain:
    input:
        unpack(topology_brain_inputs),
    output:
        directory("results/{dataset}/topology/brain"),
    log:
        "logs/{dataset}/topology/brain.log",
    benchmark:
        "results/{dataset}/benchmarks/topology/brain.tsv"
    conda:
        "../envs/brainshape.yaml"
    threads: 2
    params:
        code=code_version("topology_brain.py"),
        settings=topology_brain_params,
        qc=dataset_exclusions,
    script:
        "../scripts/topology_brain.py"


rule layer_diagrams:
    input:
        unpack(layer_diagrams_inputs),
    output:
        directory("results/{dataset}/topology/layers/{model}/{variant}"),
    log:
        "logs/{dataset}/topology/layers/{model}/{variant}.log",
    benchmark:
        "results/{dataset}/benchmarks/topology/{model}/{variant}.tsv"
    priority: model_priority
    conda:
        "../envs/brainshape.yaml"
    threads: 2
    resources:
        mem_mb=layer_diagrams_mem_mb,
    params:
        code=code_version("layer_diagrams.py"),
        settings=layer_diagrams_params,
    script:
        "../scripts/layer_diagrams.py"


rule topology_pairs:
    input:
        unpack(topology_pairs_inputs),
    output:
        table="results/{dataset}/topology/pairs/{model}/{variant}.parquet",
        null_max="results/{dataset}/topology/pairs/{model}/{variant}.null_max.npy",
    log:
        "logs/{dataset}/topology/pairs/{model}/{variant}.log",
    benchmark:
        "results/{dataset}/benchmarks/topology/pairs/{model}/{variant}.tsv"
    priority: model_priority
    conda:
        "../envs/brainshape.yaml"
    resources:
        mem_mb=topology_pairs_mem_mb,
        runtime=topology_pairs_runtime,
    params:
        code=code_version("topology_pairs.py"),
        settings=topology_pairs_params,
    script:
        "../scripts/topology_pairs.py"


rule topology_table:
    input:
        unpack(topology_table_inputs),
    output:
        "results/{dataset}/topology.parquet",
    log:
        "logs/{dataset}/topology/table.log",
    benchmark:
        "results/{dataset}/benchmarks/topology/table.tsv"
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("topology_table.py"),
    script:
        "../scripts/topology_table.py"


rule plot_topology:
    input:
        rules.topology_table.output[0],
    output:
        report(
            "results/{dataset}/plots/shape_{model}.png",
            caption="../report/topology.rst",
            category="4. Shape of representations",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{model}"},
        ),
    log:
        "logs/{dataset}/plots/shape_{model}.log",
    benchmark:
        "results/{dataset}/benchmarks/plots/shape_{model}.tsv"
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("plot_topology.py"),
        model="{model}",
        settings=plot_topology_params,
        counts=counts_params,
    script:
        "../scripts/plot_topology.py"
