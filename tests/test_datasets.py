"""The published datasets end to end, on their stand-ins: importer -> runs sheet -> workflow.

For each stand-in (ds003020, Narratives, Alice): the workflow, pointed at the sheet the importer
wrote, finds the planted layer in the planted ROI; the same sheet with every offset one TR later
gives a clearly lower score (the offset is used); the words table and the text fed to the model
hold no non-speech marker. One workflow run per dataset, up to the brainscores table; the
shifted sheet reruns only what it touches. Also: the ready configs of config/datasets/ are
valid.
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, snakemake, write_config

from brainshape import importers, sheet, standins, stimuli
from brainshape.config import CONFIG_SCHEMA, load_yaml, validate

REGISTRY = REPO / "config" / "models.demo.yaml"
PLANTED = standins.PLANTED

# The runs sheet reaches the workflow through datasets.<name>.runs; until the config knows that
# key these tests have nothing to run against.
_DATASET_KEYS = load_yaml(CONFIG_SCHEMA, "schema")["$defs"]["dataset"]["properties"]
needs_runs_key = pytest.mark.skipif(
    "runs" not in _DATASET_KEYS,
    reason="datasets.<name>.runs is not in workflow/schemas/config.schema.yaml yet",
)
pytestmark = needs_runs_key


@pytest.mark.parametrize("name", ["ds003020", "narratives", "alice"])
def test_ready_configs_are_valid(name):
    path = REPO / "config" / "datasets" / f"{name}.yaml"
    cfg = validate(yaml.safe_load(path.read_text()), CONFIG_SCHEMA, str(path))
    assert list(cfg["datasets"]) == [name]
    assert cfg["datasets"][name]["runs"] == f"runs/{name}.tsv"
    folds = cfg["encoding"]["folds"]
    assert folds == ("stories" if name == "ds003020" else "blocks")


# --- one workflow run per stand-in ---------------------------------------------------------------


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def _config(name: str, root: Path, runs: Path, model_root: Path) -> dict:
    """A cut-down study on one stand-in: tiny-gpt2 only, few permutations, ROI means."""
    dataset = {"bids_root": str(root), "runs": str(runs)}
    if name == "alice":  # SPM's headers say 0 or 1 s; the sheet's TR is the sidecars' 2 s
        dataset["tr_overrides_header"] = True
    if name != "ds003020":  # NIfTI responses: the stand-in's atlas; HDF5: the sheet's labels
        dataset["atlas"] = {
            "image": str(root / standins.ATLAS_IMAGE),
            "labels": str(root / standins.ATLAS_LABELS),
        }
    folds = {"folds": "stories"} if name == "ds003020" else {"folds": "blocks", "n_blocks": 4}
    return {
        "registry": str(REGISTRY),
        "models": [PLANTED["model"]],
        "variants": [PLANTED["variant"]],
        "model_root": str(model_root),
        "datasets": {name: dataset},
        "features": dict(standins.FEATURES),
        "fmri": {"targets": "roi_mean", "trim_start": 0, "trim_end": 0},
        "encoding": {
            "delays": [1, 2, 3, 4],
            "n_permutations": 10,
            "threads": 1,
            "metrics": ["r"],
            **folds,
        },
    }


def _planted_scores(scores: pd.DataFrame) -> pd.DataFrame:
    return scores[
        (scores.model == PLANTED["model"])
        & (scores.variant == PLANTED["variant"])
        & (scores.roi == PLANTED["roi"])
        & (scores.hemisphere == PLANTED["hemisphere"])
    ]


def _run(tmp_path_factory, model_root, name):
    """Generate the stand-in, import it, run the workflow to the brainscores; then rerun with
    every offset one TR later. Returns (work dir, root, truth, scores, shifted scores)."""
    base = tmp_path_factory.mktemp(name)
    root = base / name
    truth = standins.generate(name, root, registry_path=REGISTRY, model_root=model_root)
    options = {"ds003020": {"labels": standins.LABELS}, "alice": {"tr_overrides_header": True}}
    runs = importers.run(name, root, **options.get(name, {})).runs
    work = base / "work"
    path = work / "runs" / f"{name}.tsv"
    sheet.write_sheet(path, runs)
    write_config(work, _config(name, root, path, model_root))
    target = f"results/{name}/brainscores.parquet"
    snakemake(work, "--cores", "2", target)
    scores = pd.read_parquet(work / target)
    later = runs.copy()
    later["offset"] = later.offset + later.tr
    sheet.write_sheet(path, later)
    plan = snakemake(work, "-n", "--cores", "2", target).stdout
    snakemake(work, "--cores", "2", target)
    shifted = pd.read_parquet(work / target)
    return {
        "work": work,
        "root": root,
        "truth": truth,
        "scores": scores,
        "shifted": shifted,
        "plan": plan,
    }


@pytest.fixture(scope="module")
def lebel_run(tmp_path_factory, model_root):
    return _run(tmp_path_factory, model_root, "ds003020")


@pytest.fixture(scope="module")
def narratives_run(tmp_path_factory, model_root):
    return _run(tmp_path_factory, model_root, "narratives")


@pytest.fixture(scope="module")
def alice_run(tmp_path_factory, model_root):
    return _run(tmp_path_factory, model_root, "alice")


RUNS = {"ds003020": "lebel_run", "narratives": "narratives_run", "alice": "alice_run"}


@pytest.mark.workflow
@pytest.mark.parametrize("name", list(RUNS))
def test_planted_layer_is_the_best_in_the_planted_roi(name, request):
    result = request.getfixturevalue(RUNS[name])
    scores = _planted_scores(result["scores"])
    kept = [r for r in result["truth"]["runs"] if not r["excluded"]]
    assert set(scores.subject) == {r["subject"] for r in kept}  # every subject gets scores
    by_layer = scores.groupby("layer")["score"].mean()
    assert by_layer.idxmax() == PLANTED["layer"], by_layer.round(3).to_dict()
    assert by_layer[PLANTED["layer"]] > 0.4, by_layer.round(3).to_dict()
    for null in result["truth"]["null"]:
        rows = result["scores"][
            (result["scores"].roi == null["roi"])
            & (result["scores"].hemisphere == null["hemisphere"])
        ]
        assert abs(rows.score.mean()) < 0.1, (null, rows.score.mean())


@pytest.mark.workflow
@pytest.mark.parametrize("name", list(RUNS))
def test_offset_one_tr_later_scores_clearly_lower(name, request):
    result = request.getfixturevalue(RUNS[name])
    at = _planted_scores(result["scores"])
    later = _planted_scores(result["shifted"])
    at = at[at.layer == PLANTED["layer"]].set_index("subject").score
    later = later[later.layer == PLANTED["layer"]].set_index("subject").score
    # Over subjects: a subject with one short story (Narratives' sub-146, alone on its story)
    # has too few volumes for its own comparison to be sure; the group's is.
    assert (later < at).mean() >= 0.75 and (at - later).mean() > 0.03, (
        at.to_dict(),
        later.to_dict(),
    )
    # Only what the sheet touches reran: the prepared model stays.
    assert "rule prepare_model" not in result["plan"] and "rule encode" in result["plan"]


@pytest.mark.workflow
def test_markers_never_reach_the_model(lebel_run, model_root):
    from transformers import AutoTokenizer

    work, root = lebel_run["work"], lebel_run["root"]
    words = pd.read_parquet(work / "results" / "ds003020" / "words.parquet")
    runs = importers.ds003020(root).runs
    tokenizer = AutoTokenizer.from_pretrained(Path(model_root) / PLANTED["model"])
    for story, table in words.groupby("story", sort=False):
        grid = root / "derivative" / "TextGrids" / f"{story}.TextGrid"
        tier = stimuli.textgrid_tiers(grid)[1].items  # the words tier, second
        labels = [label for _, _, label in tier]
        markers = stimuli.is_nonspeech(labels)
        assert markers.sum() > 10  # the TextGrid has them ...
        assert not stimuli.is_nonspeech(table.word).any()  # ... the words table has none
        assert table.word.tolist() == [w.strip() for w, m in zip(labels, markers, strict=True)
                                       if not m]  # fmt: skip
        # The text the model reads, as its tokenizer gives it back.
        ids = tokenizer(" ".join(table.word), add_special_tokens=False)["input_ids"]
        read = tokenizer.decode(ids).split()
        assert not stimuli.is_nonspeech(read).any()
        feats = np.load(work / "results/ds003020/features" / PLANTED["model"]
                        / PLANTED["variant"] / f"{story}.npy", mmap_mode="r")  # fmt: skip
        assert feats.shape[1] == len(table)  # one feature row per word, none per marker
    assert set(words.story) == set(runs.story)


@pytest.mark.workflow
def test_ceilings_follow_who_shares_a_story(narratives_run):
    scores = _planted_scores(narratives_run["scores"])
    ceiling = scores.groupby("subject").ceiling.first()
    # sub-146 alone heard merlin; everyone else shares a story with someone (sub-127 its
    # milkyway with sub-116, not its black).
    assert math.isnan(ceiling["146"])
    assert ceiling.drop("146").notna().all() and (ceiling.drop("146") > 0).all(), ceiling


@pytest.mark.workflow
def test_voxel_ceilings_are_finite_where_masks_and_grids_differ(alice_run, tmp_path):
    """Alice's subjects have other voxel grids and masks: the voxel-mode ceiling compares the
    voxels they share, by position, and is finite for nearly all of them."""
    from brainshape import fmri
    from brainshape.baselines import inter_subject_ceiling
    from brainshape.subjects import read_subjects

    root = alice_run["root"]
    runs = sheet.read_sheet(alice_run["work"] / "runs" / "alice.tsv")
    runs = runs[~runs.exclude]
    atlas = (root / standins.ATLAS_IMAGE, root / standins.ATLAS_LABELS)
    cleaning = fmri.Cleaning(detrend=True, standardize=True, tr_overrides_header=True)
    dirs = []
    for n, (sub, rows) in enumerate(runs.groupby("subject")):
        rows = rows.to_dict("records")
        for row in rows:
            for column in sheet.PATH_COLUMNS:
                if row[column]:
                    row[column] = str(root / row[column])
            if n == 0:  # this subject's mask loses the edge of the planted ROI
                row["response"] = str(_without_edge(Path(row["response"]), tmp_path, atlas))
        out = tmp_path / f"sub-{sub}"
        fmri.preprocess_runs(sub, rows, out, atlas=atlas, rois=None, mode="voxels",
                             cleaning=cleaning)  # fmt: skip
        dirs.append(out)
    subjects = read_subjects(dirs)
    voxel_sets = {frozenset(map(tuple, s.targets[["x", "y", "z"]].to_numpy())) for s in
                  subjects.values()}  # fmt: skip
    assert len(voxel_sets) > 1  # the masks do differ
    table = inter_subject_ceiling(subjects)
    assert not table.attrs["without_ceiling"]
    assert table["isc"].notna().mean() > 0.9


def _without_edge(bold: Path, tmp_path: Path, atlas) -> Path:
    """A copy of ``bold`` whose voxels of the planted ROI nearest the edge of the field of view
    are constant (outside a brain mask, as at a real mask's edge)."""
    import nibabel as nib
    import numpy as np
    from nilearn.image import resample_to_img

    img = nib.load(bold)
    data = np.asarray(img.dataobj).copy()
    labels = np.asarray(resample_to_img(nib.load(atlas[0]), img, interpolation="nearest").dataobj)
    inside = np.argwhere(labels > 0)
    edge = inside[np.argsort(inside[:, 0])[:3]]  # three labelled voxels at the lowest x
    for i, j, k in edge:
        data[i, j, k, :] = 0
    out = tmp_path / "edge" / bold.name
    out.parent.mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(data, img.affine, img.header), out)
    return out
