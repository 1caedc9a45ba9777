from brainshape import runner, topology


def main(job):
    p = dict(job.params.settings)
    p.pop("stories")
    topology.write_time_base(list(job.input), job.output[0], **p)


runner.run(snakemake, main)  # noqa: F821
