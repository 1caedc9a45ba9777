"""Check the encode job's memory and runtime model against a real run of the engine.

    python benchmarks/encode_memory.py                         # the table in docs/benchmarks.md
    python benchmarks/encode_memory.py --shape 4 300 512 2 2000 --json   # one shape, as JSON

For each shape (stories, TRs per story, hidden units, layers, targets) the script writes a
synthetic dataset the way the features and fmri stages leave one (float32 ``.npy`` features
per story, ``fmri/sub-*/`` folders written by ``subjects.write_subject``), then runs
``encoding.encode_variant`` in a fresh Python process exactly as ``workflow/scripts/encode.py``
does (``features.read_features``, ``subjects.read_subjects``, BLAS limited to ``--threads``).
Reported: the peak resident memory of that run above the interpreter's own (``ru_maxrss`` less
the resident size after the imports), the estimate of ``resources.encode_memory`` for the same
shape (without the fixed overhead), their ratio, the wall time and the sustained rate implied
by ``resources.encode_flops``.

The estimate is meant as an upper bound within a factor of about 1.5 of the measured peak.
The engine runs on numpy here (CPU, float64) whatever the machine; the rate on a GPU is
measured with ``--backend torch`` where one is present.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from brainshape import resources, scoring, stimuli
from brainshape.ridge import DEFAULT_TARGET_CHUNK
from brainshape.subjects import write_subject

#: Words per second of speech in the synthetic stories (a brisk reader: about 150 per minute).
WORDS_PER_SECOND = 2.5
TR = 2.0

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path

import numpy as np
import pandas as pd

from brainshape import encoding, features, stimuli
from brainshape.subjects import read_subjects
from brainshape.threads import limit_threads


def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


root = Path(sys.argv[1])
settings = json.loads((root / "settings.json").read_text())
base = rss_kib()
start = time.perf_counter()
words = stimuli.read_words_table(root / "words.parquet")
feats = features.read_features(root / "features", settings["stories"])
subjects = read_subjects(sorted((root / "fmri").iterdir()), mmap=True)
with limit_threads(settings["threads"]):
    table = encoding.encode_variant(words, feats, subjects, **settings["options"])
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kib": base, "peak_kib": peak, "wall_s": wall, "rows": len(table)}))
"""


def shape_of(
    stories: int,
    trs: int,
    hidden: int,
    layers: int,
    targets: int,
    *,
    delays: int = 4,
    n_alphas: int = 13,
    target_chunk: int = DEFAULT_TARGET_CHUNK,
    n_permutations: int = 100,
    predictions: bool = False,
    trim: int = 4,
) -> resources.EncodeShape:
    words = int(trs * TR * WORDS_PER_SECOND)
    return resources.EncodeShape(
        story_trs=(trs - trim,) * stories,
        story_words=(words,) * stories,
        trimmed=trim,
        layers=layers,
        hidden=hidden,
        delays=delays,
        targets=targets,
        n_alphas=n_alphas,
        target_chunk=target_chunk,
        n_permutations=n_permutations,
        predictions=predictions,
        null_copies=scoring.NULL_COPIES if n_permutations else 0,
    )


def write_dataset(root: Path, shape: resources.EncodeShape, subjects: int, seed: int = 0) -> dict:
    """Files as the features and fmri stages write them; returns the job's settings."""
    rng = np.random.default_rng(seed)
    stories = [f"story{i}" for i in range(len(shape.story_trs))]
    rows = []
    (root / "features").mkdir(parents=True)
    for story, kept, n_words in zip(stories, shape.story_trs, shape.story_words, strict=True):
        n_trs = kept + shape.trimmed
        # Words spread over the run, ending a little before the scan does.
        mids = np.sort(rng.uniform(0.5, n_trs * TR - 1.0, n_words))
        rows.append(
            pd.DataFrame(
                {
                    "story": story,
                    "word_index": np.arange(n_words),
                    "word": "word",
                    "onset": mids - 0.15,
                    "offset": mids + 0.15,
                    "aligned": True,
                }
            )
        )
        feats = rng.standard_normal((shape.layers, n_words, shape.hidden)).astype(np.float32)
        np.save(root / "features" / f"{story}.npy", feats)
    stimuli.write_words_table(root / "words.parquet", pd.concat(rows, ignore_index=True))
    per_subject = shape.targets // subjects
    half = shape.trimmed // 2
    targets = pd.DataFrame(
        {
            "target": np.arange(per_subject),
            "roi": [f"R{i % 8}" for i in range(per_subject)],
            "hemisphere": ["L" if i % 2 else "R" for i in range(per_subject)],
        }
    )
    for s in range(subjects):
        runs = []
        for story, kept in zip(stories, shape.story_trs, strict=True):
            run = {
                "n_trs": kept + shape.trimmed,
                "trim_start": half,
                "trim_end": shape.trimmed - half,
                "tr": TR,
            }
            bold = rng.standard_normal((kept, per_subject)).astype(np.float32)
            runs.append((story, run, bold))
        write_subject(root / "fmri" / f"sub-{s + 1:02d}", targets, runs)
    return {"stories": stories}


