"""Quality control finds wrong data that no check on names or headers can: planted in a dataset
the demo generator writes (a run swapped between two stories, a subject's run copied to another
subject, a run with high motion), each flagged with its reason and nothing else flagged; a
clean dataset flags nothing, and simulated clean runs stay under the stated false-alarm rate;
HDF5 stand-in responses say what they cannot measure instead of failing; an exclusion reaches
the later stages of the workflow as planned, and reruns only the jobs it touches."""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, as_ordinary_dataset, snakemake, write_config
from scipy.signal import lfilter

from brainshape import demo, exclusions, fmri, importers, qc, qc_report, standins
from brainshape.config import load_schema
from brainshape.errors import BrainshapeError
from brainshape.subjects import SubjectData, read_subjects, zscore

SUBJECTS = ["01", "02", "03", "04"]
STORIES = ["lighthouse", "orchard", "ferry"]


def defaults() -> qc.Thresholds:
    """The thresholds the config schema gives fmri.qc."""
    props = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")["properties"]
    section = props["fmri"]["properties"]["qc"]["properties"]
    return qc.Thresholds.from_config({k: v["default"] for k, v in section.items()})


# --- a generated dataset, clean and with planted faults ------------------------------------------


def sheet_rows(root: Path) -> list[dict]:
    rows = []
    for sub in SUBJECTS:
        for story in STORIES:
            paths = fmri.bids_paths(root / demo.FMRIPREP, sub, story, demo.SPACE)
            rows.append({"subject": sub, "story": story, "run": 1, "response": str(paths.bold),
                         "format": "fmriprep", "mask": str(paths.mask),
                         "confounds": str(paths.confounds), "tr": None, "offset": 0.0})  # fmt: skip
    return rows


def qc_of(root: Path, out: Path) -> pd.DataFrame:
    """The fmri stage on every subject of ``root`` (into ``out``), then the QC table."""
    rows = sheet_rows(root)
    cleaning = fmri.Cleaning(confounds=demo.NUISANCE_CONFOUNDS, trim_start=2, trim_end=2)
    for sub in SUBJECTS:
        fmri.preprocess_runs(
            sub, [r for r in rows if r["subject"] == sub], out / f"sub-{sub}",
            atlas=(root / demo.ATLAS_IMAGE, root / demo.ATLAS_LABELS), rois=None,
            mode="roi_mean", cleaning=cleaning,
        )  # fmt: skip
    return qc.qc_table(read_subjects(sorted(out.glob("sub-*"))), rows, defaults())


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """The demo generator's BOLD for four subjects and three stories; the planted signal is
    driven by random word features (what the QC looks for is shared by the listeners of a
    story, whatever drives it), which spares running a model."""
    root = tmp_path_factory.mktemp("qc") / "data"
    words = demo.generate_stimuli(root, stories=STORIES, subjects=SUBJECTS, seed=0)
    rng = np.random.default_rng(0)
    planted = [dict(p) for p in demo.DEFAULT_PLANTED]
    features = {
        (p["model"], p["variant"], p["layer"]): {
            s: rng.standard_normal((len(w), 32)) for s, w in words.items()
        }
        for p in planted
    }
    demo.generate_bold(root, words, features, subjects=SUBJECTS, seed=0, planted=planted)
    return root


@pytest.fixture(scope="module")
def clean(generated, tmp_path_factory) -> pd.DataFrame:
    return qc_of(generated, tmp_path_factory.mktemp("clean"))


def run_files(root: Path, sub: str, story: str) -> fmri.RunPaths:
    return fmri.bids_paths(root / demo.FMRIPREP, sub, story, demo.SPACE)


def scale_motion(confounds: Path, factor: float) -> None:
    """Multiply a confounds table's motion columns (and so its framewise displacement)."""
    table = pd.read_csv(confounds, sep="\t", na_values=["n/a"], keep_default_na=False)
    table[list(qc.MOTION)] *= factor
    table["framewise_displacement"] *= factor
    table.to_csv(confounds, sep="\t", index=False, na_rep="n/a", float_format="%.6f")


