from brainshape import fmri, runner


def main(job):
    p = job.params.settings
    fmri.preprocess_runs(
        p["subject"],
        p["runs"],
        job.output[0],
        atlas=p["atlas"],
        rois=p["rois"],
        mode=p["targets"],
        cleaning=fmri.Cleaning(**p["cleaning"]),
        min_coverage=p["min_atlas_coverage"],
    )


runner.run(snakemake, main)  # noqa: F821
