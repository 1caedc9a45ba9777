from brainshape import exclusions, runner
from brainshape.threads import limit_threads
from brainshape.topology import brain


def main(job):
    dirs = exclusions.keep_dirs(list(job.input.fmri), job.params.qc)
    # BLAS and giotto-ph threads limited to the job's cores: oversubscription is very slow.
    with limit_threads(job.threads):
        brain.compute_brain(
            dirs,
            job.input.time_base,
            job.output[0],
            n_threads=job.threads,
            **job.params.settings,
        )


runner.run(snakemake, main)  # noqa: F821