@pytest.fixture(scope="module")
def faulty(generated, tmp_path_factory) -> pd.DataFrame:
    """The dataset with three planted faults: sub-01's lighthouse and orchard runs swapped
    (every file of the run), sub-02's ferry BOLD and confounds copied over sub-03's, and
    sub-04's lighthouse run with five times the head motion."""
    root = tmp_path_factory.mktemp("faulty") / "data"
    shutil.copytree(generated, root)
    a, b = run_files(root, "01", "lighthouse"), run_files(root, "01", "orchard")
    for x, y in ((a.bold, b.bold), (a.mask, b.mask), (a.confounds, b.confounds)):
        x.rename(x.with_name("swap")), y.rename(x), x.with_name("swap").rename(y)
    source, target = run_files(root, "02", "ferry"), run_files(root, "03", "ferry")
    shutil.copy(source.bold, target.bold)
    shutil.copy(source.confounds, target.confounds)
    scale_motion(run_files(root, "04", "lighthouse").confounds, 5.0)
    return qc_of(root, tmp_path_factory.mktemp("faulty_fmri"))


def failed(table: pd.DataFrame) -> dict[tuple[str, str], str]:
    return {(r.subject, r.story): r.failed for r in table.itertuples() if r.failed}


def row(table: pd.DataFrame, sub: str, story: str):
    return table[(table.subject == sub) & (table.story == story)].iloc[0]


def test_a_clean_dataset_flags_nothing(clean):
    assert list(clean.columns) == list(qc.COLUMNS)
    assert len(clean) == len(SUBJECTS) * len(STORIES)
    assert failed(clean) == {}
    # Every measure was taken: images with masks and confounds (fMRIPrep's layout).
    assert (clean["not_available"] == "").all()
    assert (clean["isc_z"] > 5).all() and (clean["n_others"] == 3).all()
    assert clean["fd_mean"].between(0.1, 0.4).all() and (clean["tsnr"] > 20).all()


def test_each_planted_fault_is_flagged_with_its_reason_and_nothing_else(faulty):
    assert failed(faulty) == {
        ("01", "lighthouse"): "mislabeled",
        ("01", "orchard"): "mislabeled",
        ("02", "ferry"): "duplicate",
        ("03", "ferry"): "duplicate",
        ("04", "lighthouse"): "motion",
    }


def test_a_swapped_run_names_the_story_it_belongs_to(faulty):
    for story, other in (("lighthouse", "orchard"), ("orchard", "lighthouse")):
        r = row(faulty, "01", story)
        assert r.other_story == other and r.other_lag_s == 0
        assert r.isc_z < 2 < 4 < r.other_z
        assert r.reason.startswith(f"follows the listeners of {other} (r = ")
        assert r.reason.endswith(f"better than those of {story} (r = {r.isc:.2f})")


def test_a_copied_run_flags_both_subjects(faulty):
    for sub, other in (("02", "03"), ("03", "02")):
        r = row(faulty, sub, "ferry")
        assert r.duplicate_r == 1.0
        assert r.reason == (
            f"is a byte-identical copy of sub-{other} ferry run 1; its responses match those "
            f"of sub-{other} ferry (r = 1.00)"
        )


def test_a_run_with_high_motion_is_flagged_for_motion(faulty, clean):
    r, before = row(faulty, "04", "lighthouse"), row(clean, "04", "lighthouse")
    assert r.fd_mean == pytest.approx(5 * before.fd_mean, rel=1e-4)
    assert r.fd_mean > 0.5 and r.fd_fraction > 0.2
    assert r.reason.startswith(f"mean framewise displacement {r.fd_mean:.2f} mm (max ")


# --- false alarms and sensitivity, simulated -------------------------------------------------


def ar1(rng, n: int, columns: int, coef: float) -> np.ndarray:
    return lfilter([np.sqrt(1 - coef**2)], [1, -coef], rng.standard_normal((n, columns)), axis=0)


def simulated(rng, n_subjects: int, lengths: dict, share: float) -> dict[str, SubjectData]:
    """Subjects whose ROI means share a smooth response (pairwise correlation ``share``) in two
    targets of ten, with AR(1) noise elsewhere: ROI-mean targets as the fmri stage writes."""
    targets = pd.DataFrame({"target": range(10), "roi": [f"r{i // 2}" for i in range(10)],
                            "hemisphere": ["L", "R"] * 5})  # fmt: skip
    signal = {s: zscore(ar1(rng, n, 2, 0.9)) for s, n in lengths.items()}
    out = {}
    for k in range(n_subjects):
        data, runs = {}, {}
        for story, n in lengths.items():
            x = ar1(rng, n, 10, 0.3)
            x[:, :2] = np.sqrt(share) * signal[story] + np.sqrt(1 - share) * x[:, :2]
            data[story] = zscore(x).astype(np.float32)
            runs[story] = {"n_trs": n + 4, "trim_start": 2, "trim_end": 2, "tr": 2.0,
                           "offset": 0.0, "removed_end": 0, "split": "train"}  # fmt: skip
        out[f"{k + 1:02d}"] = SubjectData(data=data, targets=targets, runs=runs)
    return out


