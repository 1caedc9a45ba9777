import copy
import re

import pytest
import yaml
from conftest import REPO, SCHEMAS, snakemake, write_config

from brainshape import params
from brainshape.checks import check_study
from brainshape.config import check_planted, check_schema, load_registry_dict, validate
from brainshape.errors import BrainshapeError
from brainshape.sizing import JobSizing
from brainshape.study import Study

CONFIG_SCHEMA = SCHEMAS / "config.schema.yaml"
MODELS_SCHEMA = SCHEMAS / "models.schema.yaml"


def demo_config():
    return yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


def registry():
    return load_registry_dict(REPO / "config" / "models.demo.yaml", MODELS_SCHEMA)


def test_schemas_are_valid_json_schemas():
    check_schema(CONFIG_SCHEMA)
    check_schema(MODELS_SCHEMA)


def test_defaults_are_filled_from_the_schema():
    cfg = validate(demo_config(), CONFIG_SCHEMA, "demo.yaml")
    assert cfg["fmri"]["confounds"][:3] == ["trans_x", "trans_y", "trans_z"]
    assert cfg["fmri"]["detrend"] is True
    assert cfg["encoding"]["lanczos_window"] == 3
    assert cfg["datasets"]["demo"]["words"]["tier"] == "words"
    assert cfg["datasets"]["demo"]["fmriprep_dir"] == "derivatives/fmriprep"
    assert cfg["features"]["word_token"] == "last"


def test_the_study_config_validates():
    validate(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), CONFIG_SCHEMA, "c")


def test_unknown_key_names_the_key_and_suggests():
    cfg = demo_config()
    cfg["fmri"]["trimstart"] = 3
    with pytest.raises(BrainshapeError) as err:
        validate(cfg, CONFIG_SCHEMA, "demo.yaml")
    msg = str(err.value)
    assert msg.startswith("demo.yaml: unknown key 'fmri.trimstart' (did you mean 'trim_start'?)")
    assert "\n" not in msg


def test_wrong_type_names_the_key():
    cfg = demo_config()
    cfg["fmri"]["trim_start"] = "two"
    with pytest.raises(
        BrainshapeError,
        match=r"^demo.yaml: key 'fmri.trim_start' must be of type "
        r"integer, got str 'two'$",
    ):
        validate(cfg, CONFIG_SCHEMA, "demo.yaml")


def test_bad_enum_lists_the_choices():
    cfg = demo_config()
    cfg["datasets"]["demo"]["words"]["format"] = "praat"
    with pytest.raises(
        BrainshapeError,
        match=r"key 'datasets.demo.words.format' is 'praat'; "
        r"choose one of: gentle, textgrid, events",
    ):
        validate(cfg, CONFIG_SCHEMA, "demo.yaml")


def test_missing_required_key():
    cfg = demo_config()
    del cfg["datasets"]["demo"]["subjects"]
    with pytest.raises(BrainshapeError, match=r"missing required key 'datasets.demo.subjects'"):
        validate(cfg, CONFIG_SCHEMA, "demo.yaml")


def test_missing_registry_file(tmp_path):
    with pytest.raises(BrainshapeError, match=r"model registry file not found: .*nope.yaml"):
        load_registry_dict(tmp_path / "nope.yaml", MODELS_SCHEMA)


def test_registry_with_bad_variant_kind(tmp_path):
    reg = yaml.safe_load((REPO / "config" / "models.demo.yaml").read_text())
    reg["models"]["tiny-gpt2"]["variants"]["fp32"]["kind"] = "fp8"
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(reg))
    with pytest.raises(BrainshapeError, match=r"models.tiny-gpt2.variants.fp32.kind' is 'fp8'"):
        load_registry_dict(path, MODELS_SCHEMA)


def test_planted_models_are_checked_only_where_a_dataset_is_a_demo():
    """The demo section has defaults (tiny-gpt2, ...) in every config; a study of published
    data whose registry lacks the demo's models must not trip over them."""
    study_registry = load_registry_dict(REPO / "config" / "models.yaml", MODELS_SCHEMA)
    cfg = validate(
        yaml.safe_load((REPO / "config" / "datasets" / "narratives.yaml").read_text()),
        CONFIG_SCHEMA,
        "narratives.yaml",
    )
    assert {e["model"] for e in cfg["demo"]["planted"]} - set(study_registry["models"])
    check_planted(cfg, study_registry, "narratives.yaml")  # no demo dataset: nothing to check
    demo = validate(demo_config(), CONFIG_SCHEMA, "demo.yaml")
    check_planted(demo, registry(), "demo.yaml")
    with pytest.raises(BrainshapeError, match=r"^demo.yaml: demo.planted\[\d\]\.(model|variant) "):
        check_planted(demo, study_registry, "demo.yaml")


