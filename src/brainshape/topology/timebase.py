"""The time base every cloud of a dataset shares: which volumes of which story, and the landmarks.

Both sides of a pairing share one time base: the kept volumes of every story, in sorted story
order, so point ``i`` of a layer cloud and point ``i`` of a brain cloud are the same moment of
the same story. The brain lags the stimulus: brain volume at ``t`` seconds is paired with the
stimulus at ``t - delay_s``. Times come from :mod:`brainshape.clock`, the one clock of every
stage.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainshape.clock import kept_times, run_start
from brainshape.errors import BrainshapeError
from brainshape.io import save_json
from brainshape.subjects import read_runs

log = logging.getLogger("brainshape")


@dataclass(frozen=True)
class TimeBase:
    """The shared time base: per story (sorted) its run, the brain delay and embedding history.

    ``runs[story]`` holds ``n_trs``, ``trim_start``, ``trim_end``, ``tr`` (seconds) and
    ``offset`` (word time of the file's first volume) as in the fMRI stage's ``runs.json``;
    times are on the word clock. A story contributes its kept volumes ``[trim_start, n_trs -
    trim_end)`` from the first one whose time is at least ``history_s`` after the first kept
    volume (so that a delay embedding of the brain reaches back inside the kept volumes) and at
    least ``delay_s`` after the start of the run (so that its stimulus lies inside the run).
    """

    runs: Mapping[str, Mapping[str, float]]
    delay_s: float = 4.0
    history_s: float = 0.0

    def stories(self) -> list[str]:
        return sorted(self.runs)

    def kept_times(self, story: str) -> np.ndarray:
        """Seconds of the kept volumes of ``story`` (one per row of its fMRI array)."""
        return kept_times(self.runs[story])

    def brain_rows(self, story: str) -> np.ndarray:
        """Rows of the story's kept-volume array that enter the clouds."""
        t = self.kept_times(story)
        if t.size == 0:
            return np.zeros(0, dtype=np.int64)
        start = run_start(self.runs[story])
        ok = (t - t[0] >= self.history_s - 1e-9) & (t - self.delay_s >= start)
        return np.flatnonzero(ok)

    def brain_times(self, story: str) -> np.ndarray:
        return self.kept_times(story)[self.brain_rows(story)]

    def model_times(self, story: str) -> np.ndarray:
        """Seconds of the stimulus paired with each brain row of ``story``."""
        return self.brain_times(story) - self.delay_s

    def n_points(self) -> int:
        return sum(self.brain_rows(s).size for s in self.stories())

    def seconds_per_point(self) -> float:
        return sum(self.brain_rows(s).size * float(self.runs[s]["tr"]) for s in self.stories()) / (
            max(1, self.n_points())
        )

    def check(self, where: str) -> None:
        if self.delay_s < 0:
            raise BrainshapeError(f"topology.delay_s is {self.delay_s}; use seconds >= 0")
        for story in self.stories():
            if self.brain_rows(story).size < 1:
                raise BrainshapeError(
                    f"{where}: story {story} keeps {self.kept_times(story).size} volumes, none "
                    f"of them {self.history_s:g} s after its first kept volume (the brain "
                    f"embedding's reach) and {self.delay_s:g} s into the run (topology.delay_s); "
                    "lower topology.embedding.dimension, lag_s or delay_s"
                )


def shared_time_base(
    fmri_dirs: Sequence[str | os.PathLike], delay_s: float, history_s: float = 0.0
) -> TimeBase:
    """The time base of a dataset: the runs (stories, lengths, trimming, TR and clock) that the
    most subjects share (:func:`base_members`); the group brain clouds are made of those
    subjects."""
    if not fmri_dirs:
        raise BrainshapeError("no fMRI subjects for the brain clouds; list subjects in the config")
    runs, members = _common_runs(fmri_dirs)
    base = TimeBase(runs=runs, delay_s=float(delay_s), history_s=float(history_s))
    base.check(str(Path(members[0]) / "runs.json"))
    return base


def _common_runs(fmri_dirs: Sequence[str | os.PathLike]) -> tuple[dict, list]:
    """The runs most subjects share (ties: the first subject's) and those subjects' folders."""
    found: list[tuple[dict, list]] = []
    for d in fmri_dirs:
        runs = read_runs(d)
        for known, members in found:
            if known == runs:
                members.append(d)
                break
        else:
            found.append((runs, [d]))
    return max(found, key=lambda pair: len(pair[1]))


def base_members(fmri_dirs: Sequence[str | os.PathLike], base: TimeBase) -> list:
    """The subjects whose runs are the time base's; the others (who heard other stories) are
    logged and left out of the group brain clouds."""
    members = [d for d in fmri_dirs if read_runs(d) == dict(base.runs)]
    others = [Path(d).name for d in fmri_dirs if d not in members]
    if others:
        log.warning(
            "brain clouds: %d of %d subjects heard the stories of the time base (%s); left out, "
            "with other stories or runs: %s",
            len(members),
            len(fmri_dirs),
            ", ".join(base.stories()),
            ", ".join(others),
        )
    return members


def restrict(
    base: TimeBase, index: np.ndarray, stories: Sequence[str]
) -> tuple[TimeBase, np.ndarray, np.ndarray]:
    """The time base of ``stories`` only: that time base, the landmarks that fall in those
    stories (as points of it), and the points of the whole time base it keeps (in order)."""
    missing = sorted(set(stories) - set(base.stories()))
    if missing:
        raise BrainshapeError(
            f"stories {missing} are not in the time base ({', '.join(base.stories())}); rerun "
            "rule topology_timebase"
        )
    sizes = [base.brain_rows(s).size for s in base.stories()]
    starts = dict(zip(base.stories(), np.cumsum([0, *sizes[:-1]]), strict=True))
    sub = TimeBase(
        runs={s: base.runs[s] for s in sorted(stories)},
        delay_s=base.delay_s,
        history_s=base.history_s,
    )
    kept = np.concatenate(
        [starts[s] + np.arange(base.brain_rows(s).size) for s in sub.stories()]
    ).astype(np.int64)
    inside = np.isin(index, kept)
    return sub, np.searchsorted(kept, index[inside]).astype(np.int64), kept


def landmarks(n_points: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n_points``, drawn with a fixed seed.

    The same indices serve every cloud of a dataset, so paired clouds keep paired points.
    """
    if n_points <= max_points:
        return np.arange(n_points)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_points, size=max_points, replace=False))


def write_time_base(
    fmri_dirs: Sequence[str | os.PathLike],
    path: str | os.PathLike,
    *,
    delay_s: float,
    history_s: float,
    max_points: int,
    seed: int,
    stability_seeds: int = 0,
) -> tuple[TimeBase, np.ndarray]:
    """The dataset's time base and landmark volumes, written to ``path`` (JSON).

    ``stability_seeds`` more landmark draws of the same size (seeds ``seed + 1``, ...) are
    written beside them (``stability``): every feature is also measured there, to say how much
    of it is the choice of landmarks (:func:`read_stability`).

    Every cloud of the dataset, brain or layer, is taken at these landmarks, so diagrams of
    both sides are computed once and paired freely. The file depends on the subjects' runs
    (stories, lengths, trimming, TR) only, not on their data: a replaced derivative leaves it,
    and with it every layer's diagrams, as it is.
    """
    base = shared_time_base(fmri_dirs, delay_s, history_s)
    index = landmarks(base.n_points(), max_points, seed)
    save_json(
        path,
        {
            "runs": dict(base.runs),
            "delay_s": base.delay_s,
            "history_s": base.history_s,
            "index": index.tolist(),
            "stability": [
                landmarks(base.n_points(), max_points, seed + k).tolist()
                for k in range(1, int(stability_seeds) + 1)
            ],
        },
    )
    return base, index


def read_stability(path: str | os.PathLike) -> list[np.ndarray]:
    """The extra landmark draws of :func:`write_time_base` (none before they existed, or where
    every volume is a landmark: another draw would be the same)."""
    data = json.loads(Path(path).read_text())
    draws = [np.asarray(d, dtype=np.int64) for d in data.get("stability", [])]
    index = np.asarray(data["index"], dtype=np.int64)
    return [d for d in draws if not np.array_equal(d, index)]


def read_time_base(path: str | os.PathLike) -> tuple[TimeBase, np.ndarray]:
    """The time base and landmark volumes of :func:`write_time_base`."""
    data = json.loads(Path(path).read_text())
    if "delay_s" not in data:
        raise BrainshapeError(
            f"{path} was written by an older version (no delay_s); delete it so that rule "
            "topology_timebase computes it again"
        )
    base = TimeBase(runs=data["runs"], delay_s=data["delay_s"], history_s=data["history_s"])
    return base, np.asarray(data["index"], dtype=np.int64)
