from brainshape import runner, topology


def main(job):
    topology.compute_brain(list(job.input), job.output[0], **job.params.settings)


runner.run(snakemake, main)  # noqa: F821
