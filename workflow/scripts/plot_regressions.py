import pandas as pd

from brainshape import runner
from brainshape.figures import counts_text
from brainshape.regressions import figures, inputs


def main(job):
    p = job.params.settings
    ds = job.wildcards.dataset
    n = counts_text(job.params.counts)
    table = pd.read_parquet(job.input.regressions)
    obs = f"{n}; {table['n_obs'].min()}-{table['n_obs'].max()} observations per regression"
    figures.plot_regressions(table, job.output.regressions, ds, note=obs)
    if p["published"]:
        scores = inputs.read_published(job.input.scores)
        if "variant" not in scores.columns:
            scores["variant"] = scores["model"].map(p["default_variants"])
    else:
        scores = pd.read_parquet(job.input.scores)
    counts = inputs.parameter_counts(p["registry"], p["model_dirs"])
    kinds = {(m, v): k for m, v, k in p["kinds"]}
    figures.plot_scaling(
        scores, counts, kinds, job.output.scaling, ds, note=f"{n}; each point a mean over them"
    )
    figures.plot_contrasts(
        pd.read_parquet(job.input.contrasts),
        job.output.contrasts,
        ds,
        note=f"{n}; bars: 95% percentile bootstrap intervals over subjects",
    )


runner.run(snakemake, main)  # noqa: F821
