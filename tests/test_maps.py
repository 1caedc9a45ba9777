"""Brain maps (brainshape.maps): best layers chosen out of sample at every site, group
q-values that hold their level without signal and find planted signal, voxels painted at their
world position on each subject's grid and the common one, ROI means on their atlas voxels,
subject-native columns in tables only; and, on a run of the small demo with voxel targets, the
planted voxels light up in the NIfTI maps and the empty ones do not."""

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import snakemake
from scipy import stats

from brainshape import analysis, demo, maps
from brainshape.errors import BrainshapeError

AFFINE = np.array([[2.0, 0, 0, -20], [0, 2.0, 0, -30], [0, 0, 2.0, -10], [0, 0, 0, 1]])


def voxel_targets(ijk: np.ndarray, affine: np.ndarray = AFFINE, roi: str = "A") -> pd.DataFrame:
    """A targets table of voxel targets at grid indices ``ijk`` (n, 3)."""
    ijk = np.asarray(ijk, dtype=np.int64)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    return pd.DataFrame({
        "target": np.arange(len(ijk)), "roi": roi,
        "hemisphere": np.where(xyz[:, 0] < 0, "L", "R"), "n_voxels": 1,
        "i": ijk[:, 0], "j": ijk[:, 1], "k": ijk[:, 2],
        "x": xyz[:, 0].round(3), "y": xyz[:, 1].round(3), "z": xyz[:, 2].round(3),
    })  # fmt: skip


def cube(n: int) -> np.ndarray:
    """The first ``n`` voxels of a 20 x 20 x 20 grid, in C order."""
    return np.stack(np.unravel_index(np.arange(n), (20, 20, 20)), axis=1)


def encoding_rows(scores: np.ndarray, p_values: np.ndarray | None = None) -> pd.DataFrame:
    """Encoding rows of subjects '01', '02', ... from ``scores`` (subjects, layers, targets)."""
    n_sub, n_layers, n_targets = scores.shape
    sub, layer, target = np.meshgrid(np.arange(n_sub), np.arange(n_layers), np.arange(n_targets),
                                     indexing="ij")  # fmt: skip
    rows = pd.DataFrame({
        "layer": layer.ravel(), "subject": [f"{s + 1:02d}" for s in sub.ravel()],
        "target": target.ravel(), "roi": "A", "hemisphere": "L", "score": scores.ravel(),
    })  # fmt: skip
    rows["p_value"] = np.nan if p_values is None else p_values.ravel()
    return rows


def same_voxels(n_sub: int, n_targets: int) -> dict[str, maps.Subject]:
    grid = maps.Grid((20, 20, 20), AFFINE)
    targets = voxel_targets(cube(n_targets))
    return {f"{s + 1:02d}": maps.place_subject(targets, grid) for s in range(n_sub)}


def null_z(rng, n_sub: int, n_layers: int, n_sites: int) -> np.ndarray:
    """z-values without signal whose layers are alike (a shared part and a random walk)."""
    walk = np.cumsum(rng.standard_normal((n_sub, n_layers, n_sites)), axis=1)
    walk /= np.sqrt(np.arange(1, n_layers + 1))[None, :, None]
    return np.sqrt(0.5) * rng.standard_normal((n_sub, 1, n_sites)) + np.sqrt(0.5) * walk


# --- the best layer, out of sample -------------------------------------------------------------


def test_each_subjects_layer_is_the_best_on_the_other_subjects():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((5, 6, 30)) * 0.1
    subjects = same_voxels(5, 30)
    held = maps.held_out_scores(maps.with_sites(encoding_rows(scores), subjects))
    assert len(held) == 5 * 30 and set(held["choice"]) == {"target"}
    for s in range(5):
        for v in range(30):
            others = np.delete(scores[:, :, v], s, axis=0).mean(axis=0)
            row = held[(held.subject == f"{s + 1:02d}") & (held.target == v)].iloc[0]
            assert row.layer == int(others.argmax())
            assert row.score == pytest.approx(scores[s, int(others.argmax()), v])
    # The reference implementation gives the same choices (one site at a time).
    index, _ = analysis.held_out_best(scores[:, :, 7], np.ones((1, 5)))
    assert held[held.target == 7].sort_values("subject")["layer"].tolist() == list(index[0])