def simulated_flags(subjects, rng, thresholds) -> pd.DataFrame:
    """The checks on responses and global signal (the ones with a null) of simulated runs."""
    table = qc.response_measures(subjects, thresholds)
    outliers = [qc.global_outliers(ar1(rng, 240, 1, 0.5)[:, 0], 2.0, thresholds.global_z)
                for _ in range(len(table))]  # fmt: skip
    table["global_outliers"] = [n for n, _ in outliers]
    table["global_max_z"] = [z for _, z in outliers]
    table["sheet_exclusion"] = ""
    return qc.flag_runs(table, thresholds)


def test_clean_runs_are_flagged_at_most_once_in_a_thousand():
    # The stated rate (module docstring of brainshape.qc): at most 1 in 1,000 clean runs with
    # a weak shared response. At that rate 5 or more alarms in 1,200 runs has probability
    # 0.003; at 1 in 100 (12 expected), 4 or fewer has probability 0.008.
    rng, thresholds, tables = np.random.default_rng(1), defaults(), []
    while sum(map(len, tables)) < 1200:
        lengths = {f"s{i}": int(rng.integers(180, 260)) for i in range(4)}
        subjects = simulated(rng, int(rng.integers(4, 7)), lengths, share=0.2)
        tables.append(simulated_flags(subjects, rng, thresholds))
    table = pd.concat(tables)
    assert (table["failed"] != "").sum() <= 4, table.loc[table["failed"] != "", "reason"]


def test_a_run_at_chance_is_flagged_and_a_stronger_response_is_not():
    rng, thresholds = np.random.default_rng(2), defaults()
    lengths = {"a": 220, "b": 240}
    subjects = simulated(rng, 5, lengths, share=0.5)
    subjects["03"].data["a"] = zscore(ar1(rng, 220, 10, 0.3)).astype(np.float32)
    table = simulated_flags(subjects, rng, thresholds)
    flagged = table.loc[table["failed"] != "", ["subject", "story", "failed"]]
    assert flagged.values.tolist() == [["03", "a", "at_chance"]]
    reason = table.loc[table["failed"] != "", "reason"].iloc[0]
    assert reason.startswith("does not follow the 4 other listener(s) of a (r = ")


def test_global_signal_finds_a_dropout_and_a_spike():
    rng = np.random.default_rng(3)
    signal = 1000 + ar1(rng, 240, 1, 0.5)[:, 0]
    assert qc.global_outliers(signal, 2.0, 5.5)[0] == 0
    signal[100:104] -= 40  # four volumes of a coil dropout
    signal[200] += 30  # a spike
    count, peak = qc.global_outliers(signal, 2.0, 5.5)
    assert count == 5 and peak > 20


def test_the_same_file_a_link_or_a_copy_is_found(tmp_path):
    data = tmp_path / "a.nii"
    data.write_bytes(os.urandom(1000))
    (tmp_path / "link.nii").symlink_to(data)
    os.link(data, tmp_path / "hard.nii")
    shutil.copy(data, tmp_path / "copy.nii")
    (tmp_path / "other.nii").write_bytes(os.urandom(1000))
    rows = [{"subject": s, "story": "x", "run": 1, "response": str(tmp_path / f"{n}.nii")}
            for s, n in (("01", "a"), ("02", "link"), ("03", "hard"), ("04", "copy"),
                         ("05", "other"))]  # fmt: skip
    pairs = {(a[0], b[0]): how for a, b, how in qc.same_files(rows)}
    assert pairs == {
        ("01", "02"): "reads the same file as",
        ("01", "03"): "reads the same file as",
        ("02", "03"): "reads the same file as",
        ("01", "04"): "is a byte-identical copy of",
    }


