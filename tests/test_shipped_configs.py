"""Every config shipped in config/ and config/datasets/ plans as a new user would run it: its
paths pointed at a stand-in of its dataset's layout (`brainshape standin`), the runs sheet
written by `brainshape sheet` as the config's comments say, the study registry it names
unchanged; `snakemake -n` and `brainshape plan` both plan the study."""

import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from brainshape import cli, standins

# Each plan builds the full study's DAG (39 models with their variants): about a minute apiece.
pytestmark = pytest.mark.workflow

#: Config -> the stand-in of its dataset and the options of `brainshape sheet` its comments give.
SHIPPED = {
    "config.yaml": ("narratives", []),
    "datasets/narratives.yaml": ("narratives", []),
    "datasets/ds003020.yaml": ("ds003020", []),
    "datasets/alice.yaml": ("alice", ["--tr-overrides-header"]),
}


def test_every_shipped_config_is_covered():
    shipped = {p.relative_to(REPO / "config").as_posix() for p in (REPO / "config").rglob("*.yaml")}
    registries = {"models.yaml", "models.demo.yaml"}
    assert shipped - registries == set(SHIPPED) | {"demo.yaml"}


def work_dir(tmp_path, name: str, standin) -> tuple:
    """A working directory with the shipped config pointed at the stand-in and its runs sheet."""
    dataset, options = SHIPPED[name]
    root, _ = standin(dataset)
    cfg = yaml.safe_load((REPO / "config" / name).read_text())
    registry = REPO / cfg["registry"]
    assert registry == REPO / "config" / "models.yaml"  # the study's registry, as it ships
    cfg["registry"] = str(registry)
    [(key, ds)] = cfg["datasets"].items()
    assert ds["bids_root"].startswith("/path/to/")
    ds["bids_root"] = str(root)
    if "atlas" in ds:
        ds["atlas"] = {"image": str(root / standins.ATLAS_IMAGE),
                       "labels": str(root / standins.ATLAS_LABELS)}  # fmt: skip
    work = tmp_path / "work"
    sheet = work / ds["runs"]
    sheet.parent.mkdir(parents=True)
    assert cli.main(["sheet", dataset, str(root), "-o", str(sheet), *options]) == 0
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return work, key


def plan(work, *command) -> str:
    cmd = [sys.executable, "-m", *command, "--snakefile", str(REPO / "Snakefile")]
    cmd += ["--directory", str(work), "--configfile", str(work / "config.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_config_plans_on_a_standin(name, tmp_path, standin, capsys):
    work, dataset = work_dir(tmp_path, name, standin)
    capsys.readouterr()
    dry = plan(work, "snakemake", "-n")
    assert "rule features:" in dry and f"results/{dataset}/brainscores.parquet" in dry
    # 39 models with their variants: the features jobs of a model only the registry has.
    assert "features/gpt2/fp16.done" in dry or "model=gpt2" in dry, dry[-2000:]
    table = plan(work, "brainshape.cli", "plan", "--tsv")
    rules = {line.split("\t")[0] for line in table.splitlines()[1:]}
    assert {"features", "encode", "fmri"} <= rules


def test_demo_config_plans_with_its_registry(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["registry"] = str(REPO / cfg["registry"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert "rule demo_data:" in plan(tmp_path, "snakemake", "-n")
    assert "demo_data" in plan(tmp_path, "brainshape.cli", "plan", "--tsv")
