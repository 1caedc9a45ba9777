import pandas as pd

from brainshape import analysis, runner


def main(job):
    scores = pd.read_parquet(job.input[0])
    analysis.plot_brainscores(
        scores, job.params.model, job.output[0], dataset=job.wildcards.dataset
    )


runner.run(snakemake, main)  # noqa: F821
