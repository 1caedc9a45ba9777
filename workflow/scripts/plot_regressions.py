import pandas as pd

from brainshape import runner
from brainshape.regressions import figures, inputs


def main(job):
    p = job.params.settings
    ds = job.wildcards.dataset
    figures.plot_regressions(pd.read_parquet(job.input.regressions), job.output.regressions, ds)
    if p["published"]:
        scores = inputs.read_published(job.input.scores)
        if "variant" not in scores.columns:
            scores["variant"] = scores["model"].map(p["default_variants"])
    else:
        scores = pd.read_parquet(job.input.scores)
    counts = inputs.parameter_counts(p["registry"], p["model_dirs"])
    kinds = {(m, v): k for m, v, k in p["kinds"]}
    figures.plot_scaling(scores, counts, kinds, job.output.scaling, ds)
    figures.plot_contrasts(pd.read_parquet(job.input.contrasts), job.output.contrasts, ds)


runner.run(snakemake, main)  # noqa: F821
