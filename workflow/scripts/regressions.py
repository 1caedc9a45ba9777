import pandas as pd

from brainshape import runner
from brainshape.io import save_parquet
from brainshape.regressions import fitting, inputs, variants
from brainshape.threads import limit_threads


def main(job):
    p = job.params.settings
    if p["published"]:
        scores = inputs.read_published(job.input.scores)
    else:
        scores = pd.read_parquet(job.input.scores)
    kinds = {(m, v): k for m, v, k in p["kinds"]}
    options = dict(
        unit=p["unit"],
        published=p["published"],
        default_variants=p["default_variants"],
        untrained=p["untrained"],
        kinds=kinds,
        params=inputs.parameter_counts(p["registry"], p["model_dirs"]),
        depth_splines=p["depth_splines"],
        dimension=p["dimension"],
    )
    if p["crossfit"]:
        halves = {h: pd.read_parquet(t) for h, t in zip("AB", job.input.half_topology, strict=True)}
        scored = {h: pd.read_parquet(t) for h, t in zip("AB", job.input.half_scores, strict=True)}
        obs = inputs.crossfit_observations(scored, halves, p["families"], **options)
    else:
        topology = pd.read_parquet(job.input.topology)
        obs = inputs.observations(scores, topology, p["families"], **options)
    with limit_threads(job.threads):
        table = fitting.run_regressions(
            obs,
            p["feature_sets"],
            n_permutations=p["n_permutations"],
            n_bootstrap=p["n_bootstrap"],
            n_folds=p["n_folds"],
            seed=p["seed"],
            permutation=p["permutation"],
            depth_bins=p["depth_bins"],
            weights=p["weights"],
        )
    table.insert(4, "crossfit", bool(p["crossfit"]))
    save_parquet(job.output.regressions, table)
    pairs = variants.contrasts(scores, kinds, n_bootstrap=p["n_bootstrap"], seed=p["seed"])
    save_parquet(job.output.contrasts, pairs)


runner.run(snakemake, main)  # noqa: F821
