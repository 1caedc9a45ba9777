import pandas as pd

from brainshape import runner, summary
from brainshape.io import save_text


def main(job):
    p = job.params.settings
    scores = pd.read_parquet(job.input.scores)
    ceiling = pd.read_parquet(job.input.ceiling[0]) if job.input.ceiling else None
    info = summary.overview(
        scores,
        dataset=job.wildcards.dataset,
        words=pd.read_parquet(job.input.words, columns=["story"]),
        runs=summary.subject_stories(job.input.fmri),
    )
    board = summary.leaderboard(
        scores, None if ceiling is None else summary.ceiling_intervals(ceiling)
    )
    save_text(job.output.table, summary.board_tsv(board))
    page = summary.summary_html(
        info,
        board,
        notes=summary.notes(p["targets"], p["gridded"]),
        figures=summary.headline_figures(
            {name: job.input[name] for name in summary.HEADLINE}, p["counts"]
        ),
    )
    save_text(job.output.page, page)


runner.run(snakemake, main)  # noqa: F821
