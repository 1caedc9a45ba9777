"""How the encoding stage is cut into jobs: subject groups, baselines, ceiling, parameters."""

import pytest
import yaml
from conftest import REPO, SCHEMAS, dry_run, write_config

from brainshape import params
from brainshape.config import load_registry_dict, validate
from brainshape.errors import BrainshapeError
from brainshape.study import Study


def config(**encoding):
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["registry"] = str(REPO / "config" / "models.demo.yaml")
    cfg["variants"] = "all"  # every model with its twin, whatever the demo leaves out
    cfg["datasets"]["demo"]["subjects"] = ["01", "02", "03", "04", "05"]
    cfg["encoding"].update(encoding)
    return cfg


def study(**encoding):
    cfg = validate(config(**encoding), SCHEMAS / "config.schema.yaml", "demo.yaml")
    registry = load_registry_dict(cfg["registry"], SCHEMAS / "models.schema.yaml")
    return Study(cfg, registry, source="demo.yaml")


def jobs(tmp_path, **encoding):
    write_config(tmp_path, config(**encoding))
    return dry_run(tmp_path)


def test_subjects_are_split_into_groups_of_the_configured_size(tmp_path):
    s = study(group_size=2)
    assert s.subject_groups("demo") == {"g1": ["01", "02"], "g2": ["03", "04"], "g3": ["05"]}
    assert params.encode(s, "demo", "g2")["subjects"] == ["03", "04"]
    with pytest.raises(BrainshapeError, match="has subject groups g1, g2, g3, not 'g7'"):
        s.group_subjects("demo", "g7")
    # Groups of 20 (the schema's default) cover a small dataset in one job.
    assert list(study(group_size=20).subject_groups("demo")) == ["g1"]
    # One encode job per (model, variant, group): 3 models x 2 variants x 3 groups.
    planned = jobs(tmp_path, group_size=2)
    encode = [j for j in planned if j["rule"] == "encode"]
    assert len(encode) == 18
    g3 = [
        j for j in encode if j["output"] == ["results/demo/encoding/tiny-gpt2/untrained/g3.parquet"]
    ]
    assert len(g3) == 1 and "results/demo/fmri/sub-05" in g3[0]["input"]
    assert not any(f"results/demo/fmri/sub-0{i}" in g3[0]["input"] for i in range(1, 5))


def test_baselines_and_ceiling_are_per_dataset_jobs(tmp_path):
    planned = jobs(tmp_path)
    outputs = {o for j in planned for o in j.get("output", [])}
    assert {
        "results/demo/baselines/word_rate/g1.parquet",
        "results/demo/baselines/word_length_position/g1.parquet",
        "results/demo/ceiling.parquet",
    } <= outputs
    (brainscores,) = [j for j in planned if j["rule"] == "brainscores"]
    assert "results/demo/ceiling.parquet" in brainscores["input"]
    planned = jobs(tmp_path, ceiling=False, baselines=[])
    assert not [j for j in planned if j["rule"] in ("ceiling", "baseline")]


def test_solver_options_reach_the_job_parameters():
    p = params.encode(study(folds="blocks", n_blocks=6, gap=3, backend="numpy"), "demo")
    assert (p["folds"], p["n_blocks"], p["gap"]) == ("blocks", 6, 3)
    assert p["n_permutations"] == 100 and p["metrics"] == ["r", "mi"]
    with pytest.raises(BrainshapeError, match="encoding.folds is 'blocks' but encoding.n_blocks"):
        params.encode(study(folds="blocks"), "demo")
