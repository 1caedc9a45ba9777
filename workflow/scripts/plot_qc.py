import pandas as pd

from brainshape import qc, qc_report, runner
from brainshape.io import save_text


def main(job):
    p = job.params.settings
    table = pd.read_parquet(job.input[0])
    thresholds = qc.Thresholds.from_config(p["thresholds"])
    dataset = job.wildcards.dataset
    runner.log.info("%s", qc_report.headline(table, p["exclude"], dataset))
    qc_report.plot_qc(table, thresholds, p["exclude"], job.output.figure, dataset)
    save_text(job.output.page, qc_report.qc_page(table, thresholds, p["exclude"], dataset))


runner.run(snakemake, main)  # noqa: F821
