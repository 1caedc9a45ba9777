import pandas as pd

from brainshape import figures, regressions, runner


def main(job):
    p = job.params.settings
    ds = job.wildcards.dataset
    n = figures.counts_text(job.params.counts)
    table = pd.read_parquet(job.input.regressions)
    obs = f"{n}; {table['n_obs'].min()}-{table['n_obs'].max()} observations per regression"
    regressions.plot_regressions(table, job.output.regressions, ds, note=obs)
    if p["published"]:
        scores = regressions.read_published(job.input.scores)
        if "variant" not in scores.columns:
            scores["variant"] = scores["model"].map(p["default_variants"])
    else:
        scores = pd.read_parquet(job.input.scores)
    counts = regressions.parameter_counts(p["registry"], p["model_dirs"])
    kinds = {(m, v): k for m, v, k in p["kinds"]}
    regressions.plot_scaling(
        scores, counts, kinds, job.output.scaling, ds, note=f"{n}; each point a mean over them"
    )
    regressions.plot_contrasts(
        pd.read_parquet(job.input.contrasts),
        job.output.contrasts,
        ds,
        note=f"{n}; bars: 95% percentile bootstrap intervals over subjects",
    )


runner.run(snakemake, main)  # noqa: F821
