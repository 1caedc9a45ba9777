from brainshape import exclusions, runner, topology


def main(job):
    p = dict(job.params.settings)
    p.pop("stories")
    dirs = exclusions.keep_dirs(list(job.input), job.params.qc)
    topology.write_time_base(dirs, job.output[0], **p)


runner.run(snakemake, main)  # noqa: F821