def study(cfg=None):
    cfg = validate(cfg or demo_config(), CONFIG_SCHEMA, "demo.yaml")
    return Study(cfg, registry(), source="demo.yaml")


def test_unknown_model_id_suggests_the_closest():
    cfg = demo_config()
    cfg["models"] = ["tiny-gtp2"]
    with pytest.raises(
        BrainshapeError,
        match=r"unknown model id 'tiny-gtp2' \(did you mean "
        r"'tiny-gpt2'\?\)",
    ):
        study(cfg)


def test_study_selection_and_params():
    s = study()
    assert s.model_variants()[:2] == [("tiny-gpt2", "fp32"), ("tiny-gpt2", "untrained")]
    assert s.subjects("demo") == ["01", "02", "03", "04"]
    p = params.fmri(s, "demo", "02")
    func = "resources/demo/demo/derivatives/fmriprep/sub-02/func/sub-02_task-lighthouse"
    assert [r["story"] for r in p["runs"]] == ["lighthouse", "orchard", "ferry", "glacier"]
    assert p["runs"][0]["response"] == f"{func}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    assert p["runs"][0]["confounds"] == f"{func}_desc-confounds_timeseries.tsv"
    assert p["atlas"][0].endswith("atlas-demo_space-MNI152NLin2009cAsym_dseg.nii.gz")


def test_variants_chosen_per_model():
    cfg = demo_config()
    cfg["variants"] = {"smollm2-135m": ["fp32"]}
    s = study(cfg)
    assert s.model_variants() == [
        ("tiny-gpt2", "fp32"), ("tiny-gpt2", "untrained"),
        ("tiny-neox", "fp32"), ("tiny-neox", "untrained"),
        ("smollm2-135m", "fp32"),
    ]  # fmt: skip
    cfg["variants"] = ["untrained"]
    assert [v for _, v in study(cfg).model_variants()] == ["untrained"] * 3
    cfg["variants"] = {"smollm2-135m": ["fp23"]}
    with pytest.raises(BrainshapeError) as err:
        study(cfg)
    assert str(err.value) == (
        "demo.yaml: variants.smollm2-135m lists 'fp23', which the entry lacks (did you mean "
        "'fp32'?)"
    )
    cfg["variants"] = {"smollm-135m": ["fp32"]}
    with pytest.raises(BrainshapeError, match=r"^demo.yaml: variants lists unknown model id "
                       r"'smollm-135m' \(did you mean 'smollm2-135m'\?\)"):  # fmt: skip
        study(cfg)


def test_study_targets_and_inputs_in_the_dry_run(tmp_path):
    """The rules spell the paths; the dry run shows the targets and that every stage of a demo
    dataset depends on its one directory rather than on its files."""
    cfg = demo_config()
    cfg["registry"] = str(REPO / "config" / "models.demo.yaml")
    write_config(tmp_path, cfg)
    out = snakemake(tmp_path, "-n", "--forceall").stdout
    assert "results/demo/brainscores.parquet" in out
    jobs = [b for b in re.split(r"\n(?=(?:local)?rule \w+:)", out) if "output:" in b]

    def field(rule, key):
        return [
            line.split(f"{key}: ")[1]
            for b in jobs
            if b.startswith((f"rule {rule}:", f"localrule {rule}:"))
            for line in b.splitlines()
            if line.strip().startswith(f"{key}:")
        ]

    assert field("words", "input") == ["resources/demo/demo"]
    assert set(field("fmri", "output")) == {f"results/demo/fmri/sub-0{i}" for i in range(1, 5)}


def test_real_dataset_with_missing_files_fails_in_one_message(tmp_path):
    cfg = copy.deepcopy(demo_config())
    cfg["datasets"] = {
        "real": {
            "bids_root": str(tmp_path),
            "subjects": ["01"],
            "stories": ["a", "b", "c"],
            "atlas": {"image": "atlas.nii.gz", "labels": "atlas.tsv"},
        }
    }
    s = study(cfg)
    (tmp_path / "stimuli" / "a").mkdir(parents=True)
    (tmp_path / "stimuli" / "a" / "align.json").write_text("{}")
    with pytest.raises(BrainshapeError) as err:
        check_study(s, JobSizing(s))
    msg = str(err.value)
    assert msg.startswith("datasets.real: 13 input file(s) missing: ")
    assert "stimuli/b/align.json" in msg and "and 10 more" in msg


def test_demo_dataset_root_is_fixed(tmp_path):
    cfg = demo_config()
    cfg["registry"] = str(REPO / "config" / "models.demo.yaml")
    cfg["datasets"]["demo"]["bids_root"] = "elsewhere"
    write_config(tmp_path, cfg)
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    assert (
        "brainshape: demo.yaml" not in proc.stderr
        and "datasets.demo is a demo dataset, so its bids_root must be 'resources/demo/demo' "
        "(got 'elsewhere')"
        in proc.stderr
    )
