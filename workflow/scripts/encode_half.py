from brainshape import crossfit, encoding, exclusions, features, runner, stimuli
from brainshape.io import save_parquet
from brainshape.subjects import read_subjects
from brainshape.threads import limit_threads


def main(job):
    p = job.params.settings
    words = stimuli.read_words_table(job.input.words)
    feats = features.read_features(job.input.features, p["stories"])
    # Memory-mapped, as in the encode jobs; the runs the QC excludes are left out first.
    subjects = exclusions.apply(read_subjects(job.input.fmri, mmap=True), job.params.qc)
    subjects = crossfit.restrict(subjects, p["stories"])
    subjects = crossfit.sample_voxels(subjects, p["voxel_fraction"])
    with limit_threads(job.threads):
        table = encoding.encode_variant(words, feats, subjects, **encoding.variant_options(p))
    table.insert(0, "variant", job.wildcards.variant)
    table.insert(0, "model", job.wildcards.model)
    save_parquet(job.output[0], table)


runner.run(snakemake, main)  # noqa: F821