# --- HDF5 responses (the ds003020 stand-in) ------------------------------------------------------


def test_hdf5_responses_say_what_they_cannot_measure(tmp_path):
    root = tmp_path / "ds003020"
    standins.generate(
        "ds003020", root, registry_path=REPO / "config" / "models.demo.yaml",
        model_root=tmp_path / "models",
    )  # fmt: skip
    runs = importers.run("ds003020", root, labels=standins.LABELS).runs
    rows = []
    for r in runs.to_dict("records"):
        for column in ("response", "labels"):
            if r[column]:
                r[column] = str(root / r[column])
        rows.append(r)
    cleaning = fmri.Cleaning(trim_start=2, trim_end=2)
    for sub in dict.fromkeys(r["subject"] for r in rows):
        mine = [r for r in rows if r["subject"] == sub]
        fmri.preprocess_runs(sub, mine, tmp_path / "fmri" / f"sub-{sub}", atlas=None,
                             rois=None, mode="roi_mean", cleaning=cleaning)  # fmt: skip
    table = qc.qc_table(read_subjects(sorted((tmp_path / "fmri").glob("sub-*"))), rows, defaults())
    assert table["fd_mean"].isna().all() and table["tsnr"].isna().all()
    assert (table["global_outliers"] >= 0).all() and table["global_max_z"].notna().all()
    expected = ("tsnr: HDF5 responses are preprocessed and z-scored (no baseline signal); "
                "motion: HDF5 responses come without a confounds table")  # fmt: skip
    assert table["not_available"].str.endswith(expected).all()
    assert failed(table) == {}
    shared = table[table["n_others"] > 0]
    assert len(shared) and (shared["isc_z"] > 2).all()


# --- exclusions ------------------------------------------------------------------------------


def test_exclusions_take_only_the_chosen_checks(faulty):
    assert exclusions.excluded_runs(faulty, []) == {}
    chosen = exclusions.excluded_runs(faulty, ["motion", "mislabeled"])
    assert {s: sorted(v) for s, v in chosen.items()} == {
        "01": ["lighthouse", "orchard"],
        "04": ["lighthouse"],
    }
    assert chosen["04"]["lighthouse"].startswith("motion: mean framewise displacement ")
    assert qc_report.decisions(faulty, ["motion"]).value_counts().to_dict() == {
        "ok": 7, "flagged": 4, "excluded (QC)": 1,
    }  # fmt: skip


def test_applying_exclusions_drops_stories_and_says_so(faulty, caplog):
    rng = np.random.default_rng(4)
    subjects = simulated(rng, 2, {"a": 100, "b": 100}, share=0.5)
    kept = exclusions.apply(subjects, {"01": {"a": "motion: x"}, "02": {"a": "y", "b": "z"}})
    assert list(kept) == ["01"] and list(kept["01"].runs) == ["b"]
    assert "QC excludes sub-01 story a (fmri.qc.exclude): motion: x" in caplog.text
    assert "sub-02 has no run left after the QC exclusions" in caplog.text
    with pytest.raises(BrainshapeError, match="the QC excludes every run of sub-01"):
        exclusions.apply({"01": subjects["01"]}, {"01": {"a": "x", "b": "y"}})
    unchanged = exclusions.apply(subjects, {})  # the default: nothing excluded
    assert {s: list(d.runs) for s, d in unchanged.items()} == {"01": ["a", "b"], "02": ["a", "b"]}


# --- in the workflow ---------------------------------------------------------------------------


def dry_jobs(work: Path, *targets: str) -> tuple[list[dict], str]:
    """(jobs of `snakemake -n`: rule, wildcards, reason; stderr)."""
    proc = snakemake(work, "-n", "--", *targets)
    jobs = []
    for line in proc.stdout.splitlines():
        start = re.match(r"^(?:local)?rule (\w+):$", line)
        if start:
            jobs.append({"rule": start.group(1), "wildcards": "", "reason": ""})
        elif jobs and line.strip().startswith(("wildcards:", "reason:")):
            key, _, value = line.strip().partition(": ")
            jobs[-1][key] = value
    return [j for j in jobs if j["rule"] != "all"], proc.stderr


