from brainshape import analysis, runner
from brainshape.io import save_parquet


def main(job):
    table = analysis.brainscores(
        list(job.input.encoding),
        baselines=list(job.input.baselines),
        ceiling=job.input.ceiling[0] if job.input.ceiling else None,
    )
    save_parquet(job.output[0], table)


runner.run(snakemake, main)  # noqa: F821
