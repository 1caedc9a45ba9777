from brainshape import exclusions, runner
from brainshape.topology import timebase


def main(job):
    p = dict(job.params.settings)
    p.pop("stories")
    dirs = exclusions.keep_dirs(list(job.input), job.params.qc)
    timebase.write_time_base(dirs, job.output[0], **p)


runner.run(snakemake, main)  # noqa: F821
