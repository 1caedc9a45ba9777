import pandas as pd

from brainshape import runner
from brainshape.topology import figures


def main(job):
    figures.plot_agreement(
        pd.read_parquet(job.input[0]),
        job.params.model,
        job.output[0],
        dataset=job.wildcards.dataset,
        measures=job.params.settings["measures"],
    )


runner.run(snakemake, main)  # noqa: F821
