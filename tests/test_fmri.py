import json
import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.signal import butterworth

from brainshape import fmri
from brainshape.errors import BrainshapeError

SHAPE = (10, 12, 8)
N_VOLS = 50
TR = 2.0
SPACE = "T1w"
LABELS = ["A", "B", "C"]
CONFOUND_COLUMNS = [
    "trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "csf", "white_matter",
    "global_signal", "framewise_displacement", "trans_x_derivative1",
]  # fmt: skip


def grid_affine(x_sign=1.0, x0=-13.5, zoom=3.0):
    """Voxel centres at x = x0 + x_sign * zoom * i (world mm); y, z from -16.5 and -10.5."""
    return np.array(
        [
            [x_sign * zoom, 0, 0, x0],
            [0, zoom, 0, -16.5],
            [0, 0, zoom, -10.5],
            [0, 0, 0, 1],
        ]
    )


def world(shape, affine):
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def atlas_labels(xyz):
    """Label by world position: A at y < 0, B at y > 0 and z < 0, C at y > 0, z > 0, x < 0 only."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    out = np.zeros(xyz.shape[:-1], dtype=np.int16)
    out[y < 0] = 1
    out[(y > 0) & (z < 0)] = 2
    out[(y > 0) & (z > 0) & (x < 0)] = 3
    return out


def brain_mask(shape):
    mask = np.zeros(shape, dtype=bool)
    mask[1:-1, 1:-1, 1:-1] = True
    return mask


def hemispheres(xyz):
    x = xyz[..., 0]
    return np.where(x < 0, "L", np.where(x > 0, "R", ""))


def write_atlas(root, affine, shape=SHAPE):
    image = Path(root) / "atlas_dseg.nii.gz"
    labels = Path(root) / "atlas_dseg.tsv"
    nib.save(nib.Nifti1Image(atlas_labels(world(shape, affine)), affine), image)
    pd.DataFrame({"index": [1, 2, 3], "name": LABELS}).to_csv(labels, sep="\t", index=False)
    return image, labels


def save_bold(path, data, affine, tr=TR):
    img = nib.Nifti1Image(data.astype(np.float32), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms(tuple(np.abs(np.diag(affine)[:3])) + (tr,))
    nib.save(img, path)


def write_run(root, sub, story, affine, seed, n_vols=N_VOLS, tr=TR, confound_rows=None):
    """BOLD = 100 + planted ROI x hemisphere signal + 3 * weighted confound + drift + noise.

    Returns the planted signals {(roi, hemisphere): (n_vols,)}, the confound (n_vols,) and the
    paths.
    """
    rng = np.random.default_rng(seed)
    xyz = world(SHAPE, affine)
    label, hemi = atlas_labels(xyz), hemispheres(xyz)
    confound = rng.standard_normal(n_vols)
    planted = {}
    data = np.zeros(SHAPE + (n_vols,))
    for index, name in enumerate(LABELS, start=1):
        for side in ("L", "R"):
            planted[(name, side)] = rng.standard_normal(n_vols)
            data[(label == index) & (hemi == side)] += planted[(name, side)]
    t = np.arange(n_vols)
    data += 3.0 * rng.uniform(0.5, 1.5, SHAPE)[..., None] * confound
    data += rng.uniform(-0.05, 0.05, SHAPE)[..., None] * t
    data += 0.5 * rng.standard_normal(data.shape) + 100.0
    paths = fmri.bids_paths(root, sub, story, SPACE)
    paths.bold.parent.mkdir(parents=True, exist_ok=True)
    save_bold(paths.bold, data, affine, tr)
    nib.save(nib.Nifti1Image(brain_mask(SHAPE).astype(np.uint8), affine), paths.mask)
    rows = n_vols if confound_rows is None else confound_rows
    table = pd.DataFrame(rng.standard_normal((rows, len(CONFOUND_COLUMNS))) * 0.1,
                         columns=CONFOUND_COLUMNS)  # fmt: skip
    table["trans_x"] = np.resize(confound, rows)
    table.loc[0, ["framewise_displacement", "trans_x_derivative1"]] = np.nan
    table.to_csv(paths.confounds, sep="\t", index=False, na_rep="n/a")
    return planted, confound, paths


def target_map(tmp_path, affine, mode="roi_mean", rois=None):
    image, labels = write_atlas(tmp_path, affine)
    ref = nib.Nifti1Image(np.zeros(SHAPE, dtype=np.uint8), affine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # This small grid's atlas reaches past its brain mask by design: no coverage check.
        return fmri.atlas_targets(
            image, labels, ref, brain_mask(SHAPE), rois=rois, mode=mode, min_coverage=0.0
        )


def corr(a, b):
    return float(np.corrcoef(a, b)[0, 1])


CLEAN = dict(confounds=["trans_x", "framewise_displacement"], detrend=True, standardize=True)


def test_confound_regression_recovers_planted_roi_signal(tmp_path):
    affine = grid_affine()
    planted, confound, paths = write_run(tmp_path, "01", "a", affine, seed=0)
    image, labels = write_atlas(tmp_path, affine)
    ref = nib.load(paths.bold)
    with pytest.warns(UserWarning, match=r"no voxel of the brain mask in C R; these ROI x hemi"):
        tmap = fmri.atlas_targets(image, labels, ref, brain_mask(SHAPE))
    xyz = world(SHAPE, affine)
    inside = brain_mask(SHAPE) & (atlas_labels(xyz) > 0)
    expected_counts = [
        int((inside & (atlas_labels(xyz) == LABELS.index(r) + 1) & (hemispheres(xyz) == h)).sum())
        for r, h in [("A", "L"), ("A", "R"), ("B", "L"), ("B", "R"), ("C", "L")]
    ]
    assert tmap.targets.to_dict("list") == {
        "target": [0, 1, 2, 3, 4],
        "roi": ["A", "A", "B", "B", "C"],
        "hemisphere": ["L", "R", "L", "R", "L"],
        "n_voxels": expected_counts,
    }
    out = fmri.preprocess_run(paths, tmap, t_r=TR, **CLEAN)
    assert out.shape == (N_VOLS, 5) and out.dtype == np.float32
    for col, row in tmap.targets.iterrows():
        assert corr(out[:, col], planted[(row.roi, row.hemisphere)]) > 0.9
        assert abs(corr(out[:, col], confound)) < 0.05
    # Without the regression the confound dominates: the check above can fail.
    raw = fmri.preprocess_run(paths, tmap, t_r=TR, **{**CLEAN, "confounds": []})
    assert all(abs(corr(raw[:, c], confound)) > 0.8 for c in range(5))


def test_hemisphere_comes_from_world_x_not_voxel_index(tmp_path):
    # x axis flipped: voxel i = 0 lies at x = +13.5 (right).
    flipped = grid_affine(x_sign=-1.0, x0=13.5)
    planted, _, paths = write_run(tmp_path, "01", "a", flipped, seed=1)
    tmap = target_map(tmp_path, flipped, mode="voxels")
    left = tmap.targets[tmap.targets.hemisphere == "L"]
    right = tmap.targets[tmap.targets.hemisphere == "R"]
    assert (left.i >= 5).all() and (right.i <= 4).all() and len(left) and len(right)
    # C lies at world x < 0 only, which is the high voxel indices here.
    assert set(tmap.targets[tmap.targets.roi == "C"].hemisphere) == {"L"}
    means = fmri.preprocess_run(paths, target_map(tmp_path, flipped), t_r=TR, **CLEAN)
    assert corr(means[:, 4], planted[("C", "L")]) > 0.9

    # Voxels centred on x == 0 belong to no hemisphere and are left out.
    midline = grid_affine(x0=-12.0)  # i = 4 lies at x = 0
    tmap = target_map(tmp_path, midline, mode="voxels")
    assert 4 not in set(tmap.targets.i)
    xyz = world(SHAPE, midline)
    in_roi = brain_mask(SHAPE) & (atlas_labels(xyz) > 0)
    assert len(tmap.targets) == int(in_roi.sum() - in_roi[4].sum())


def test_trimming_and_zscoring(tmp_path):
    affine = grid_affine()
    planted, _, paths = write_run(tmp_path, "01", "a", affine, seed=2)
    tmap = target_map(tmp_path, affine)
    out = fmri.preprocess_run(paths, tmap, t_r=TR, trim_start=3, trim_end=2, **CLEAN)
    assert out.shape == (N_VOLS - 5, 5)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=0), 1, rtol=1e-4)
    assert corr(out[:, 0], planted[("A", "L")][3 : N_VOLS - 2]) > 0.9
    # Misaligned by the trim, the planted signal does not match.
    assert abs(corr(out[:, 0], planted[("A", "L")][: N_VOLS - 5])) < 0.5

    kept = fmri.preprocess_run(paths, tmap, t_r=TR, **{**CLEAN, "standardize": False})
    assert not np.allclose(kept.std(axis=0), 1, rtol=1e-2)
    filtered = fmri.preprocess_run(paths, tmap, t_r=TR, high_pass=0.02, **CLEAN)
    reference = butterworth(planted[("A", "R")][:, None], 1 / TR, high_pass=0.02, copy=True)[:, 0]
    assert corr(filtered[:, 1], reference) > 0.9
    assert corr(filtered[:, 1], reference) > corr(filtered[:, 1], planted[("A", "R")]) + 0.02


def test_voxel_mode_matches_least_squares_reference(tmp_path):
    affine = grid_affine()
    _, _, paths = write_run(tmp_path, "01", "a", affine, seed=3)
    tmap = target_map(tmp_path, affine, mode="voxels")
    xyz = world(SHAPE, affine)
    label = atlas_labels(xyz)
    assert list(tmap.targets.columns) == [
        "target", "roi", "hemisphere", "n_voxels", "i", "j", "k", "x", "y", "z",
    ]  # fmt: skip
    # World coordinates (mm) of each voxel, for matching voxels across subjects' grids.
    coords = tmap.targets[["i", "j", "k"]].to_numpy() @ affine[:3, :3].T + affine[:3, 3]
    np.testing.assert_allclose(tmap.targets[["x", "y", "z"]].to_numpy(), coords, atol=1e-3)
    assert (tmap.targets.n_voxels == 1).all()
    ijk = tmap.targets[["i", "j", "k"]].to_numpy()
    assert brain_mask(SHAPE)[tuple(ijk.T)].all()
    assert [LABELS[v - 1] for v in label[tuple(ijk.T)]] == tmap.targets.roi.tolist()
    assert (hemispheres(xyz)[tuple(ijk.T)] == tmap.targets.hemisphere).all()

    out = fmri.preprocess_run(paths, tmap, t_r=TR, trim_start=4, trim_end=1, **CLEAN)
    assert out.shape == (N_VOLS - 5, len(tmap.targets))
    # Reference: residual of least squares on [1, t, confounds] (trimmed), then z-score.
    conf = pd.read_csv(paths.confounds, sep="\t", na_values="n/a").fillna(0)
    conf = conf[["trans_x", "framewise_displacement"]].to_numpy()[4 : N_VOLS - 1]
    n = N_VOLS - 5
    design = np.column_stack([np.ones(n), np.arange(n), conf])
    bold = nib.load(paths.bold).get_fdata()
    for col in [0, 17, len(tmap.targets) - 1]:
        i, j, k = ijk[col]
        y = bold[i, j, k, 4 : N_VOLS - 1]
        resid = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
        np.testing.assert_allclose(out[:, col], (resid - resid.mean()) / resid.std(), atol=1e-4)


def test_constant_voxel_gives_zeros(tmp_path):
    affine = grid_affine()
    _, _, paths = write_run(tmp_path, "01", "a", affine, seed=4)
    img = nib.load(paths.bold)
    data = img.get_fdata()
    data[2, 2, 2] = 7.0
    save_bold(paths.bold, data, affine)
    tmap = target_map(tmp_path, affine, mode="voxels")
    col = tmap.targets.query("i == 2 and j == 2 and k == 2").target.item()
    out = fmri.preprocess_run(paths, tmap, t_r=TR, **CLEAN)
    assert np.all(out[:, col] == 0) and np.isfinite(out).all()


def test_atlas_on_another_grid_is_resampled_by_nearest_neighbour(tmp_path):
    affine = grid_affine()
    native = target_map(tmp_path, affine)
    fine_dir = tmp_path / "fine"
    fine_dir.mkdir()
    # 1.5 mm atlas on the same origin: every BOLD voxel centre is an atlas voxel centre.
    fine = grid_affine(zoom=1.5)
    image, labels = write_atlas(fine_dir, fine, shape=(20, 24, 16))
    ref = nib.Nifti1Image(np.zeros(SHAPE, dtype=np.uint8), affine)
    with pytest.warns(UserWarning, match="C R"):
        resampled = fmri.atlas_targets(image, labels, ref, brain_mask(SHAPE))
    pd.testing.assert_frame_equal(resampled.targets, native.targets)
    np.testing.assert_array_equal(resampled.voxel_target, native.voxel_target)


def test_roi_selection_keeps_label_table_order(tmp_path):
    tmap = target_map(tmp_path, grid_affine(), rois=["B", "A"])
    assert tmap.targets.roi.tolist() == ["A", "A", "B", "B"]
    with pytest.raises(BrainshapeError, match=r"fmri.rois names \['D'\] .*available: A, B, C"):
        target_map(tmp_path, grid_affine(), rois=["A", "D"])


SUBJECT = dict(
    space=SPACE, rois=None, mode="roi_mean", confounds=["trans_x", "rot_x"], detrend=True,
    standardize=True, high_pass=None, trim_start=2, trim_end=1,
)  # fmt: skip


def run_subject(tmp_path, sub, out_dir, stories=("a", "b"), **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fmri.preprocess_subject(
            tmp_path / "fmriprep", sub, list(stories), atlas_path=tmp_path / "atlas_dseg.nii.gz",
            labels_path=tmp_path / "atlas_dseg.tsv", out_dir=out_dir, **{**SUBJECT, **kw},
        )  # fmt: skip


def test_preprocess_subject_writes_contract_layout(tmp_path):
    affine = grid_affine()
    write_atlas(tmp_path, affine)
    planted = {}
    for seed, (story, n) in enumerate([("a", 50), ("b", 40)]):
        planted[story], _, _ = write_run(tmp_path / "fmriprep", "01", story, affine, seed, n_vols=n)
    out = tmp_path / "results" / "sub-01"
    run_subject(tmp_path, "01", out)
    assert sorted(p.name for p in out.iterdir()) == [
        ".manifest.json",
        "a.npy",
        "b.npy",
        "runs.json",
        "targets.parquet",
    ]
    clock = {"offset": 0.0, "removed_end": 0, "split": "train"}
    assert json.loads((out / "runs.json").read_text()) == {
        "a": {"n_trs": 50, "trim_start": 2, "trim_end": 1, "tr": 2.0, **clock},
        "b": {"n_trs": 40, "trim_start": 2, "trim_end": 1, "tr": 2.0, **clock},
    }
    targets = pd.read_parquet(out / "targets.parquet")
    assert targets.dtypes.astype(str).tolist()[::3] == ["int64", "int64"]  # target, n_voxels
    b = np.load(out / "b.npy", mmap_mode="r")
    assert b.dtype == np.float32 and b.shape == (37, 5)
    assert corr(b[:, 3], planted["b"][("B", "R")][2:39]) > 0.9

    # A given TR that disagrees with the header is refused, unless it is declared to win over
    # a wrong header; a header without TR needs one.
    with pytest.raises(BrainshapeError, match=r"its header says TR 2 s but the config \(or runs "):
        run_subject(tmp_path, "01", out, t_r=1.5)
    run_subject(tmp_path, "01", out, t_r=1.5, tr_overrides_header=True)
    assert json.loads((out / "runs.json").read_text())["a"]["tr"] == 1.5
    paths = fmri.bids_paths(tmp_path / "fmriprep", "01", "b", SPACE)
    save_bold(paths.bold, nib.load(paths.bold).get_fdata(), affine, tr=0.0)
    with pytest.raises(BrainshapeError, match=r"bold.nii.gz states no TR in its header; give "):
        run_subject(tmp_path, "01", tmp_path / "other")


def listing(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_failing_subject_writes_nothing_and_keeps_earlier_outputs(tmp_path):
    affine = grid_affine()
    write_atlas(tmp_path, affine)
    for sub in ("01", "02"):
        for seed, story in enumerate(["a", "b"]):
            write_run(tmp_path / "fmriprep", sub, story, affine, seed)
    results = tmp_path / "results"
    run_subject(tmp_path, "01", results / "sub-01")
    before = listing(results)

    # sub-02: story a is fine, story b has NaN voxels -> nothing of sub-02 is written.
    bold = fmri.bids_paths(tmp_path / "fmriprep", "02", "b", SPACE).bold
    data = nib.load(bold).get_fdata()
    data[3, 3, 3, 10] = np.nan
    save_bold(bold, data, affine)
    with pytest.raises(BrainshapeError, match="in-mask voxels of"):
        run_subject(tmp_path, "02", results / "sub-02")
    assert not (results / "sub-02").exists()
    assert listing(results) == before

    # Rerunning sub-01 into its own folder and failing on its last story keeps the old files.
    with pytest.raises(BrainshapeError, match="confound column"):
        run_subject(tmp_path, "01", results / "sub-01", confounds=["trans_x", "nope"])
    assert listing(results) == before


# --- each bad input gives its message -----------------------------------------------------------


def test_missing_derivatives_are_listed_in_one_error(tmp_path):
    affine = grid_affine()
    write_atlas(tmp_path, affine)
    for seed, story in enumerate(["a", "b"]):
        write_run(tmp_path / "fmriprep", "01", story, affine, seed)
    a = fmri.bids_paths(tmp_path / "fmriprep", "01", "a", SPACE)
    b = fmri.bids_paths(tmp_path / "fmriprep", "01", "b", SPACE)
    a.confounds.unlink()
    b.mask.unlink()
    expected = (
        f"missing fMRIPrep derivatives: {a.confounds} (story 'a'); {b.mask} (story 'b'). "
        f"Expected, under fmriprep_dir {tmp_path / 'fmriprep'} for every subject and story: "
        "sub-{sub}/func/sub-{sub}_task-{story}_space-{space}_desc-preproc_bold.nii.gz"
    )
    with pytest.raises(BrainshapeError, match=re.escape(expected)):
        run_subject(tmp_path, "01", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_nan_voxels(tmp_path):
    affine = grid_affine()
    _, _, paths = write_run(tmp_path, "01", "a", affine, seed=5)
    data = nib.load(paths.bold).get_fdata()
    data[2, 3, 4, 0] = np.nan  # in a trimmed volume: harmless
    save_bold(paths.bold, data, affine)
    tmap = target_map(tmp_path, affine)
    assert np.isfinite(fmri.preprocess_run(paths, tmap, t_r=TR, trim_start=1, **CLEAN)).all()
    data[5, 6, 3, 20] = np.inf
    data[1, 1, 1, 30] = np.nan
    data[0, 0, 0, 30] = np.nan  # outside the mask: not counted
    save_bold(paths.bold, data, affine)
    expected = (
        f"2 in-mask voxels of {paths.bold} contain NaN or inf in the kept volumes; fix: remove "
        f"them from the brain mask {paths.mask} or rerun the preprocessing of this run"
    )
    with pytest.raises(BrainshapeError, match=f"^{re.escape(expected)}$"):
        fmri.preprocess_run(paths, tmap, t_r=TR, trim_start=1, **CLEAN)


def test_wrong_confound_column(tmp_path):
    affine = grid_affine()
    _, _, paths = write_run(tmp_path, "01", "a", affine, seed=6)
    expected = (
        f"confound column(s) ['nope'] of fmri.confounds are not in {paths.confounds}; available: "
        + ", ".join(CONFOUND_COLUMNS)
    )
    with pytest.raises(BrainshapeError, match=f"^{re.escape(expected)}$"):
        fmri.preprocess_run(
            paths, target_map(tmp_path, affine), t_r=TR, **{**CLEAN, "confounds": ["nope"]}
        )


def test_confound_rows_must_match_volumes(tmp_path):
    affine = grid_affine()
    _, _, paths = write_run(tmp_path, "01", "a", affine, seed=7, confound_rows=49)
    expected = (
        f"confounds table {paths.confounds} has 49 rows but its BOLD image has 50 volumes; "
        "they must match (one row per volume, before trimming)"
    )
    with pytest.raises(BrainshapeError, match=f"^{re.escape(expected)}$"):
        fmri.preprocess_run(paths, target_map(tmp_path, affine), t_r=TR, **CLEAN)


def test_bad_images_and_trims(tmp_path):
    affine = grid_affine()
    _, _, paths = write_run(tmp_path, "01", "a", affine, seed=8)
    tmap = target_map(tmp_path, affine)
    with pytest.raises(BrainshapeError, match=r"leaves 9, fewer than 10; lower fmri.trim_start"):
        fmri.preprocess_run(paths, tmap, t_r=TR, trim_start=30, trim_end=11, **CLEAN)

    nib.save(nib.Nifti1Image(brain_mask(SHAPE).astype(np.uint8), grid_affine(zoom=2.0)), paths.mask)
    with pytest.raises(
        BrainshapeError, match=r"desc-brain_mask.nii.gz \(\(10, 12, 8\) voxels of \[2.0, 2.0, 2.0\]"
    ):
        fmri.preprocess_run(paths, tmap, t_r=TR, **CLEAN)

    nib.save(nib.Nifti1Image(np.zeros(SHAPE, dtype=np.float32), affine), paths.bold)
    with pytest.raises(
        BrainshapeError, match=r"bold.nii.gz has shape \(10, 12, 8\); expected a 4-D"
    ):
        fmri.preprocess_run(paths, tmap, t_r=TR, **CLEAN)


def test_a_damaged_gzip_is_named_in_words_that_do_not_depend_on_its_bytes(tmp_path):
    """Python's gzip messages quote checksums and header bytes, which differ between copies of
    the data; the error says what is wrong instead."""
    import gzip

    good = tmp_path / "bold.nii.gz"
    good.write_bytes(gzip.compress(bytes(range(256)) * 4000, mtime=0))
    fmri.verify_gzip(good)
    raw = good.read_bytes()
    cases = {
        # The stored CRC-32 inverted: damage inside the deflate stream fails in ways that depend
        # on the compressor's output, which differs between zlib builds.
        "damaged.nii.gz": raw[:-8] + bytes(b ^ 0xFF for b in raw[-8:-4]) + raw[-4:],
        "cut.nii.gz": raw[: len(raw) // 2],
        "plain.nii.gz": b"not compressed at all, only named so",
    }
    problems = {
        "damaged.nii.gz": "its compressed data are damaged",
        "cut.nii.gz": "the file ends before its end-of-stream marker",
        "plain.nii.gz": "the file does not start with a gzip header",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(BrainshapeError) as err:
            fmri.verify_gzip(path)
        assert str(err.value) == (
            f"{path} is corrupt or truncated (its gzip check fails: {problems[name]}); fetch or "
            "regenerate the file"
        )


def _hdf5_subject(tmp_path, mode, nan_column=None):
    """Two stories of one ds003020-style subject (rows x 6 columns, ROI A: columns 0-2, B: 3-5)
    whose ROI A carries one signal; ``nan_column`` is NaN in story b (as published matrices
    can be). Returns the subject folder's targets table and story arrays."""
    import h5py

    rng = np.random.default_rng(7)
    tmp_path.mkdir(exist_ok=True)
    labels = tmp_path / "labels.tsv"
    pd.DataFrame({"column": range(6), "roi": list("AAABBB"), "hemisphere": "L"}).to_csv(
        labels, sep="\t", index=False
    )
    rows, signal = [], {}
    for story in ("a", "b"):
        signal[story] = rng.standard_normal(60)
        data = 0.3 * rng.standard_normal((60, 6))
        data[:, :3] += signal[story][:, None]
        if story == "b" and nan_column is not None:
            data[10:20, nan_column] = np.nan
        path = tmp_path / f"{story}.hf5"
        with h5py.File(path, "w") as f:
            f.create_dataset("data", data=data)
        rows.append({"story": story, "response": str(path), "format": "hdf5", "key": "data",
                     "labels": str(labels), "tr": 2.0})  # fmt: skip
    out = tmp_path / f"sub-{mode}"
    cleaning = fmri.Cleaning(detrend=False, standardize=True)
    fmri.preprocess_runs("01", rows, out, atlas=None, rois=None, mode=mode, cleaning=cleaning)
    targets = pd.read_parquet(out / "targets.parquet")
    return targets, {s: np.load(out / f"{s}.npy") for s in ("a", "b")}, signal


