from brainshape import crossfit, encoding, features, runner, stimuli
from brainshape.io import save_parquet
from brainshape.subjects import read_subjects
from brainshape.threads import limit_threads


def main(job):
    p = job.params.settings
    words = stimuli.read_words_table(job.input.words)
    feats = features.read_features(job.input.features, p["stories"])
    subjects = crossfit.restrict(read_subjects(job.input.fmri), p["stories"])
    with limit_threads(job.threads):
        table = encoding.encode_variant(words, feats, subjects, **encoding.variant_options(p))
    table.insert(0, "variant", job.wildcards.variant)
    table.insert(0, "model", job.wildcards.model)
    save_parquet(job.output[0], table)


runner.run(snakemake, main)  # noqa: F821
