from brainshape import models, runner


def main(job):
    registry = models.load_registry(job.config["registry"])
    spec = models.get_model(registry, job.params.model)
    models.prepare(spec, job.output[0])


runner.run(snakemake, main)  # noqa: F821