TARGETS = [
    "results/study/qc.parquet",
    "results/study/ceiling.parquet",
    *[f"results/study/encoding/tiny-gpt2/fp32/g{g}.parquet" for g in (1, 2)],
    *[f"results/study/baselines/word_rate/g{g}.parquet" for g in (1, 2)],
]


@pytest.mark.workflow
def test_an_exclusion_reaches_the_later_stages_and_reruns_only_what_it_touches(small_run, tmp_path):
    cfg = yaml.safe_load((small_run / "config.yaml").read_text())
    cfg["registry"] = str(small_run / "models.yaml")
    as_ordinary_dataset(cfg, small_run, tmp_path / "data")
    # Contiguous blocks: a subject keeps a cross-validated score with two stories left (folds
    # that leave one story out need three). No permutations: p-values are not the point here.
    cfg["encoding"].update(folds="blocks", n_blocks=3, n_permutations=0)
    work = tmp_path / "work"
    write_config(work, cfg)
    snakemake(work, "--cores", "2", "--", *TARGETS)
    table = pd.read_parquet(work / "results/study/qc.parquet")
    assert (table["failed"] == "").all()
    # A lab decides on a stricter motion threshold, one that the most moving run exceeds.
    top, second = table["fd_mean"].nlargest(2)
    moved = table.loc[table["fd_mean"].idxmax()]
    group = {"01": "g1", "02": "g2"}[moved.subject]
    cfg["fmri"]["qc"] = {"exclude": ["motion"], "max_mean_fd": float((top + second) / 2)}
    write_config(work, cfg)
    # The dry run plans it at once (the table's measures under the new threshold) and says so;
    # only the jobs that read that subject rerun: its encode and baseline group and the ceiling
    # (and the QC job, whose table records the new threshold's flags).
    jobs, err = dry_jobs(work, *TARGETS)
    said = f"brainshape: QC excludes sub-{moved.subject} story {moved.story} (motion: mean"
    assert said in err
    assert sorted((j["rule"], j["wildcards"]) for j in jobs) == sorted([
        ("qc", "dataset=study"),
        ("ceiling", "dataset=study"),
        ("encode", f"dataset=study, model=tiny-gpt2, variant=fp32, group={group}"),
        ("baseline", f"dataset=study, baseline=word_rate, group={group}"),
    ])  # fmt: skip
    assert all("Params have changed" in j["reason"] for j in jobs)
    ceiling = pd.read_parquet(work / "results/study/ceiling.parquet")
    snakemake(work, "--cores", "2", "--", *TARGETS)
    log = (work / "logs/study/encoding/tiny-gpt2/fp32" / f"{group}.log").read_text()
    assert f"QC excludes sub-{moved.subject} story {moved.story} (fmri.qc.exclude): " in log
    encoded = pd.read_parquet(work / f"results/study/encoding/tiny-gpt2/fp32/{group}.parquet")
    assert set(encoded["subject"]) == {moved.subject}  # two stories left: still encoded
    # The ceiling compares the subjects on the two stories both still have.
    after = pd.read_parquet(work / "results/study/ceiling.parquet")
    assert after["isc"].notna().all() and not np.allclose(after["isc"], ceiling["isc"])
    assert dry_jobs(work, *TARGETS)[0] == []


def test_a_job_applies_the_exclusions_planned_even_while_the_qc_table_is_rewritten(tmp_path):
    """The planning process decides from the table and records it; a cluster job's process
    reads the record, also in the moment when the QC job of the same run has removed its table
    (Snakemake removes a job's output before it runs)."""
    table, record = tmp_path / "qc.parquet", tmp_path / "state" / "qc-exclusions-study.json"
    planned = {"02": {"ferry": "motion: mean framewise displacement 0.27 mm"}}
    calls = []

    def decide(path):
        calls.append(path)
        return planned

    assert exclusions.decided(table, record, decide, main=True) == {}  # no table yet
    assert calls == [] and exclusions.decided(table, record, decide, main=False) == {}
    table.write_bytes(b"table")
    assert exclusions.decided(table, record, decide, main=True) == planned
    assert calls == [table]
    table.unlink()  # the QC job of the same run is writing it again
    assert exclusions.decided(table, record, decide, main=False) == planned
    record.unlink()  # no record (a run planned before records were kept): the table decides
    table.write_bytes(b"table")
    assert exclusions.decided(table, record, decide, main=False) == planned
    assert calls == [table, table] and not record.exists()