def measure(
    shape: resources.EncodeShape, *, subjects: int = 1, threads: int = 1, backend: str = "numpy"
) -> dict:
    """Run the engine on ``shape`` in a fresh process; measured and estimated figures."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = write_dataset(root, shape, subjects)
        settings["threads"] = threads
        settings["options"] = {
            "delays": list(range(1, shape.delays + 1)),
            "alphas": list(np.logspace(0, 6, shape.n_alphas)),
            "target_chunk": shape.target_chunk,
            "n_permutations": shape.n_permutations,
            "backend": backend,
            "metrics": ["r", "mi", "segment_identification"] if shape.predictions else ["r", "mi"],
        }
        (root / "settings.json").write_text(json.dumps(settings))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(root)], capture_output=True, text=True, env=env
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        run = json.loads(proc.stdout.strip().splitlines()[-1])
    measured = (run["peak_kib"] - run["base_kib"]) * 1024
    estimate = resources.encode_memory(shape)
    flops = resources.encode_flops(shape)
    return {
        "n": shape.n,
        "p": shape.p,
        "targets": shape.targets,
        "layers": shape.layers,
        "measured_mib": measured / 2**20,
        "estimate_mib": estimate["total"] / 2**20,
        "ratio": estimate["total"] / measured,
        "parts_mib": {k: v / 2**20 for k, v in estimate.items()},
        "wall_s": run["wall_s"],
        "gflops": flops / 1e9 / run["wall_s"],
        "gflops_per_thread": flops / 1e9 / run["wall_s"] / threads,
    }


_DIAGRAMS_CHILD = r"""
import json, resource, sys, time

import numpy as np

from brainshape.topology import clouds, persistence

n = int(sys.argv[1])
rng = np.random.default_rng(0)
# A cloud like the pipeline's (benchmarks/topology.py): a slow trajectory in 64 dimensions
# plus noise, correlation distance.
t = np.linspace(0, 6 * np.pi, n)
slow = np.stack([np.sin(t), np.cos(t), np.sin(t / 3), np.cos(t / 3)], axis=1)
cloud = slow @ rng.standard_normal((4, 64)) + 0.8 * rng.standard_normal((n, 64))
d = clouds.distances(cloud, "correlation")
base = [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmRSS:")][0]
start = time.perf_counter()
persistence.diagrams(d, 1, sys.argv[2], 1)
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kib": base, "peak_kib": peak, "wall_s": wall}))
"""


def measure_diagrams(n_points: int, backend: str = "giotto") -> dict:
    """Peak memory of one Vietoris-Rips diagram (H0, H1) of ``n_points`` against the
    persistent-homology term of ``resources.layer_diagrams_memory``."""
    proc = subprocess.run(
        [sys.executable, "-c", _DIAGRAMS_CHILD, str(n_points), backend],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    measured = (run["peak_kib"] - run["base_kib"]) * 1024
    estimate = resources.persistence_bytes(n_points)
    return {
        "n_points": n_points,
        "measured_mib": measured / 2**20,
        "estimate_mib": estimate / 2**20,
        "ratio": estimate / measured,
        "wall_s": run["wall_s"],
    }


#: (stories, TRs per story, hidden, layers, targets): from the demo's size to what 2 cores and
#: a few GiB allow, both sides of n = p and one with whole-brain-sized targets.
SHAPES = (
    (4, 160, 64, 2, 2000),
    (4, 300, 256, 1, 8000),
    (5, 400, 576, 1, 2000),
    (3, 700, 160, 1, 6000),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape",
        type=int,
        nargs=5,
        action="append",
        metavar=("STORIES", "TRS", "HIDDEN", "LAYERS", "TARGETS"),
    )
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=DEFAULT_TARGET_CHUNK)
    parser.add_argument("--predictions", action="store_true")
    parser.add_argument("--backend", default="numpy", choices=["numpy", "torch", "auto"])
    parser.add_argument("--json", action="store_true", help="print one JSON line per shape")
    parser.add_argument(
        "--diagrams",
        type=int,
        nargs="+",
        metavar="POINTS",
        help="instead: peak memory of one persistence diagram of this many points",
    )
    args = parser.parse_args()
    if args.diagrams:
        if not args.json:
            print("| points | measured MiB | estimate MiB | estimate / measured | wall s |")
            print("| --- | --- | --- | --- | --- |")
        for n in args.diagrams:
            out = measure_diagrams(n)
            if args.json:
                print(json.dumps(out))
                continue
            print(
                f"| {n} | {out['measured_mib']:.0f} | {out['estimate_mib']:.0f} | "
                f"{out['ratio']:.2f} | {out['wall_s']:.1f} |"
            )
        return
    shapes = args.shape or SHAPES
    if not args.json:
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
        print(
            "| stories x TRs | n | p | targets | layers | measured MiB | estimate MiB | "
            "estimate / measured | wall s | GFLOP/s per thread |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for stories, trs, hidden, layers, targets in shapes:
        shape = shape_of(
            stories,
            trs,
            hidden,
            layers,
            targets,
            n_permutations=args.permutations,
            target_chunk=args.chunk,
            predictions=args.predictions,
        )
        out = measure(shape, subjects=args.subjects, threads=args.threads, backend=args.backend)
        if args.json:
            print(json.dumps(out))
            continue
        print(
            f"| {stories} x {trs} | {out['n']} | {out['p']} | {out['targets']} | {layers} | "
            f"{out['measured_mib']:.0f} | {out['estimate_mib']:.0f} | {out['ratio']:.2f} | "
            f"{out['wall_s']:.1f} | {out['gflops_per_thread']:.1f} |"
        )


if __name__ == "__main__":
    main()
