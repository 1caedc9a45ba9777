from brainshape import quantize, runner


def main(job):
    p = job.params.settings
    source = quantize.resolve_source(p["source"], p["revision"])
    quantize.gptq_quantize(source, job.output[0], bits=p["bits"], group_size=p["group_size"])


runner.run(snakemake, main)  # noqa: F821
