from brainshape import features, runner, stimuli
from brainshape.io import save_npy, save_parquet
from brainshape.threads import limit_threads
from brainshape.topology import nulls, pairs


def main(job):
    p = dict(job.params.settings)
    feats = features.read_features(job.input.features, p.pop("stories"))
    words = stimuli.read_words_table(job.input.words)
    null = nulls.null_settings(p.pop("null"))
    with limit_threads(job.threads):
        table = pairs.pair_variant(
            job.input.layers, job.input.brain, feats, words, job.input.time_base, null=null, **p
        )
    maxima = table.attrs.pop("null_max_z")
    table.insert(0, "variant", job.wildcards.variant)
    table.insert(0, "model", job.wildcards.model)
    save_parquet(job.output[0], table)
    if "null_max" in job.output.keys():
        save_npy(job.output.null_max, maxima)


runner.run(snakemake, main)  # noqa: F821
