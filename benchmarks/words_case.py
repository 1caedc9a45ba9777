"""What the model reads matters: a ds003020-layout stand-in whose planted signal comes from the
stories' own text, scored with the TextGrids' capitals, the same words lower-cased, and the
transcripts aligned to them.

The stand-in (`brainshape.standins`, ds003020 layout) writes its TextGrids' words in capitals
without punctuation, as CMU-dictionary aligners do, and each story's text under
`standin/transcripts/`. Its responses are then planted anew from the stories' text: SmolLM2-135M
layer 22 drives STG left, layer 6 IFG left (each ROI's columns from the stand-in's labels
tables), AR(1) noise everywhere, the test story's repeats averaged, as the stand-in does. The
runs sheet comes from `brainshape sheet ds003020`, the config from
`config/datasets/ds003020.yaml` pointed at the stand-in with small counts (two subjects, SmolLM2
only, ROI means, the stand-in's feature settings, 10 permutations). Three runs of the workflow
to the brainscores differ only in the words: `words.case: as-is` (capitals), `lower`, and
`words.transcript`. Reported per run and ROI: the best layer (mean r over subjects) and its r,
and the r at the planted layer.

    python benchmarks/words_case.py --out benchmarks/out/words_case [--subjects UTS01 UTS02]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
REGISTRY = REPO / "config" / "models.demo.yaml"
MODEL, VARIANT = "smollm2-135m", "fp32"
#: (ROI, hemisphere) -> SmolLM2 layer whose features drive it.
PLANTED = {("STG", "L"): 22, ("IFG", "L"): 6}
CONDITIONS = {
    "capitals": {"case": "as-is"},
    "lower": {"case": "lower"},
    "transcript": {"case": "as-is", "transcript": "standin/transcripts/{story}.txt"},
}


def natural_words(root: Path) -> dict[str, pd.DataFrame]:
    """Each story's text at its TextGrid's times: the stand-in's story pieces, one for one with
    the TextGrid's words (checked), the TextGrid's onsets and offsets."""
    from brainshape import standins, stimuli

    stories = (*standins.LEBEL_STORIES, standins.LEBEL_TEST)
    out = {}
    for story, text in zip(stories, standins.story_pieces(), strict=False):
        grid = root / "derivative" / "TextGrids" / f"{story}.TextGrid"
        timed = stimuli.read_words(grid, "textgrid", tier="2")
        keys = [stimuli.match_key(w) for w in text]
        if keys != [stimuli.match_key(w) for w in timed.word]:
            raise SystemExit(f"{grid}: its words are not the story's text")
        out[story] = timed.assign(word=text)
    return out


def _write_hdf5(path: Path, data: np.ndarray, repeats: np.ndarray | None) -> None:
    import h5py

    tmp = path.with_suffix(".tmp.hf5")
    with h5py.File(tmp, "w", track_order=True) as f:
        f.create_dataset("data", data=data.astype(np.float64), track_times=False)
        if repeats is not None:
            f.create_dataset("individual_repeats", data=repeats, track_times=False)
    os.replace(tmp, path)


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / x.std(axis=0)


def replant(root: Path, model_root: Path, seed: int = 0) -> dict:
    """Overwrite the stand-in's responses with signal planted from the stories' text
    (:data:`PLANTED`); return what was planted."""
    from brainshape import demo, standins

    truth = json.loads((root / standins.GROUND_TRUTH).read_text())
    words = natural_words(root)
    entries = [
        {"roi": roi, "hemisphere": hemi, "model": MODEL, "variant": VARIANT, "layer": layer}
        for (roi, hemi), layer in PLANTED.items()
    ]
    feats = demo.planted_features_for(entries, words, REGISTRY, model_root, **standins.FEATURES)
    signals = {}
    for (roi, hemi), layer in PLANTED.items():
        runs = [
            standins.Run(
                r["subject"],
                r["story"],
                r["run"],
                r["audio_onset"],
                r["n_scan"],
                r["removed_start"],
                r["removed_end"],
                repeats=r["repeats"],
            )  # fmt: skip
            for r in truth["runs"]
        ]
        standins.plant(runs, words, feats[(MODEL, VARIANT, layer)], standins.ROI_SIZES[roi],
                       truth["tr"], seed + layer)  # fmt: skip
        signals[(roi, hemi)] = {r.key: r.signal for r in runs}
    rng = np.random.default_rng(seed)
    for r in truth["runs"]:
        labels = pd.read_csv(root / standins.LABELS.format(subject=r["subject"]), sep="\t")
        n, key = len(labels), f"{r['subject']}/{r['story']}/{r['run']}"
        takes = []
        for _ in range(max(r["repeats"], 1)):
            units = standins.ar1_noise(rng, r["n_rows"], n, truth["ar1"]) / math.sqrt(truth["snr"])
            for (roi, hemi), by_run in signals.items():
                cols = np.flatnonzero((labels.roi == roi) & (labels.hemisphere == hemi))
                units[:, cols] += by_run[key]
            takes.append(_zscore(units))
        keep = r["repeats"] and r["subject"] in truth["repeats_in"]
        path = root / "derivative" / "preprocessed_data" / r["subject"] / f"{r['story']}.hf5"
        _write_hdf5(path, np.mean(takes, axis=0), np.stack(takes) if keep else None)
    return {f"{roi} {hemi}": layer for (roi, hemi), layer in PLANTED.items()}


def config(root: Path, runs: Path, model_root: Path, subjects, words: dict) -> dict:
    """config/datasets/ds003020.yaml pointed at the stand-in, cut down (module docstring)."""
    from brainshape import standins

    cfg = yaml.safe_load((REPO / "config" / "datasets" / "ds003020.yaml").read_text())
    ds = cfg["datasets"]["ds003020"]
    ds.update(bids_root=str(root), runs=str(runs), subjects=list(subjects))
    ds["words"] = {**ds.get("words", {}), **words}
    cfg.update(registry=str(REGISTRY), models=[MODEL], variants={MODEL: [VARIANT]})
    cfg["model_root"] = str(model_root)
    cfg["features"] = dict(standins.FEATURES)
    cfg["fmri"]["targets"] = "roi_mean"
    cfg["encoding"].update(n_permutations=10, metrics=["r"], threads=1)
    return cfg


def best_layers(scores: pd.DataFrame) -> dict:
    """Per ROI x hemisphere: best layer by mean r over subjects, its r, r at the planted one."""
    out = {}
    for (roi, hemi), rows in scores.groupby(["roi", "hemisphere"]):
        by_layer = rows.groupby("layer")["score"].mean()
        planted = PLANTED.get((roi, hemi))
        out[f"{roi} {hemi}"] = {
            "best_layer": int(by_layer.idxmax()),
            "r_best": round(float(by_layer.max()), 3),
            "planted_layer": planted,
            "r_planted": None if planted is None else round(float(by_layer[planted]), 3),
        }
    return out


def run(out: Path, subjects, cores: int) -> dict:
    from brainshape import standins

    out.mkdir(parents=True, exist_ok=True)
    root, model_root = out / "ds003020", out / "models"
    if root.exists():
        shutil.rmtree(root)
    started = time.time()
    standins.generate("ds003020", root, registry_path=REGISTRY, model_root=model_root,
                      textgrid_words="upper", transcripts=True)  # fmt: skip
    planted = replant(root, model_root)
    results = {}
    for name, words in CONDITIONS.items():
        work = out / "work" / name
        if work.exists():
            shutil.rmtree(work)
        runs = work / "runs" / "ds003020.tsv"
        runs.parent.mkdir(parents=True)
        sheet = [sys.executable, "-c", "from brainshape.cli import main; main()", "sheet",
                 "ds003020", str(root), "--labels", standins.LABELS, "-o", str(runs)]  # fmt: skip
        subprocess.run(sheet, check=True, cwd=work)
        (work / "config.yaml").write_text(
            yaml.safe_dump(config(root, runs, model_root, subjects, words), sort_keys=False)
        )
        target = "results/ds003020/brainscores.parquet"
        t0 = time.time()
        snake = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores",
                 str(cores), target, "--configfile", "config.yaml"]  # fmt: skip
        subprocess.run(snake, check=True, cwd=work)
        scores = pd.read_parquet(work / target)
        scores = scores[(scores.model == MODEL) & (scores.variant == VARIANT)]
        results[name] = {"words": words, "wall_s": round(time.time() - t0), **best_layers(scores)}
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.processor() or 'cpu'}",
        "command": "python benchmarks/words_case.py " + " ".join(sys.argv[1:]),
        "subjects": list(subjects),
        "planted": planted,
        "total_s": round(time.time() - started),
        "results": results,
    }


def table(record: dict) -> str:
    """The results as a Markdown table."""
    rows = [
        "| words | ROI | best layer | r at best | r at planted layer |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, res in record["results"].items():
        for roi in ("STG L", "IFG L", "STG R", "IFG R"):
            if roi not in res:
                continue
            e = res[roi]
            planted = "" if e["planted_layer"] is None else f"{e['r_planted']:.2f}"
            planted += "" if e["planted_layer"] is None else f" ({e['planted_layer']})"
            rows.append(f"| {name} | {roi} | {e['best_layer']} | {e['r_best']:.2f} | {planted} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "words_case")
    parser.add_argument("--subjects", nargs="+", default=["UTS01", "UTS02"])
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    record = run(args.out.resolve(), args.subjects, args.cores)
    (args.out / "words_case.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "results"}, indent=2))
    print(table(record))


if __name__ == "__main__":
    main()
