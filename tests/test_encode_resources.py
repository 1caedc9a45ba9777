"""Resources of encode, baseline and layer_diagrams jobs, from the shape of the study."""

import copy
import json
import logging
import math
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, SCHEMAS, snakemake

from brainshape import demo, resources, ridge, sizing
from brainshape.checks import check_encode_gpu
from brainshape.config import load_registry_dict, validate
from brainshape.errors import BrainshapeError
from brainshape.plan import dry_run_jobs
from brainshape.ridge.cost import Counted, fold_flops
from brainshape.sizing import JobSizing
from brainshape.study import Study


def demo_config(**encoding) -> dict:
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["registry"] = str(REPO / "config" / "models.demo.yaml")
    cfg["variants"] = "all"  # every model with its twin, whatever the demo leaves out
    cfg["encoding"].update(encoding)
    return cfg


def study(cfg: dict) -> JobSizing:
    """The job sizing of a validated config (its study is ``.study``)."""
    cfg = validate(copy.deepcopy(cfg), SCHEMAS / "config.schema.yaml", "demo.yaml")
    registry = load_registry_dict(cfg["registry"], SCHEMAS / "models.schema.yaml")
    return JobSizing(Study(cfg, registry, source="demo.yaml"))


def shape(**changes) -> resources.EncodeShape:
    base = dict(
        story_trs=(196, 196, 196, 196),
        story_words=(1000, 1000, 1000, 1000),
        trimmed=4,
        layers=3,
        hidden=128,
        delays=4,
        targets=2000,
        n_alphas=13,
        target_chunk=20000,
        n_permutations=100,
    )
    return resources.EncodeShape(**{**base, **changes})


# --- the model against a real run --------------------------------------------------------------


def test_memory_estimate_bounds_the_measured_peak_of_a_real_run():
    # The engine runs in a fresh process on files written as the features and fmri stages write
    # them; the estimate must stay an upper bound, and a tight one.
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "encode_memory.py"),
            "--shape",
            "4",
            "160",
            "64",
            "2",
            "2000",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["n"] == 4 * 156 and out["p"] == 256 and out["targets"] == 2000
    assert out["measured_mib"] > 50  # the run did allocate: the comparison means something
    assert 1.0 <= out["ratio"] <= 1.5, out


