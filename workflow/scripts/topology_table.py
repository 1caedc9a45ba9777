import numpy as np
import pandas as pd

from brainshape import runner
from brainshape.io import save_parquet
from brainshape.topology import nulls


def main(job):
    table = pd.concat([pd.read_parquet(t) for t in job.input.tables], ignore_index=True)
    if "null_max" in job.input.keys():
        table = nulls.family_wise(table, [np.load(m) for m in job.input.null_max])
    save_parquet(job.output[0], table)


runner.run(snakemake, main)  # noqa: F821
