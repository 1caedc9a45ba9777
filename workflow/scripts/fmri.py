from brainshape import fmri, runner


def main(job):
    p = job.params.settings
    fmri.preprocess_subject(
        p["fmriprep_dir"],
        p["subject"],
        p["stories"],
        p["space"],
        p["atlas"],
        p["labels"],
        job.output[0],
        rois=p["rois"],
        mode=p["targets"],
        confounds=p["confounds"],
        detrend=p["detrend"],
        standardize=p["standardize"],
        high_pass=p["high_pass"],
        trim_start=p["trim_start"],
        trim_end=p["trim_end"],
        t_r=p["tr"],
    )


runner.run(snakemake, main)  # noqa: F821
