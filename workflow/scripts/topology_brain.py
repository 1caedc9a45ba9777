from pathlib import Path

from brainshape import exclusions, runner, topology
from brainshape.threads import limit_threads


def main(job):
    dirs = list(job.input.fmri)
    subjects = [Path(d).name.removeprefix("sub-") for d in dirs]
    excluded = exclusions.job_exclusions(job.input.get("qc"), job.params.qc, subjects)
    # BLAS and giotto-ph threads limited to the job's cores: oversubscription is very slow.
    with limit_threads(job.threads):
        topology.compute_brain(
            exclusions.keep_dirs(dirs, excluded),
            job.input.time_base,
            job.output[0],
            n_threads=job.threads,
            **job.params.settings,
        )


runner.run(snakemake, main)  # noqa: F821