def test_the_choice_at_many_sites_at_once_is_the_choice_at_each():
    rng = np.random.default_rng(7)
    scores = rng.standard_normal((6, 9, 40))
    index, values = analysis.held_out_best_sites(scores)
    for v in range(40):
        one_index, one_values = analysis.held_out_best(scores[:, :, v], np.ones((1, 6)))
        assert (index[:, v] == one_index[0]).all() and np.allclose(values[:, v], one_values[0])
    index, values = analysis.held_out_best_sites(scores[:1])
    assert (index == -1).all() and np.isnan(values).all()


def test_a_voxel_some_subjects_lack_is_chosen_on_those_that_have_it():
    rng = np.random.default_rng(8)
    grid = maps.Grid((20, 20, 20), AFFINE)
    scores = rng.standard_normal((4, 5, 10)) * 0.1
    subjects = {f"{s + 1:02d}": maps.place_subject(voxel_targets(cube(10)), grid) for s in range(4)}
    # Subject 04's voxel 0 lies elsewhere: the other three share voxel 0.
    moved = cube(10)
    moved[0] = (19, 19, 19)
    subjects["04"] = maps.place_subject(voxel_targets(moved), grid)
    held = maps.held_out_scores(maps.with_sites(encoding_rows(scores), subjects))
    for s in range(3):
        others = [o for o in range(3) if o != s]
        row = held[(held.subject == f"{s + 1:02d}") & (held.target == 0)].iloc[0]
        assert row.choice == "target"
        assert row.layer == int(scores[others, :, 0].mean(axis=0).argmax())


def test_targets_no_other_subject_has_take_the_layer_of_their_roi():
    rng = np.random.default_rng(1)
    grid = maps.Grid((20, 20, 20), AFFINE)
    scores = rng.standard_normal((3, 4, 10)) * 0.1
    subjects = {f"{s + 1:02d}": maps.place_subject(voxel_targets(cube(10)), grid) for s in range(3)}
    # Subject 03's last voxel lies where nobody else has one.
    lonely = cube(10)
    lonely[-1] = (19, 19, 19)
    subjects["03"] = maps.place_subject(voxel_targets(lonely), grid)
    held = maps.held_out_scores(maps.with_sites(encoding_rows(scores), subjects))
    row = held[(held.subject == "03") & (held.target == 9)].iloc[0]
    roi_means = scores.mean(axis=2)  # (subjects, layers): every target is in ROI A L
    assert row.choice == "roi" and row.layer == int(roi_means[:2].mean(axis=0).argmax())
    assert (held[held.target < 9]["choice"] == "target").all()


def test_subject_native_columns_are_tabled_in_column_order_with_their_rois_layer():
    rng = np.random.default_rng(2)
    scores = rng.standard_normal((2, 3, 6)) * 0.1
    columns = pd.DataFrame({"target": np.arange(6), "roi": "A", "hemisphere": "L",
                            "n_voxels": 1, "column": np.arange(6) * 3})  # fmt: skip
    subjects = {s: maps.place_subject(columns, None) for s in ("01", "02")}
    result = maps.variant_maps(encoding_rows(scores), subjects)
    assert result.common is None and result.painted == {}
    assert result.group.empty  # no site: nothing to average across subjects
    table = result.subjects
    assert set(table["choice"]) == {"roi"}
    for s, other in ((0, 1), (1, 0)):
        layer = int(scores[other].mean(axis=1).argmax())
        part = table[table.subject == f"{s + 1:02d}"]
        assert part["target"].tolist() == list(range(6)) and (part["layer"] == layer).all()
        assert part["column"].tolist() == [0, 3, 6, 9, 12, 15]  # the response file's columns
        assert np.allclose(part["score"], scores[s, layer])


def test_an_encoding_subject_without_an_fmri_folder_is_named():
    subjects = same_voxels(1, 3)
    rows = encoding_rows(np.zeros((2, 2, 3)))
    with pytest.raises(BrainshapeError, match=r"subjects \['02'\] without an fMRI folder"):
        maps.with_sites(rows, subjects)


# --- group q-values ---------------------------------------------------------------------------


