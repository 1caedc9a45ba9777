from brainshape import features, runner, stimuli
from brainshape.threads import limit_threads
from brainshape.topology import layers


def main(job):
    p = dict(job.params.settings)
    feats = features.read_features(job.input.features, p.pop("stories"))
    words = stimuli.read_words_table(job.input.words)
    # BLAS and giotto-ph threads limited to the job's cores: oversubscription is very slow.
    with limit_threads(job.threads):
        layers.compute_layers(
            feats, words, job.input.time_base, job.output[0], n_threads=job.threads, **p
        )


runner.run(snakemake, main)  # noqa: F821
