from pathlib import Path

import numpy as np
import pandas as pd

from brainshape import encoding, ridge, runner
from brainshape.io import save_parquet


def main(job):
    p = job.params.settings
    words = pd.read_parquet(job.input.words)
    features_dir = Path(job.input.features)
    feats = {s: np.load(features_dir / f"{s}.npy", mmap_mode="r") for s in p["stories"]}
    subjects = {Path(d).name.removeprefix("sub-"): encoding.load_subject(d) for d in job.input.fmri}
    with ridge.limit_threads(job.threads):
        table = encoding.encode_variant(words, feats, subjects, **encoding.variant_options(p))
    table.insert(0, "variant", job.wildcards.variant)
    table.insert(0, "model", job.wildcards.model)
    save_parquet(job.output[0], table)


runner.run(snakemake, main)  # noqa: F821
