from brainshape import runner
from brainshape.topology import timebase


def main(job):
    p = dict(job.params.settings)
    p.pop("stories")
    timebase.write_time_base(list(job.input), job.output[0], **p)


runner.run(snakemake, main)  # noqa: F821
