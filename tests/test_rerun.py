"""Rerun guarantees: a change reruns the jobs it touches and the aggregates downstream, no more.

Each test copies the finished small demo run, changes one thing and reads the dry run's job list
and reasons.
"""

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO, as_ordinary_dataset, snakemake, write_config

from brainshape.codestamp import library_modules

pytestmark = pytest.mark.workflow

# Rules that combine every model: they rerun whenever any of their inputs does.
AGGREGATES = {"brainscores", "topology_table", "regressions", "summary", "all"}
# Rules that read an aggregate (every model's plot reads the whole brainscores table; every
# model's maps figure shares one colour scale with every variant's maps).
AFTER_AGGREGATES = {"plot_brainscores", "plot_regressions", "plot_topology", "plot_maps", "plot_qc"}
# Rules that combine every subject of a dataset (baselines and ceiling are fitted on all of
# them; the brain point clouds hold every subject; the QC compares each run with the others),
# and the shape jobs that pair every layer with those brain clouds. The layers' own diagrams
# depend on the runs (time base) only.
SUBJECT_AGGREGATES = {
    "baseline", "ceiling", "topology_brain", "qc", "ceiling_map", "plot_ceiling_map",
}  # fmt: skip
# What follows one variant's encode jobs (its maps).
AFTER_ENCODE = {"maps"}
BRAIN_PAIRINGS = {"topology_pairs"}


def planned(workdir: Path, env: dict | None = None) -> list[dict]:
    """Jobs of `snakemake -n`: rule, wildcards and reason of each."""
    proc = snakemake(workdir, "-n", "--cores", "2", env=env)
    jobs = []
    for line in proc.stdout.splitlines():
        start = re.match(r"^(?:local)?rule (\w+):$", line)
        if start:
            jobs.append({"rule": start.group(1), "wildcards": {}, "reason": ""})
        elif jobs and line.startswith("    wildcards: "):
            pairs = line.removeprefix("    wildcards: ").split(", ")
            jobs[-1]["wildcards"] = dict(p.split("=", 1) for p in pairs)
        elif jobs and line.startswith("    reason: "):
            jobs[-1]["reason"] = line.removeprefix("    reason: ")
    if not jobs:
        assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout
    return jobs


def keys(jobs: list[dict]) -> set[tuple[str, str, str]]:
    return {
        (j["rule"], j["wildcards"].get("model", ""), j["wildcards"].get("variant", ""))
        for j in jobs
    }


