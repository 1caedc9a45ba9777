from threadpoolctl import threadpool_limits

from brainshape import runner, topology
from brainshape.io import save_parquet


def main(job):
    with threadpool_limits(job.threads):
        table = topology.pair_variant(job.input.layers, job.input.brain, **job.params.settings)
    table.insert(0, "variant", job.wildcards.variant)
    table.insert(0, "model", job.wildcards.model)
    save_parquet(job.output[0], table)


runner.run(snakemake, main)  # noqa: F821