def test_persistence_estimate_bounds_the_measured_peak():
    script = str(REPO / "benchmarks" / "encode_memory.py")
    proc = subprocess.run(
        [sys.executable, script, "--diagrams", "800", "--json"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["measured_mib"] > 20
    assert 1.0 <= out["ratio"] <= 2.5, out


def test_layer_diagrams_memory_grows_with_the_landmarks_and_the_brain_clouds():
    args = dict(story_trs=(200,) * 4, story_words=(1200,) * 4, trimmed=4, hidden=768)
    small = resources.layer_diagrams_memory(n_points=500, clouds=10, cloud_columns=20, **args)
    big = resources.layer_diagrams_memory(n_points=1000, clouds=10, cloud_columns=20, **args)
    assert small["persistence"] == 48 * 2**20 + 34 * 500**2 * 8
    assert big["persistence"] - small["persistence"] == 34 * (1000**2 - 500**2) * 8
    # each brain cloud: points, reduced copy and half a distance matrix of ranks
    more = resources.layer_diagrams_memory(n_points=500, clouds=11, cloud_columns=20, **args)
    assert more["brain"] - small["brain"] == (500 * 20 + 500 * 20) * 8 + 500 * 500 * 4
    s = study(demo_config())
    # demo: 200 landmarks (topology.max_points); a pairing job holds tiny-gpt2's 5 prepared
    # layer clouds (two clouds' worth each), two brain clouds at a time (the observed one and
    # one of the null's) and each layer's cloud on the whole time base.
    shape = dict(
        n_points=200,
        story_trs=tuple(n - 4 for n, _ in s.story_shapes("demo").values()),
        story_words=tuple(w for _, w in s.story_shapes("demo").values()),
        trimmed=4,
        hidden=64,
    )
    # The diagrams job reads no brain cloud; the pairing job computes no diagram.
    assert s.layer_diagrams_mem_mb("demo", "tiny-gpt2") == resources.layer_diagrams_mem_mb(
        **shape, clouds=0, cloud_columns=200
    )
    assert s.topology_pairs_mem_mb("demo", "tiny-gpt2") == resources.layer_diagrams_mem_mb(
        **shape, clouds=2 * 5 * 2 + 2 + 1, cloud_columns=200, persistence=False, whole=True
    )
    whole = resources.layer_diagrams_memory(
        **shape, clouds=0, cloud_columns=200, persistence=False, whole=True
    )["whole"]
    trs, words = shape["story_trs"], shape["story_words"]
    weights = sum(t * w for t, w in zip(trs, words, strict=True))
    assert whole == (weights + sum(trs) * 64 + 8 * max(trs) * 64) * 8


def test_topology_pairs_runtime_grows_with_the_null_draws_and_the_landmarks():
    kw = dict(layers=31, brain_clouds=200, measures=2, distances=4)
    base = resources.topology_pairs_runtime_min(n_points=1000, draws=200, **kw)
    seconds = 200 * 201 * 1000**2 * (150 + 31 * 2 * 8) * 1e-9 + 200 * 31 * 4 * 0.05
    assert base == math.ceil(2 * seconds / 60)
    assert resources.topology_pairs_runtime_min(n_points=1000, draws=400, **kw) > 1.8 * base
    assert resources.topology_pairs_runtime_min(n_points=500, draws=200, **kw) < 0.35 * base
    # A small job waits at least the floor.
    small = dict(layers=5, brain_clouds=4, measures=2, distances=4)
    assert resources.topology_pairs_runtime_min(n_points=50, draws=100, **small) == 10
    s = study(demo_config())
    t = s.config["topology"]
    assert s.topology_pairs_runtime_min("demo", "tiny-gpt2") == (
        resources.topology_pairs_runtime_min(
            n_points=200, layers=5, brain_clouds=12, draws=t["null_shifts"], measures=2,
            distances=4,
        )
    )  # fmt: skip


def test_memory_parts_follow_the_engine():
    s = shape()
    parts = resources.encode_memory(s)
    n, p = s.n, s.p
    assert (n, p) == (784, 512)
    # Y as stored (float32), filled in place from the memory-mapped subjects: one copy.
    assert parts["bold"] == n * 2000 * 4
    with_null = resources.encode_memory(shape(null_copies=500))
    assert with_null["bold"] - parts["bold"] == n * 500 * (4 + 8)  # stored, and while drawn
    # the delayed runs (with their trimmed rows) and their concatenation X
    assert parts["design"] == (2 * n + 4 * 4) * p * 8
    assert parts["table"] == 3 * 3 * 2000 * resources.TABLE_ROW_BYTES
    assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"))
    # Predictions of every target (segment identification) add n x m float64.
    with_pred = resources.encode_memory(shape(predictions=True))
    assert with_pred["results"] - parts["results"] == n * 2000 * 8
    # Targets in chunks bound the chunk arrays: a smaller chunk needs less.
    chunked = resources.encode_memory(shape(targets=40000, target_chunk=5000))["total"]
    assert chunked < resources.encode_memory(shape(targets=40000))["total"]
    # Many targets per alpha: the refit keeps a hat matrix per alpha (A x n_te x n_tr).
    big = dict(story_trs=(196,) * 3, story_words=(1000,) * 3, targets=400000, target_chunk=5000)
    big["n_permutations"] = 0
    many = resources.encode_memory(shape(**big))["phase"]
    few = resources.encode_memory(shape(**big, n_alphas=1))["phase"]
    assert many - few == pytest.approx(12 * 196 * 392 * 8)
    # More layers do not add memory to the solver (one layer at a time), only rows and time.
    thirty = resources.encode_memory(shape(layers=30))
    assert thirty["phase"] == parts["phase"] and thirty["table"] == 10 * parts["table"]
    assert resources.encode_flops(shape(layers=30)) == 10 * resources.encode_flops(s)
    assert resources.encode_mem_mb(s) == int(np.ceil(parts["total"] / 2**20)) + 768


@pytest.mark.parametrize(
    ("lengths", "p", "blocks", "gap", "test", "bootstrap", "engine"),
    [
        ((60, 60, 60), 250, None, 0, None, None, "fast"),  # one Gram matrix per fold
        ((180,), 150, 3, 3, None, None, "fast"),  # the training rows' Gram matrix
        ((50, 45, 55, 40), 12, None, 0, None, None, "fast"),  # primal: features
        ((50, 45, 55, 40), 250, None, 0, [3], None, "fast"),  # a fixed test story
        ((90, 90), 250, None, 0, None, ridge.Bootstrap(10, 4, 0.25), "fast"),
        ((20,) * 10, 250, None, 0, None, None, "fast"),  # many short folds: predictions
        ((60, 60, 60), 250, None, 0, None, None, "reference"),
        ((50, 45, 55, 40), 12, None, 0, None, None, "reference"),
    ],
)
def test_flops_equal_a_count_of_the_engines_products(
    lengths, p, blocks, gap, test, bootstrap, engine
):
    # The formulas of ridge.cost, which the planner's runtime and the engine's own choices use,
    # against the work a real run does (its products, Gram matrices and decompositions).
    rng = np.random.default_rng(30)
    n, m = sum(lengths), 400
    X = rng.standard_normal((n, p))
    Y = X @ rng.standard_normal((p, m)) * rng.uniform(0, 0.3, m) + rng.standard_normal((n, m))
    alphas = np.logspace(0, 5, 6)
    segments = ridge.contiguous_folds(lengths, blocks)
    B = Counted(ridge.get_backend("numpy"))
    kw = dict(gap=gap, test=test, bootstrap=bootstrap, engine=engine, target_chunk=150)
    result = ridge.cross_validate(X, Y, alphas, segments, backend=B, **kw)
    sizes = ridge.fold_sizes(segments, gap, test, bootstrap)
    expected = 0.0
    for (n_tr, n_te, inner), chosen in zip(sizes, result.alphas, strict=True):
        counts = np.bincount(np.searchsorted(alphas, chosen), minlength=alphas.size)
        expected += fold_flops(n_tr, n_te, p, inner, m, counts, engine)
    assert B.flops == pytest.approx(expected, rel=1e-12)
    # The plan counts the targets spread evenly over the alphas: the most the refit can cost.
    shape = resources.EncodeShape(
        story_trs=tuple(lengths), story_words=(0,) * len(lengths), trimmed=0, layers=1,
        hidden=p, delays=1, targets=m, n_alphas=alphas.size, target_chunk=150,
        n_permutations=0, sizes=sizes,
    )  # fmt: skip
    planned = resources.encode_flop_parts(shape, engine)["products"]
    assert planned >= B.flops
    even = [m // 6 + (a < m % 6) for a in range(6)]
    assert planned == pytest.approx(
        sum(fold_flops(a, b, p, c, m, even, engine) for a, b, c in sizes), rel=1e-12
    )


def test_engine_needs_a_quarter_of_the_reference_flops_at_the_study_shape():
    # The shipped study's shape: 27 stories of 590 kept TRs in 3 blocks with a gap of 10, a
    # 7B model's 4096 x 4 delayed columns, 64 subjects of 20,000 voxels and the null's copies.
    kept = (590,) * 27
    segments = ridge.contiguous_folds(kept, 3)
    shape = resources.EncodeShape(
        story_trs=kept, story_words=(2700,) * 27, trimmed=10, layers=33, hidden=4096,
        delays=4, targets=64 * 20000, null_copies=500, n_alphas=13, target_chunk=20000,
        n_permutations=100, segments=tuple(len(s) for s in segments),
        sizes=ridge.fold_sizes(segments, 10),
    )  # fmt: skip
    ratio = resources.encode_flops(shape, "reference") / resources.encode_flops(shape)
    assert ratio > 4.0


def test_runtime_is_flops_over_the_rate_with_a_floor():
    s = shape(story_trs=(100, 100, 100), story_words=(0, 0, 0), layers=1, hidden=8, targets=1)
    big = shape(targets=200000, layers=40, hidden=1024)
    flops = resources.encode_flops(big)
    minutes = resources.encode_runtime_min(big, gflops=1.0, floor=0)
    assert minutes == int(np.ceil(2 * flops / 1e9 / 60))
    assert resources.encode_runtime_min(s, gflops=1.0) == 10
    with pytest.raises(BrainshapeError, match="must be positive GFLOP/s"):
        resources.encode_runtime_min(s, gflops=0)


# --- the shape from the config -----------------------------------------------------------------


def test_demo_shape_is_what_the_generator_makes(tmp_path):
    s = study(demo_config())
    demo.generate_stimuli(tmp_path, stories=["lighthouse", "ferry"], subjects=1, tr=2.0)
    manifest = json.loads((tmp_path / demo.MANIFEST).read_text())
    shapes = s.story_shapes("demo")
    for story in ("lighthouse", "ferry"):
        align = json.loads((tmp_path / "stimuli" / story / "align.json").read_text())
        assert shapes[story] == (manifest["n_trs"][story], len(align["words"]))
    # ROI means: 5 demo ROIs x 2 hemispheres per subject; 4 subjects stacked in one group.
    shp = s.encode_shape("demo", "tiny-gpt2", "g1")
    assert shp.targets == 4 * 10
    assert (shp.layers, shp.hidden, shp.delays) == (5, 64, 4)
    assert shp.story_trs == tuple(n - 4 for n, _ in shapes.values())
    # Voxels of the chosen ROIs, counted in the demo atlas.
    cfg = demo_config()
    cfg["fmri"].update(targets="voxels", rois=["IFG", "AG"])
    atlas = demo.demo_atlas()
    expected = sum(len(atlas.voxels[(r, h)]) for r in ("IFG", "AG") for h in ("L", "R"))
    assert study(cfg).targets_per_subject("demo") == expected == 2 * (36 + 36)
    # A baseline: every subject, one layer of three features.
    base = s.encode_shape("demo", None)
    assert (base.layers, base.hidden, base.targets) == (1, 3, 40)


def real_dataset(tmp_path, n_trs: int, tr: float = 1.5) -> dict:
    cfg = demo_config()
    root = tmp_path / "bids"
    cfg["datasets"] = {
        "study": {
            "demo": False,
            "bids_root": str(root),
            "subjects": ["01", "02"],
            "stories": ["alpha", "beta", "gamma"],
            "words": {"format": "gentle", "path": "stimuli/{story}/align.json"},
            "atlas": {"image": "atlas.nii.gz", "labels": "atlas.tsv"},
        }
    }
    s = study(cfg)
    bold = s.study.run_paths("study", "02", "alpha").bold  # only the second subject has it
    bold.parent.mkdir(parents=True)
    # beta's run exists but is an empty placeholder: unreadable, so planned with the default
    empty = s.study.run_paths("study", "01", "beta").bold
    empty.parent.mkdir(parents=True)
    empty.write_bytes(b"")
    img = nib.Nifti1Image(np.zeros((2, 2, 2, n_trs), dtype=np.int16), np.eye(4))
    img.header.set_zooms((3.0, 3.0, 3.0, tr))
    nib.save(img, bold)
    labels = np.zeros((6, 5, 4), dtype=np.int16)
    labels[:2] = 1  # 40 voxels of ROI A
    labels[2:3] = 2  # 20 of ROI B
    labels[5, 0, 0] = 3  # 1 of ROI C
    nib.save(nib.Nifti1Image(labels, np.eye(4)), root / "atlas.nii.gz")
    pd.DataFrame({"index": [1, 2, 3], "name": ["A", "B", "C"]}).to_csv(
        root / "atlas.tsv", sep="\t", index=False
    )
    return cfg


def test_real_dataset_reads_bold_headers_and_the_atlas(tmp_path, caplog):
    cfg = real_dataset(tmp_path, n_trs=321)
    s = study(cfg)
    with caplog.at_level(logging.WARNING, logger="brainshape"):
        shapes = s.story_shapes("study")
        s.story_shapes("study")  # planned once: said once
    # alpha: 321 volumes from the header, words at 3 per second of its 1.5 s TRs
    assert shapes["alpha"] == (321, int(np.ceil(321 * 1.5 * 3.0)))
    # beta and gamma have no BOLD run yet: the documented default, and one line in the log
    assert shapes["beta"] == (sizing.DEFAULT_STORY_TRS, int(np.ceil(600 * 2.0 * 3.0)))
    warnings = [r.getMessage() for r in caplog.records if "no BOLD run" in r.getMessage()]
    assert warnings == [
        "datasets.study: no BOLD run to read for 2 stories (beta, gamma); encode resources are "
        "planned "
        "with 600 volumes each"
    ]
    # ROI means: every label of the TSV, both hemispheres; voxels: counted in the image.
    assert s.targets_per_subject("study") == 2 * 3
    cfg["fmri"].update(targets="voxels", rois=["A", "C"])
    assert study(cfg).targets_per_subject("study") == 41
    cfg["fmri"]["rois"] = None
    assert study(cfg).targets_per_subject("study") == 61
    (tmp_path / "bids" / "atlas.nii.gz").unlink()
    assert study(cfg).targets_per_subject("study") == sizing.DEFAULT_VOXELS


# --- encoding.gpus ---------------------------------------------------------------------------


def test_bad_encoding_gpus_is_refused_with_the_key():
    cfg = demo_config(gpus=-1)
    with pytest.raises(BrainshapeError, match=r"^demo.yaml: key 'encoding.gpus': -1 is less than"):
        validate(cfg, SCHEMAS / "config.schema.yaml", "demo.yaml")
    with pytest.raises(
        BrainshapeError,
        match=r"^demo.yaml: key 'encoding.gpus' must be of type integer, got str 'one'$",
    ):
        validate(demo_config(gpus="one"), SCHEMAS / "config.schema.yaml", "demo.yaml")
    with pytest.raises(
        BrainshapeError,
        match=r"encoding.gpus is 1 but encoding.backend is 'numpy', which never uses a GPU; "
        r"set encoding.backend to auto or torch, or encoding.gpus to 0",
    ):
        study(demo_config(gpus=1, backend="numpy")).encode_gpus("tiny-gpt2")


def test_gpus_switch_the_runtime_to_the_gpu_rate():
    cfg = demo_config(threads=4, cpu_gflops=0.05)
    cfg["datasets"]["demo"]["stories"] = ["lighthouse", "orchard", "ferry"]
    cpu = study(cfg)
    shp = cpu.encode_shape("demo", "smollm2-135m", "g1")
    flops = resources.encode_flops(shp)
    assert cpu.encode_gpus("smollm2-135m") == 0
    assert cpu.encode_runtime_min("demo", "smollm2-135m", "g1") == max(
        10, int(np.ceil(2 * flops / (0.05 * 4 * 1e9) / 60))
    )
    cfg["encoding"].update(gpus=1, gpu_tflops=0.0001)
    gpu = study(cfg)
    assert gpu.encode_gpus("smollm2-135m") == 1 and gpu.encode_gpus(None) == 0
    assert gpu.encode_runtime_min("demo", "smollm2-135m", "g1") == max(
        10, int(np.ceil(2 * flops / 0.1e9 / 60))
    )
    # Both figures are computed, not the floor, at the rates given.
    assert (
        10
        < cpu.encode_runtime_min("demo", "smollm2-135m", "g1")
        < gpu.encode_runtime_min("demo", "smollm2-135m", "g1")
    )
    # Host memory: the same arrays, plus the CUDA context's share.
    assert gpu.encode_mem_mb("demo", "smollm2-135m", "g1") == (
        cpu.encode_mem_mb("demo", "smollm2-135m", "g1") + resources.ENCODE_GPU_HOST_MIB
    )
    # A job whose float32 arrays do not fit the GPU is refused at planning time: a GPU with room
    # for the arrays in chunks of 50 targets, not in one chunk (2 GiB go to the CUDA context).
    cfg["encoding"].update(n_permutations=1000)
    cfg["fmri"]["targets"] = "voxels"
    need = {}
    for chunk in (20000, 50):
        cfg["encoding"]["target_chunk"] = chunk
        need[chunk] = resources.encode_gpu_bytes(study(cfg).encode_shape("demo", "smollm2-135m"))
    assert need[50] < need[20000]
    room = 2 + (need[50] + need[20000]) / 2 / 2**30
    cfg["gpu"] = {"type": "tiny-gpu", "memory_gib": room, "tflops": 1.0, "usable": 1.0}
    cfg["encoding"]["target_chunk"] = 20000
    with pytest.raises(
        BrainshapeError,
        match=r"an encode job of model 'smollm2-135m' on datasets.demo needs about [0-9.]+ GiB "
        r"on its GPU, more than a [0-9.]+ GiB gpu.type holds; lower encoding.target_chunk",
    ):
        check_encode_gpu(study(cfg), "demo", "smollm2-135m", "g1")
    cfg["encoding"]["target_chunk"] = 50
    check_encode_gpu(study(cfg), "demo", "smollm2-135m", "g1")  # fits in chunks of 50 targets
    del cfg["gpu"]
    # Without gpu_tflops, a share of gpu.type's rate.
    cfg["encoding"]["gpu_tflops"] = None
    assert resources.encode_gpu_gflops(study(cfg).gpu()) == 395e3 * 0.05


# --- the dry run carries them -------------------------------------------------------------------


def test_dry_run_jobs_carry_the_computed_resources(tmp_path):
    cfg = demo_config(gpus=1)
    cfg["models"] = ["tiny-gpt2", "smollm2-135m"]
    cfg["encoding"]["group_size"] = 3  # groups of 3 and 1 subjects: different shapes
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    jobs = dry_run_jobs(
        [
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(tmp_path / "config.yaml"),
        ]
    )
    s = study(cfg)
    encode = [j for j in jobs if j.rule == "encode"]
    assert len(encode) == 2 * 2 * 2
    for job in encode:
        ds, model, group = job.wildcards["dataset"], job.wildcards["model"], job.wildcards["group"]
        assert job.mem_mb == s.encode_mem_mb(ds, model, group)
        assert job.runtime_min == s.encode_runtime_min(ds, model, group)
        assert job.gpus == 1
    mems = {(j.wildcards["model"], j.wildcards["group"]): j.mem_mb for j in encode}
    assert mems[("smollm2-135m", "g1")] > mems[("smollm2-135m", "g2")]
    assert mems[("smollm2-135m", "g1")] > mems[("tiny-gpt2", "g1")]
    # Baselines run per subject group too, without GPUs: sized by their group.
    baseline = [j for j in jobs if j.rule == "baseline"]
    assert len(baseline) == 2 * 2 and all(
        (j.gpus, j.mem_mb, j.runtime_min)
        == (
            0,
            s.encode_mem_mb("demo", None, j.wildcards["group"]),
            s.encode_runtime_min("demo", None, j.wildcards["group"]),
        )
        for j in baseline
    )
    base_mem = {j.wildcards["group"]: j.mem_mb for j in baseline}
    assert base_mem["g1"] > base_mem["g2"]  # 3 subjects' targets against 1
    diagrams = [j for j in jobs if j.rule == "layer_diagrams"]
    assert diagrams and all(
        j.mem_mb == s.layer_diagrams_mem_mb("demo", j.wildcards["model"]) for j in diagrams
    )
    pairs = [j for j in jobs if j.rule == "topology_pairs"]
    assert pairs and all(
        j.mem_mb == s.topology_pairs_mem_mb("demo", j.wildcards["model"]) for j in pairs
    )
    assert all(
        j.runtime_min == s.topology_pairs_runtime_min("demo", j.wildcards["model"]) for j in pairs
    )


def test_gpus_the_engine_cannot_use_stop_the_dry_run_in_one_line(tmp_path):
    cfg = demo_config(gpus=1, backend="numpy")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [
        f"brainshape: {tmp_path / 'config.yaml'}: encoding.gpus is 1 but encoding.backend is "
        "'numpy', which never uses a GPU; set encoding.backend to auto or torch, or "
        "encoding.gpus to 0"
    ]