def test_group_p_values_hold_their_level_without_signal():
    # 20 subjects, 12 alike layers, 1500 sites, no signal. The p-values at each subject's
    # held-out layer depend on one another through the choice: Stouffer over them rejects too
    # often. Stouffer per layer with Bonferroni over layers does not.
    rng = np.random.default_rng(3)
    z = null_z(rng, 20, 12, 1500)
    rows = maps.with_sites(encoding_rows(z * 0.05, stats.norm.sf(z)), same_voxels(20, 1500))
    p = maps.site_p_values(rows)
    held = maps.held_out_scores(rows)
    at_choice = held.groupby("target")["p_value"].apply(
        lambda s: stats.norm.sf(stats.norm.isf(s).sum() / np.sqrt(len(s)))
    )
    print(f"P(p < 0.05): per layer + Bonferroni {np.mean(p < 0.05):.3f}, at the held-out "
          f"layers {np.mean(at_choice < 0.05):.3f}")  # fmt: skip
    assert np.mean(p < 0.05) <= 0.05
    assert np.mean(at_choice < 0.05) > 0.065  # 1500 sites: 0.05 + 2.7 standard errors
    group = maps.group_table(held, p)
    assert (group["q_value"] < 0.05).sum() == 0


def test_planted_sites_are_found_at_their_layer():
    rng = np.random.default_rng(4)
    z = null_z(rng, 4, 6, 400)
    z[:, 3, :40] += 5.0  # 40 sites driven by layer 3 in every subject
    z[:, 2, :40] += 2.0
    result = maps.variant_maps(encoding_rows(z * 0.05, stats.norm.sf(z)), same_voxels(4, 400))
    order = result.subjects[result.subjects.subject == "01"].sort_values("target")["site"]
    group = result.group.set_index("site").loc[order]  # in target order
    found = group["q_value"].to_numpy() < 0.05
    assert found[:40].all() and (group["layer"].to_numpy()[:40] == 3).all()
    assert found[40:].mean() <= 0.05
    assert (group["n_subjects"] == 4).all()


def test_without_p_values_there_is_no_q_map(tmp_path):
    subjects = same_voxels(2, 5)
    result = maps.variant_maps(encoding_rows(np.ones((2, 2, 5)) * 0.1), subjects)
    assert result.group["q_value"].isna().all()
    maps.write_variant_maps(tmp_path / "m", result, subjects)
    assert (tmp_path / "m" / "score.nii.gz").is_file()
    assert not (tmp_path / "m" / "q.nii.gz").exists()


# --- grids and painting -------------------------------------------------------------------------


def test_voxels_are_painted_at_their_world_position_on_every_grid(tmp_path, caplog):
    rng = np.random.default_rng(5)
    grid_a = maps.Grid((20, 20, 20), AFFINE)
    # Subject 02's grid starts 3 voxels further left and is larger: the same world positions
    # have other indices there.
    shifted = AFFINE.copy()
    shifted[0, 3] -= 6.0
    grid_b = maps.Grid((26, 20, 20), shifted)
    coarse = AFFINE.copy()
    coarse[:3, :3] *= 1.5  # another voxel size: nothing of 03 lies on the common grid
    ijk = cube(12)
    subjects = {
        "01": maps.place_subject(voxel_targets(ijk), grid_a),
        "02": maps.place_subject(voxel_targets(ijk + [3, 0, 0], shifted), grid_b),
        "03": maps.place_subject(
            voxel_targets(ijk + [1, 1, 1], coarse), maps.Grid((20,) * 3, coarse)
        ),  # fmt: skip
    }
    scores = rng.uniform(0.1, 0.9, (3, 3, 12))
    result = maps.variant_maps(encoding_rows(scores, np.full(scores.shape, 1e-3)), subjects)
    assert "lie off the common grid" in caplog.text
    maps.write_variant_maps(tmp_path / "m", result, subjects)
    score = nib.load(tmp_path / "m" / "score.nii.gz")
    n_subjects = np.asarray(nib.load(tmp_path / "m" / "n_subjects.nii.gz").dataobj)
    held = result.subjects
    for target in range(12):
        xyz = subjects["01"].targets.loc[target, ["x", "y", "z"]].to_numpy(np.float64)
        i, j, k = np.rint(np.linalg.inv(score.affine) @ [*xyz, 1])[:3].astype(int)
        mean = held[(held.target == target) & held.subject.isin(["01", "02"])]["score"].mean()
        assert np.asarray(score.dataobj)[i, j, k] == pytest.approx(mean, abs=1e-6)
        assert n_subjects[i, j, k] == 2
    # Each subject's own map is on its own grid, at its own indices.
    own = nib.load(tmp_path / "m" / "sub-03" / "score.nii.gz")
    assert np.allclose(own.affine, coarse) and own.shape == (20, 20, 20)
    values = held[held.subject == "03"].set_index("target")["score"]
    for target, (i, j, k) in enumerate(ijk + 1):
        assert np.asarray(own.dataobj)[i, j, k] == pytest.approx(values[target], abs=1e-6)
    files = {p.relative_to(tmp_path / "m").as_posix() for p in (tmp_path / "m").rglob("*")}
    assert {"score.nii.gz", "layer.nii.gz", "q.nii.gz", "n_subjects.nii.gz", "group.parquet",
            "subjects.parquet", "maps.json", "sub-01/score.nii.gz", "sub-02/layer.nii.gz",
            ".manifest.json"} <= files  # fmt: skip


