from brainshape import qc, runner
from brainshape.io import save_parquet
from brainshape.subjects import read_subjects


def main(job):
    p = job.params.settings
    thresholds = qc.Thresholds.from_config(p["thresholds"])
    table = qc.qc_table(read_subjects(job.input.fmri), p["runs"], thresholds)
    for row in table[table["failed"] != ""].itertuples():
        runner.log.warning("sub-%s %s run %d: %s", row.subject, row.story, row.run, row.reason)
    save_parquet(job.output[0], table)


runner.run(snakemake, main)  # noqa: F821
