from pathlib import Path

import nibabel as nib

from brainshape import figures, maps, runner


def main(job):
    fig = maps.ceiling_figure(
        nib.load(Path(job.input[0]) / "ceiling.nii.gz"),
        title=f"Noise ceiling ({job.wildcards.dataset})",
        note=maps.ceiling_note(job.params.counts),
    )
    figures.save(fig, job.output[0])


runner.run(snakemake, main)  # noqa: F821
