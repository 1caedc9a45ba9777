import pandas as pd

from brainshape import analysis, figures, runner, summary


def main(job):
    scores = pd.read_parquet(job.input.scores)
    ceilings = None
    if job.input.ceiling:
        ceilings = summary.ceiling_intervals(pd.read_parquet(job.input.ceiling[0]))
    fig = analysis.brainscores_figure(
        scores,
        job.params.model,
        dataset=job.wildcards.dataset,
        ceilings=ceilings,
        counts=job.params.counts,
    )
    figures.save(fig, job.output[0])


runner.run(snakemake, main)  # noqa: F821
