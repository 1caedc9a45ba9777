from pathlib import Path

from brainshape import exclusions, runner, topology


def main(job):
    p = dict(job.params.settings)
    p.pop("stories")
    dirs = list(job.input.fmri)
    subjects = [Path(d).name.removeprefix("sub-") for d in dirs]
    excluded = exclusions.job_exclusions(job.input.get("qc"), job.params.qc, subjects)
    topology.write_time_base(exclusions.keep_dirs(dirs, excluded), job.output[0], **p)


runner.run(snakemake, main)  # noqa: F821
