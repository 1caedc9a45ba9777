from brainshape import figures, maps, runner


def main(job):
    p = job.params.settings
    rows = [maps.read_row(d, d) for d in job.input.all]
    vmax = maps.colour_scale([r for r in rows if r is not None])
    own = [maps.read_row(d, v) for d, v in zip(job.input.model, p["variants"], strict=True)]
    own = [r for r in own if r is not None]
    surface = bool(own) and maps.surface_allowed(own[0].score, p["space"])
    fig = maps.map_figure(
        own,
        vmax=vmax,
        title=f"{job.params.model}: brain maps ({job.wildcards.dataset})",
        note=maps.map_note(p["counts"], p["targets"], vmax),
        surface=surface,
    )
    figures.save(fig, job.output[0])


runner.run(snakemake, main)  # noqa: F821
