from brainshape import baselines, exclusions, runner
from brainshape.io import save_parquet
from brainshape.subjects import read_subjects


def main(job):
    subjects = exclusions.apply(read_subjects(job.input), job.params.qc)
    table = baselines.inter_subject_ceiling(subjects)
    for subject, reason in table.attrs.get("without_ceiling", {}).items():
        runner.log.warning("%s has no noise ceiling: %s", subject, reason)
    save_parquet(job.output[0], table)


runner.run(snakemake, main)  # noqa: F821
