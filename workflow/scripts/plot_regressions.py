import pandas as pd

from brainshape import regressions, runner


def main(job):
    p = job.params.settings
    ds = job.wildcards.dataset
    regressions.plot_regressions(pd.read_parquet(job.input.regressions), job.output.regressions, ds)
    if p["published"]:
        scores = regressions.read_published(job.input.scores)
        if "variant" not in scores.columns:
            scores["variant"] = scores["model"].map(p["default_variants"])
    else:
        scores = pd.read_parquet(job.input.scores)
    counts = regressions.parameter_counts(p["registry"], p["model_dirs"])
    kinds = {(m, v): k for m, v, k in p["kinds"]}
    regressions.plot_scaling(scores, counts, kinds, job.output.scaling, ds)
    regressions.plot_contrasts(pd.read_parquet(job.input.contrasts), job.output.contrasts, ds)


runner.run(snakemake, main)  # noqa: F821
