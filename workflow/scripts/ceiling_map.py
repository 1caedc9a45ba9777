import pandas as pd

from brainshape import maps, runner


def main(job):
    p = job.params.settings
    subjects = maps.load_subjects(job.input.fmri, p["grids"], p["atlas"], p["rois"])
    maps.write_ceiling_maps(job.output[0], pd.read_parquet(job.input.ceiling), subjects)


runner.run(snakemake, main)  # noqa: F821