def test_hdf5_columns_with_nan_are_left_out_and_counted(tmp_path):
    """ds003020's authors zero non-finite responses (nan_to_num); here such a column is left
    out of the run where it is not finite, and counted in targets.parquet (n_nonfinite)."""
    targets, arrays, signal = _hdf5_subject(tmp_path, "roi_mean", nan_column=1)
    assert targets[["roi", "n_voxels", "n_constant", "n_nonfinite"]].values.tolist() == [
        ["A", 3, 0, 1],
        ["B", 3, 0, 0],
    ]
    assert all(np.isfinite(a).all() for a in arrays.values())
    # ROI A's mean in story b comes from its two finite columns and still tracks the signal.
    assert np.corrcoef(arrays["b"][:, 0], signal["b"])[0, 1] > 0.95
    clean, clean_arrays, _ = _hdf5_subject(tmp_path / "clean", "roi_mean")
    assert clean.n_nonfinite.tolist() == [0, 0]
    np.testing.assert_array_equal(arrays["a"], clean_arrays["a"])  # story a is untouched
    # Voxel targets: the column is left out of every story (like a constant one).
    voxels, varrays, _ = _hdf5_subject(tmp_path / "voxels", "voxels", nan_column=1)
    assert voxels.column.tolist() == [0, 2, 3, 4, 5]
    assert varrays["a"].shape == (60, 5) and np.isfinite(varrays["b"]).all()
