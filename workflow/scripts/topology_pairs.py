from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from brainshape import runner, topology
from brainshape.io import save_parquet


def main(job):
    p = dict(job.params.settings)
    features_dir = Path(job.input.features)
    feats = {s: np.load(features_dir / f"{s}.npy", mmap_mode="r") for s in p.pop("stories")}
    words = pd.read_parquet(job.input.words)
    with threadpool_limits(job.threads):
        table = topology.pair_variant(
            job.input.layers, job.input.brain, feats, words, job.input.time_base, **p
        )
    table.insert(0, "variant", job.wildcards.variant)
    table.insert(0, "model", job.wildcards.model)
    save_parquet(job.output[0], table)


runner.run(snakemake, main)  # noqa: F821
