# Word timings of every story (Gentle, TextGrid or BIDS events) into one words table.


rule words:
    input:
        stimuli_inputs,
    output:
        "results/{dataset}/words.parquet",
    log:
        "logs/{dataset}/words.log",
    benchmark:
        "results/{dataset}/benchmarks/words.tsv"
    conda:
        "../envs/brainshape.yaml"
    params:
        code=code_version("words.py"),
        settings=stimuli_params,
    script:
        "../scripts/words.py"
