import logging

from brainshape import baselines, runner
from brainshape.io import save_parquet
from brainshape.subjects import read_subjects


def main(job):
    subjects = read_subjects(job.input)
    table = baselines.inter_subject_ceiling(subjects)
    lonely = table.attrs.get("without_ceiling")
    if lonely:
        logging.getLogger("brainshape").warning("no ceiling (nobody shares their runs): %s", lonely)
    save_parquet(job.output[0], table)


runner.run(snakemake, main)  # noqa: F821