def test_roi_means_are_painted_on_their_atlas_voxels(tmp_path):
    atlas = demo.demo_atlas()
    image, labels = tmp_path / "atlas.nii.gz", tmp_path / "atlas.tsv"
    nib.save(nib.Nifti1Image(atlas.labels.astype(np.int16), atlas.affine), image)
    pd.DataFrame({"index": range(1, 6), "name": demo.ROIS}).to_csv(labels, sep="\t", index=False)
    grid = maps.Grid(demo.GRID_SHAPE, atlas.affine)
    sites = [(r, h) for r in demo.ROIS for h in ("L", "R")]
    targets = pd.DataFrame({"target": range(10), "roi": [r for r, _ in sites],
                            "hemisphere": [h for _, h in sites], "n_voxels": 40})  # fmt: skip
    painted = maps.atlas_voxels((image, labels), grid, None)
    subjects = {s: maps.place_subject(targets, grid, painted) for s in ("01", "02", "03")}
    scores = np.tile(np.linspace(0.1, 1.0, 10), (3, 2, 1))
    result = maps.variant_maps(encoding_rows(scores, np.full(scores.shape, 0.01)), subjects)
    volume = result.common.volume(result.group["score"].to_numpy())
    index = np.flatnonzero(atlas.mask.ravel())
    for n, (roi, hemi) in enumerate(sites):
        voxels = np.unravel_index(index[atlas.voxels[(roi, hemi)]], demo.GRID_SHAPE)
        assert np.allclose(volume[voxels], scores[0, 0, n])
    assert np.isnan(volume[atlas.labels == 0]).all()


def test_per_layer_maps_are_one_volume_per_layer(tmp_path):
    subjects = same_voxels(2, 4)
    scores = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4) / 100
    result = maps.variant_maps(encoding_rows(scores), subjects, per_layer=True)
    maps.write_variant_maps(tmp_path / "m", result, subjects)
    layers = nib.load(tmp_path / "m" / "layers.nii.gz")
    assert layers.shape == (20, 20, 20, 3)
    assert np.allclose(np.asarray(layers.dataobj)[0, 0, 3], scores[:, :, 3].mean(axis=0))
    info = json.loads((tmp_path / "m" / "maps.json").read_text())
    assert info == {"deepest_layer": 2, "subjects": ["01", "02"], "mapped": ["01", "02"]}


def test_baselines_are_subtracted_per_target_then_averaged():
    subjects = same_voxels(2, 3)
    scores = np.full((2, 2, 3), 0.5)
    base = pd.DataFrame(
        {
            "baseline": "word_rate",
            "subject": ["01"] * 3 + ["02"] * 3,
            "target": [0, 1, 2] * 2,
            "score": [0.1, 0.2, 0.3, 0.3, 0.2, 0.1],
        }
    )
    result = maps.variant_maps(encoding_rows(scores), subjects, base)
    assert np.allclose(result.group["minus_word_rate"], [0.3, 0.3, 0.3])
    assert np.allclose(result.subjects["minus_word_rate"], 0.5 - base["score"])


# --- figures ------------------------------------------------------------------------------------


def test_map_figure_has_a_row_per_variant_and_one_colour_scale(tmp_path):
    subjects = same_voxels(3, 50)
    rng = np.random.default_rng(6)
    z = null_z(rng, 3, 4, 50)
    z[:, 1, :10] += 6
    folders = []
    for name, factor in (("a", 0.05), ("b", 0.1)):
        result = maps.variant_maps(encoding_rows(z * factor, stats.norm.sf(z)), subjects)
        maps.write_variant_maps(tmp_path / name, result, subjects)
        folders.append(tmp_path / name)
    rows = [maps.read_row(f, f.name) for f in folders]
    vmax = maps.colour_scale(rows)
    peak = max(np.abs(r.shown()[0]).max() for r in rows)
    assert peak <= vmax < peak + 0.05
    assert rows[0].n_found == 10 and rows[0].n_sites == 50
    fig = maps.map_figure(rows, vmax=vmax, title="model m", note="n = 3 subjects")
    assert fig.get_suptitle() == "model m"
    assert len([ax for ax in fig.axes if ax.get_title()]) == 4  # score and layer per row
    assert "n = 3 subjects" in fig.texts[-1].get_text()


