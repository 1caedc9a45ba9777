from brainshape import runner, stimuli


def main(job):
    p = job.params.settings
    table = stimuli.words_table(p["sources"], nonspeech=p["nonspeech"], case=p["case"])
    stimuli.write_words_table(job.output[0], table)
    runner.log.info(
        "%d words in %d stories, %d not aligned (times interpolated from their neighbours)",
        len(table),
        table["story"].nunique(),
        int((~table["aligned"]).sum()),
    )


runner.run(snakemake, main)  # noqa: F821
