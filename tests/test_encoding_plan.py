"""How the encoding stage is cut into jobs: subject groups, baselines, ceiling, parameters."""

import pytest
import yaml
from conftest import REPO, SCHEMAS, dry_run, write_config

from brainshape import encoding, params
from brainshape.config import load_registry_dict, validate
from brainshape.errors import BrainshapeError
from brainshape.sizing import JobSizing
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


def test_larger_models_jobs_go_first(tmp_path):
    """On few cores the larger models' chains (extraction, encoding, shape) start first: their
    jobs' priority is log10 of the model's parameters; a dataset's jobs have none."""
    by_model: dict[str, set[float]] = {}
    for job in jobs(tmp_path):
        model = job["wildcards"].get("model")
        if job["rule"] in ("features", "encode", "layer_diagrams", "topology_pairs", "maps"):
            by_model.setdefault(model, set()).add(job["priority"])
        elif model is None:
            assert "priority" not in job, job
    s = JobSizing(study())
    assert set(by_model) == {"smollm2-135m", "tiny-gpt2", "tiny-neox"}
    for model, values in by_model.items():
        assert len(values) == 1 and values.pop() == pytest.approx(s.priority(model)), model
    assert s.priority("smollm2-135m") > max(s.priority("tiny-gpt2"), s.priority("tiny-neox"))


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


def test_alpha_selection_reaches_the_encode_and_baseline_jobs():
    # A change reruns the jobs that use it: the keys are in the params; the bootstrap keys only
    # where bootstrap is chosen, so editing them leaves nested jobs alone.
    nested = params.encode(study(), "demo")
    assert nested["alpha_selection"] == "nested" and "bootstrap" not in nested
    boot = study(alpha_selection="bootstrap", bootstrap={"draws": 7})
    p = params.encode(boot, "demo")
    assert p["alpha_selection"] == "bootstrap"
    assert p["bootstrap"] == {"chunk_trs": 40, "draws": 7, "held_out": 0.2}  # schema defaults
    assert params.baseline(boot, "demo", "word_rate", "g1")["bootstrap"] == p["bootstrap"]
    options = encoding.variant_options(p)
    assert options["alpha_selection"] == "bootstrap" and options["bootstrap"]["draws"] == 7
    # ... and planning counts the draws: 7 inner fits per outer fold instead of 3 other stories.
    drawn = JobSizing(boot).encode_shape("demo", "tiny-gpt2")
    folded = JobSizing(study()).encode_shape("demo", "tiny-gpt2")
    assert [len(inner) for _, _, inner in drawn.fold_sizes()] == [7] * 4
    assert [len(inner) for _, _, inner in folded.fold_sizes()] == [3] * 4
    (n_tr, _, inner), *_ = drawn.fold_sizes()
    assert inner[0] == (n_tr - 40 * round(0.2 * n_tr / 40), 40 * round(0.2 * n_tr / 40))