def test_surface_views_need_an_mni_space_that_holds_the_cortex():
    mni = np.array([[2.0, 0, 0, -90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])
    whole = nib.Nifti1Image(np.zeros((91, 109, 91), np.float32), mni)
    assert maps.surface_allowed(whole, "MNI152NLin2009cAsym")
    assert not maps.surface_allowed(whole, "T1w")
    assert not maps.surface_allowed(whole, None)
    corner = nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), mni)
    assert not maps.surface_allowed(corner, "MNI152NLin6Asym")


# --- the small demo with voxel targets -------------------------------------------------------


@pytest.fixture(scope="module")
def voxel_run(small_run, tmp_path_factory):
    """The small demo run again with voxel targets (every stage from the fMRI on), to its maps."""
    work = tmp_path_factory.mktemp("voxels") / "work"
    shutil.copytree(small_run, work, symlinks=True)
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["fmri"]["targets"] = "voxels"
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    variants = [("tiny-gpt2", "fp32"), ("tiny-gpt2", "untrained"), ("tiny-neox", "fp32"),
                ("tiny-neox", "untrained")]  # fmt: skip
    targets = [f"results/demo/maps/{m}/{v}" for m, v in variants]
    snakemake(work, "--cores", "2", *targets, "results/demo/plots/maps_tiny-gpt2.png")
    return work


@pytest.mark.workflow
def test_planted_voxels_light_up_and_empty_ones_do_not(voxel_run):
    root = voxel_run / "resources" / "demo" / "demo"
    truth = json.loads((root / "ground_truth.json").read_text())
    atlas = nib.load(root / demo.ATLAS_IMAGE)
    labels = np.asarray(atlas.dataobj)
    x = nib.affines.apply_affine(atlas.affine, np.indices(labels.shape).reshape(3, -1).T)[:, 0]
    side = np.where(x < 0, "L", "R").reshape(labels.shape)

    def region(roi, hemi):
        return (labels == demo.ROIS.index(roi) + 1) & (side == hemi)

    null = np.zeros(labels.shape, bool)
    for n in truth["null"]:
        null |= region(n["roi"], n["hemisphere"])
    for p in truth["planted"]:
        folder = voxel_run / "results" / "demo" / "maps" / p["model"] / p["variant"]
        q = np.asarray(nib.load(folder / "q.nii.gz").dataobj)
        score = np.asarray(nib.load(folder / "score.nii.gz").dataobj)
        layer = np.asarray(nib.load(folder / "layer.nii.gz").dataobj)
        planted = region(p["roi"], p["hemisphere"])
        assert (q[planted] < 0.05).mean() >= 0.9, p
        assert np.median(score[planted]) > 0.5 * p["expected_r_voxel_cleaned"], p
        assert np.median(np.abs(layer[planted] - p["layer"])) <= 1, p
        found = q < 0.05
        # Benjamini-Hochberg at 0.05: few of the found voxels lie where nothing was planted.
        assert (found & null).sum() <= 0.1 * found.sum(), p
    for model, variant in (("tiny-neox", "fp32"), ("tiny-neox", "untrained")):
        q = np.asarray(nib.load(voxel_run / "results" / "demo" / "maps" / model / variant /
                                "q.nii.gz").dataobj)  # fmt: skip
        assert (q[null] < 0.05).mean() <= 0.05


@pytest.mark.workflow
def test_voxel_maps_agree_with_their_tables(voxel_run):
    folder = voxel_run / "results" / "demo" / "maps" / "tiny-gpt2" / "fp32"
    held = pd.read_parquet(folder / "subjects.parquet")
    group = pd.read_parquet(folder / "group.parquet")
    assert set(held["choice"]) == {"target"}  # both subjects have every voxel
    means = held.groupby("site")["score"].mean()
    assert np.allclose(group.set_index("site")["score"], means.reindex(group["site"]))
    targets = pd.read_parquet(
        voxel_run / "results" / "demo" / "fmri" / "sub-01" / "targets.parquet"
    )
    own = np.asarray(nib.load(folder / "sub-01" / "score.nii.gz").dataobj)
    mine = held[held.subject == "01"].set_index("target")["score"]
    assert np.allclose(own[targets.i, targets.j, targets.k], mine.reindex(targets.target))
    assert (voxel_run / "results" / "demo" / "plots" / "maps_tiny-gpt2.png").stat().st_size
