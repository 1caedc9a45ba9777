from brainshape import analysis, runner
from brainshape.io import save_parquet


def main(job):
    save_parquet(job.output[0], analysis.brainscores(list(job.input)))


runner.run(snakemake, main)  # noqa: F821
