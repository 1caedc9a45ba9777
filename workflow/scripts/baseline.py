from pathlib import Path

import pandas as pd

from brainshape import baselines, encoding, ridge, runner
from brainshape.io import save_parquet


def main(job):
    p = job.params.settings
    words = pd.read_parquet(job.input.words)
    subjects = {Path(d).name.removeprefix("sub-"): encoding.load_subject(d) for d in job.input.fmri}
    with ridge.limit_threads(job.threads):
        table = baselines.encode_baseline(
            words, subjects, p["baseline"], **encoding.variant_options(p)
        )
    save_parquet(job.output[0], table)


runner.run(snakemake, main)  # noqa: F821
