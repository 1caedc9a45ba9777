from pathlib import Path

import numpy as np
import pandas as pd

from brainshape import runner, topology


def main(job):
    p = dict(job.params.settings)
    features_dir = Path(job.input.features)
    feats = {s: np.load(features_dir / f"{s}.npy", mmap_mode="r") for s in p.pop("stories")}
    words = pd.read_parquet(job.input.words)
    topology.compute_layers(feats, words, job.input.brain, job.output[0], **p)


runner.run(snakemake, main)  # noqa: F821
