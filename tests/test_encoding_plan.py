"""How the encoding stage is cut into jobs: subject groups, baselines, ceiling, parameters."""

import pytest
import yaml
from conftest import REPO, SCHEMAS

from brainshape.config import load_registry_dict, validate
from brainshape.errors import BrainshapeError
from brainshape.workflow import Study


def study(**encoding):
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["registry"] = str(REPO / "config" / "models.demo.yaml")
    cfg["datasets"]["demo"]["subjects"] = ["01", "02", "03", "04", "05"]
    cfg["encoding"].update(encoding)
    cfg = validate(cfg, SCHEMAS / "config.schema.yaml", "demo.yaml")
    registry = load_registry_dict(cfg["registry"], SCHEMAS / "models.schema.yaml")
    return Study(cfg, registry, source="demo.yaml")


def test_subjects_are_split_into_groups_of_the_configured_size():
    s = study(group_size=2)
    assert s.subject_groups("demo") == {"g1": ["01", "02"], "g2": ["03", "04"], "g3": ["05"]}
    # One encode job per (model, variant, group): 3 models x 2 variants x 3 groups.
    tables = s.encoding_tables("demo")
    assert len(tables) == 18
    assert "results/demo/encoding/tiny-gpt2/untrained/g3.parquet" in tables
    assert s.group_fmri_dirs("demo", "g3") == ["results/demo/fmri/sub-05"]
    assert s.encode_group_params("demo", "g2")["subjects"] == ["03", "04"]
    with pytest.raises(BrainshapeError, match="has subject groups g1, g2, g3, not 'g7'"):
        s.group_subjects("demo", "g7")
    # Groups of 20 (the schema's default) cover a small dataset in one job.
    assert list(study(group_size=20).subject_groups("demo")) == ["g1"]


def test_baselines_and_ceiling_are_per_dataset_jobs():
    s = study()
    assert s.baseline_tables("demo") == [
        "results/demo/baselines/word_rate.parquet",
        "results/demo/baselines/word_length_position.parquet",
    ]
    assert s.ceiling_tables("demo") == ["results/demo/ceiling.parquet"]
    assert study(ceiling=False, baselines=[]).ceiling_tables("demo") == []


def test_solver_options_reach_the_job_parameters():
    params = study(folds="blocks", n_blocks=6, gap=3, backend="numpy").encode_params("demo")
    assert (params["folds"], params["n_blocks"], params["gap"]) == ("blocks", 6, 3)
    assert params["n_permutations"] == 100 and params["metrics"] == ["r", "mi"]
    with pytest.raises(BrainshapeError, match="encoding.folds is 'blocks' but encoding.n_blocks"):
        study(folds="blocks").encode_params("demo")
