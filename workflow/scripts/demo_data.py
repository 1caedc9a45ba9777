from brainshape import demo, runner


def main(job):
    p = dict(job.params.settings)
    demo.generate(
        job.output[0],
        registry_path=p["registry"],
        model_root=p["model_root"],
        planted=p["planted"],
        subjects=p["subjects"],
        stories=p["stories"],
        tr=p["tr"],
        seed=p["seed"],
        snr=p["snr"],
        ar1=p["ar1"],
        context_tokens=p["context_tokens"],
        stride=p["stride"],
        batch_size=p["batch_size"],
    )


runner.run(snakemake, main)  # noqa: F821
