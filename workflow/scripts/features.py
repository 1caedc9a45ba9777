from pathlib import Path

from brainshape import features, io, models, runner, stimuli


def main(job):
    p = job.params.settings
    spec = models.registry_from_dict({"models": {p["model"]: p["entry"]}})[p["model"]]
    words = stimuli.read_words_table(job.input.words)
    stories = {s: words.loc[words.story == s, "word"].tolist() for s in p["stories"]}
    out = Path(job.output[0])
    # Finished stories go to a scratch folder first: Snakemake deletes the declared output of a
    # failed job, but not this, so a killed job resumes at the next story.
    # Settings that change the arrays; more stories or another batch size do not.
    stamp = {k: v for k, v in p.items() if k not in ("stories", "batch_size")}
    partial = features.resume_folder(
        out.parent / f".{out.name}.partial", {**stamp, "code": job.params.code}
    )
    features.extract_stories(
        spec,
        p["variant"],
        p["model_dir"] or None,
        stories,
        {s: partial / f"{s}.npy" for s in stories},
        context_tokens=p["context_tokens"],
        stride=p["stride"],
        batch_size=p["batch_size"],
        word_token=p["word_token"],
        progress=True,
    )
    io.write_manifest(partial, "features")
    partial.rename(out)


runner.run(snakemake, main)  # noqa: F821
