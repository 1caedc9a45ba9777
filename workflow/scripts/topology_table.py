import pandas as pd

from brainshape import runner
from brainshape.io import save_parquet


def main(job):
    save_parquet(
        job.output[0], pd.concat([pd.read_parquet(t) for t in job.input], ignore_index=True)
    )


runner.run(snakemake, main)  # noqa: F821
