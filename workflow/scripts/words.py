from brainshape import runner, stimuli


def main(job):
    p = job.params.settings
    table = stimuli.words_table(p["sources"], nonspeech=p["nonspeech"])
    stimuli.write_words_table(job.output[0], table)
    runner.log.info("%d words in %d stories", len(table), table["story"].nunique())


runner.run(snakemake, main)  # noqa: F821
