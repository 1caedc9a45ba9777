from brainshape import baselines, encoding, exclusions, runner, stimuli
from brainshape.io import save_parquet
from brainshape.subjects import read_subjects
from brainshape.threads import limit_threads


def main(job):
    p = job.params.settings
    words = stimuli.read_words_table(job.input.words)
    # Memory-mapped: the job copies them once, into the stacked targets of its group.
    subjects = exclusions.apply(read_subjects(job.input.fmri, mmap=True), job.params.qc)
    with limit_threads(job.threads):
        table = baselines.encode_baseline(
            words, subjects, p["baseline"], **encoding.variant_options(p)
        )
    save_parquet(job.output[0], table)


runner.run(snakemake, main)  # noqa: F821