@pytest.fixture()
def copy(small_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(small_run, work, symlinks=True)
    return work


def edit_registry(work: Path, edit) -> None:
    registry = yaml.safe_load((work / "models.yaml").read_text())
    edit(registry["models"])
    (work / "models.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))


def test_nothing_changed_runs_no_job(copy):
    assert planned(copy) == []


def test_model_registry_entry_change_reruns_that_model_only(copy):
    def fewer_layers(models):
        models["tiny-neox"]["source"]["config"]["num_hidden_layers"] = 2

    edit_registry(copy, fewer_layers)
    jobs = planned(copy)
    assert keys(jobs) == {
        ("prepare_model", "tiny-neox", ""),
        ("features", "tiny-neox", "fp32"),
        ("features", "tiny-neox", "untrained"),
        ("encode", "tiny-neox", "fp32"),
        ("encode", "tiny-neox", "untrained"),
        ("layer_diagrams", "tiny-neox", "fp32"),
        ("layer_diagrams", "tiny-neox", "untrained"),
        ("topology_pairs", "tiny-neox", "fp32"),
        ("topology_pairs", "tiny-neox", "untrained"),
        ("brainscores", "", ""),
        ("topology_table", "", ""),
        ("regressions", "", ""),
        ("plot_regressions", "", ""),
        ("plot_brainscores", "tiny-neox", ""),
        ("plot_brainscores", "tiny-gpt2", ""),
        ("plot_topology", "tiny-neox", ""),
        ("plot_topology", "tiny-gpt2", ""),
        ("maps", "tiny-neox", "fp32"),
        ("maps", "tiny-neox", "untrained"),
        ("plot_maps", "tiny-neox", ""),
        ("plot_maps", "tiny-gpt2", ""),
        ("summary", "", ""),
        ("all", "", ""),
    }
    (prepare,) = [j for j in jobs if j["rule"] == "prepare_model"]
    assert prepare["reason"].startswith("Params have changed")


def test_variant_parameter_change_reruns_that_model_only(copy):
    def new_seed(models):
        models["tiny-neox"]["variants"]["untrained"]["seed"] = 99

    edit_registry(copy, new_seed)
    jobs = planned(copy)
    models = {j["wildcards"].get("model") for j in jobs if j["rule"] not in AFTER_AGGREGATES}
    assert models - {None} == {"tiny-neox"}
    assert {j["rule"] for j in jobs if "model" not in j["wildcards"]} <= (
        AGGREGATES | AFTER_AGGREGATES
    )
    assert ("features", "tiny-neox", "untrained") in keys(jobs)
    assert ("encode", "tiny-neox", "untrained") in keys(jobs)
    # The sibling variant's jobs see only their own registry settings, which did not change.
    assert not {k for k in keys(jobs) if k[1:] == ("tiny-neox", "fp32")}
    assert "prepare_model" not in {j["rule"] for j in jobs}  # the base model is unchanged


def test_library_change_reruns_the_rules_that_use_it(copy, tmp_path):
    # A copy of the library with one module edited, first on the import path.
    src = tmp_path / "src"
    shutil.copytree(REPO / "src" / "brainshape", src / "brainshape")
    fmri = src / "brainshape" / "fmri.py"
    fmri.write_text(fmri.read_text() + "\n# a changed line\n")
    env = {"PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    jobs = planned(copy, env=env)
    changed = {j["rule"] for j in jobs if j["reason"].startswith("Params have changed")}
    assert changed == {"fmri"}
    assert {j["wildcards"]["subject"] for j in jobs if j["rule"] == "fmri"} == {"01", "02"}
    users = {
        p.stem for p in (REPO / "workflow" / "scripts").glob("*.py") if "fmri" in library_modules(p)
    }
    # The maps paint ROI means with the fMRI stage's own atlas assignment; they follow the fMRI
    # stage's outputs anyway (through the encode jobs), which is the reason the dry run gives.
    assert users == {"fmri", "maps", "ceiling_map", "plot_maps", "plot_ceiling_map"}
    # Everything else that reruns does so only because fmri's outputs are new.
    downstream = [j for j in jobs if j["rule"] != "fmri"]
    assert {j["rule"] for j in downstream} <= (
        {"encode"}
        | AFTER_ENCODE
        | SUBJECT_AGGREGATES
        | BRAIN_PAIRINGS
        | AGGREGATES
        | AFTER_AGGREGATES
    )
    assert all("Params have changed" not in j["reason"] for j in downstream)


def test_code_stamp_follows_imports_through_the_library():
    scripts = REPO / "workflow" / "scripts"
    assert "fmri" in library_modules(scripts / "fmri.py")
    assert "features" not in library_modules(scripts / "fmri.py")
    # demo.py plants signal with the feature extractor: demo data depends on it.
    assert {"demo", "features", "models"} <= set(library_modules(scripts / "demo_data.py"))


def test_code_stamp_reaches_a_package_through_its_init(tmp_path, monkeypatch):
    """A script that imports a package (brainshape/stimuli/) reaches its ``__init__``, so every
    module the ``__init__`` imports and what those import; a module nobody imports does not
    count."""
    from brainshape import codestamp

    assert "stimuli" in library_modules(REPO / "workflow" / "scripts" / "words.py")
    lib = tmp_path / "brainshape"
    (lib / "pkg").mkdir(parents=True)
    (lib / "__init__.py").write_text("")
    (lib / "pkg" / "__init__.py").write_text("from brainshape.pkg.part import f\n")
    (lib / "pkg" / "part.py").write_text("from brainshape import other\n")
    (lib / "other.py").write_text("X = 1\n")
    (lib / "unused.py").write_text("Y = 2\n")
    script = tmp_path / "job.py"
    script.write_text("from brainshape.pkg import f\n")
    monkeypatch.setattr(codestamp, "LIBRARY", lib)
    for function in (codestamp._module_imports, codestamp.code_stamp):
        function.cache_clear()
    monkeypatch.setattr(codestamp, "_module_imports", codestamp._module_imports.__wrapped__)
    assert codestamp.library_modules(script) == ["__init__", "other", "pkg", "pkg.part"]
    before = codestamp.code_stamp.__wrapped__(script)
    (lib / "unused.py").write_text("Y = 3\n")
    assert codestamp.code_stamp.__wrapped__(script) == before
    (lib / "pkg" / "part.py").write_text("from brainshape import other  # edited\n")
    assert codestamp.code_stamp.__wrapped__(script) != before


def test_code_stamps_follow_the_shape_package_module_by_module(tmp_path):
    # The shape stage is a package: a rule reaches the modules its script imports and theirs,
    # so a change to the null or the measures reruns the pairings, not the layers' persistent
    # homology (the stage's costly part), and a change to the figure reruns only the figure.
    scripts = REPO / "workflow" / "scripts"
    layers = set(library_modules(scripts / "layer_diagrams.py"))
    pairs = set(library_modules(scripts / "topology_pairs.py"))
    assert {"topology.layers", "topology.clouds", "topology.persistence"} <= layers
    assert not {"topology.measures", "topology.pairs", "topology.figures"} & layers
    assert {"topology.pairs", "topology.measures", "topology.nulls"} <= pairs
    assert "topology.figures" not in pairs and "topology.layers" not in pairs
    figure = {m for m in library_modules(scripts / "plot_topology.py") if "topology" in m}
    assert figure == {"topology.figures"}
    # Importing the package itself reaches every module its __init__ imports.
    whole = tmp_path / "whole.py"
    whole.write_text("from brainshape import topology\n")
    package = {p.stem for p in (REPO / "src" / "brainshape" / "topology").glob("[a-z]*.py")}
    assert {f"topology.{m}" for m in package} <= set(library_modules(whole))


def test_one_subject_derivative_replaced_reruns_that_subject_only(small_run, tmp_path):
    data = tmp_path / "bids"
    cfg = yaml.safe_load((small_run / "config.yaml").read_text())
    cfg["registry"] = str(small_run / "models.yaml")
    # One model, one variant: what follows a subject does not depend on how many there are.
    cfg["models"], cfg["variants"] = ["tiny-gpt2"], ["fp32"]
    ds = as_ordinary_dataset(cfg, small_run, data)
    work = tmp_path / "work"
    write_config(work, cfg)
    snakemake(work, "--cores", "2")
    assert planned(work) == []
    story = ds["stories"][1]
    bold = next((data / "derivatives" / "fmriprep" / "sub-02").rglob(f"*task-{story}*_bold.nii.gz"))
    replacement = bold.with_suffix(".new")
    shutil.copyfile(bold, replacement)
    os.replace(replacement, bold)  # a new file, as a re-run of fMRIPrep leaves it
    jobs = planned(work)
    assert [j["wildcards"]["subject"] for j in jobs if j["rule"] == "fmri"] == ["02"]
    assert not {"words", "features", "prepare_model"} & {j["rule"] for j in jobs}
    # Only the encode jobs of sub-02's group follow (one subject per group here), then what
    # combines every subject (baselines, ceiling, brain clouds and their pairings).
    assert {j["rule"] for j in jobs} <= (
        {"fmri", "encode"}
        | AFTER_ENCODE
        | SUBJECT_AGGREGATES
        | BRAIN_PAIRINGS
        | AGGREGATES
        | AFTER_AGGREGATES
    )
    assert {j["wildcards"]["group"] for j in jobs if j["rule"] == "encode"} == {"g2"}
    # Same runs, other data: no layer's persistent homology is recomputed, only the pairings.
    rules = {j["rule"] for j in jobs}
    assert "topology_pairs" in rules
    assert not {"topology_timebase", "layer_diagrams"} & rules
    assert all(j["wildcards"].get("subject", "02") == "02" for j in jobs)
