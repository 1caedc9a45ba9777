from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from brainshape import runner, topology


def main(job):
    p = dict(job.params.settings)
    features_dir = Path(job.input.features)
    feats = {s: np.load(features_dir / f"{s}.npy", mmap_mode="r") for s in p.pop("stories")}
    words = pd.read_parquet(job.input.words)
    # BLAS and giotto-ph threads limited to the job's cores: oversubscription is very slow.
    with threadpool_limits(job.threads):
        topology.compute_layers(
            feats, words, job.input.time_base, job.output[0], n_threads=job.threads, **p
        )


runner.run(snakemake, main)  # noqa: F821
