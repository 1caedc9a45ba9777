from brainshape import maps, runner


def main(job):
    p = job.params.settings
    subjects = maps.load_subjects(job.input.fmri, p["grids"], p["atlas"], p["rois"])
    result = maps.variant_maps(
        maps.read_encoding(job.input.encoding),
        subjects,
        maps.read_baselines(job.input.baselines),
        per_layer=p["per_layer"],
    )
    maps.write_variant_maps(job.output[0], result, subjects)


runner.run(snakemake, main)  # noqa: F821
