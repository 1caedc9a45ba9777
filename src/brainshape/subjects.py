"""The fMRI subject folder: what the fmri stage writes and every later stage reads.

The subject folder holds ``runs.json`` (per story: ``n_trs``, the volumes of the BOLD file;
``trim_start``, ``trim_end``; ``tr`` in seconds; ``offset``, ``removed_end`` and ``split``,
:data:`RUN_DEFAULTS`), ``targets.parquet`` (one row per
target: ``target``, ``roi``, ``hemisphere``, ...) and ``<story>.npy`` (float32, kept volumes x
targets, each column z-scored over the kept volumes with :func:`zscore`). :func:`write_subject`
is its one writer (all files at once, or none) and :func:`read_subject` its one reader, which
returns a :class:`SubjectData`; subjects may hold different sets of stories.

A module of its own, apart from ``brainshape.fmri`` (the preprocessing), because the code stamp
of a rule covers every library module its script imports: the encoding, baseline, ceiling and
topology stages read this folder, and a change to the preprocessing must not rerun them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainshape.errors import BrainshapeError
from brainshape.io import atomic_path, verify_manifest, write_manifest

log = logging.getLogger("brainshape")

#: Keys of a run in ``runs.json``: volumes of the BOLD file, volumes trimmed at its start and
#: end, and the repetition time in seconds.
RUN_KEYS = ("n_trs", "trim_start", "trim_end", "tr")

#: Keys a run may give, with their meaning when it does not: ``offset``, the word time
#: (seconds) at the start of the response file's first row (volume k of the file is centred
#: at word time ``offset + (k + 0.5) tr``); ``removed_end``, volumes the dataset removed after
#: the file's last row (words may run into them); ``split``, ``train`` or ``test`` (a fixed
#: test story, scored as the held-out set).
RUN_DEFAULTS = {"offset": 0.0, "removed_end": 0, "split": "train"}

#: Every key of a run, in the order a group of subjects is matched on.
ALL_RUN_KEYS = (*RUN_KEYS, *RUN_DEFAULTS)

#: Columns every ``targets.parquet`` holds (``n_voxels`` and, for voxels, ``i, j, k`` follow).
TARGET_COLUMNS = ("target", "roi", "hemisphere")


def zscore(x: np.ndarray) -> np.ndarray:
    """Columns of ``x`` (time, columns) to mean 0 and population std 1; constant columns -> 0."""
    x = x - x.mean(axis=0)
    std = x.std(axis=0)
    return x / np.where(std > 0, std, 1.0)


@dataclass
class SubjectData:
    """The preprocessed fMRI of one subject, as its subject folder holds it.

    ``data[story]`` (n_kept_trs, n_targets): BOLD of the kept volumes of that story's run;
    ``targets``: one row per column (``target``, ``roi``, ``hemisphere``, ...);
    ``runs[story]``: ``{"n_trs", "trim_start", "trim_end", "tr"}`` where ``n_trs`` counts the
    volumes of the BOLD file, the kept ones are ``[trim_start, n_trs - trim_end)`` and ``tr``
    is in seconds. Subjects may hold different sets of stories.
    """

    data: dict[str, np.ndarray]
    targets: pd.DataFrame
    runs: dict[str, dict]

    def check(self, label: str) -> None:
        """Raise a BrainshapeError naming ``label`` (``sub-01``) where data and runs disagree:
        other stories, another number of kept volumes or targets, NaN or infinite values."""
        if set(self.data) != set(self.runs):
            raise BrainshapeError(
                f"{label}: the BOLD stories {sorted(self.data)} differ from the runs "
                f"{sorted(self.runs)}; rerun the fmri stage for this subject."
            )
        for story in sorted(self.runs):
            run = check_run(self.runs[story], f"story {story}, {label}")
            _check_bold(self.data[story], run, len(self.targets), f"story {story}, {label}")


def _check_bold(bold: np.ndarray, run: Mapping, n_targets: int, where: str) -> None:
    expected = run["n_trs"] - run["trim_start"] - run["trim_end"]
    if bold.ndim != 2 or bold.shape[0] != expected:
        n_kept = bold.shape[0] if bold.ndim >= 1 else 0
        raise BrainshapeError(
            f"{where}: BOLD has {n_kept} volumes after trimming but the run should keep "
            f"n_trs - trim_start - trim_end = {run['n_trs']} - {run['trim_start']} - "
            f"{run['trim_end']} = {expected}; rerun the fmri stage for this subject."
        )
    if bold.shape[1] != n_targets:
        raise BrainshapeError(
            f"{where}: BOLD has {bold.shape[1]} targets but the targets table lists "
            f"{n_targets}; rerun the fmri stage for this subject."
        )
    if not np.all(np.isfinite(bold)):
        raise BrainshapeError(
            f"{where}: BOLD contains NaN or infinite values; fix the mask or the preprocessing "
            "in the fmri stage so every kept target is finite."
        )


def subject_label(sub: str) -> str:
    """``sub-<label>`` for a subject given with or without its prefix."""
    return sub if str(sub).startswith("sub-") else f"sub-{sub}"


def check_run(run: object, where: str) -> dict:
    """``run`` (one entry of ``runs.json``) if it is well formed, else a BrainshapeError."""
    if not isinstance(run, Mapping) or any(k not in run for k in RUN_KEYS):
        raise BrainshapeError(f"{where}: the run needs keys {list(RUN_KEYS)}, got {run!r}.")
    for key in ("n_trs", "trim_start", "trim_end"):
        value = run[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise BrainshapeError(f"{where}: {key} must be a non-negative integer, got {value!r}.")
    tr = run["tr"]
    if isinstance(tr, bool) or not isinstance(tr, (int, float)) or not (tr > 0):
        raise BrainshapeError(f"{where}: tr must be a positive number of seconds, got {tr!r}.")
    if run["trim_start"] + run["trim_end"] >= run["n_trs"]:
        raise BrainshapeError(
            f"{where}: trim_start + trim_end ({run['trim_start']} + {run['trim_end']}) leaves "
            f"no volume of the {run['n_trs']}; reduce the trimming."
        )
    out = dict(run)
    for key, value in RUN_DEFAULTS.items():
        out.setdefault(key, value)
    offset = out["offset"]
    if isinstance(offset, bool) or not isinstance(offset, int | float) or not np.isfinite(offset):
        raise BrainshapeError(f"{where}: offset must be a number of seconds, got {offset!r}.")
    end = out["removed_end"]
    if isinstance(end, bool) or not isinstance(end, int | np.integer) or end < 0:
        raise BrainshapeError(f"{where}: removed_end must be a non-negative integer, got {end!r}.")
    if out["split"] not in ("train", "test"):
        raise BrainshapeError(f"{where}: split must be 'train' or 'test', got {out['split']!r}.")
    return out


def _check_targets(targets: pd.DataFrame, where: str) -> None:
    missing = [c for c in TARGET_COLUMNS if c not in targets.columns]
    if missing:
        raise BrainshapeError(
            f"{where} lacks column(s) {missing}; rerun the fmri stage for this subject."
        )
    if not np.array_equal(targets["target"].to_numpy(), np.arange(len(targets))):
        raise BrainshapeError(
            f"{where}: column 'target' must be 0, 1, ..., n_targets - 1 in order; "
            "rerun the fmri stage for this subject."
        )


def read_runs(directory: str | os.PathLike) -> dict[str, dict]:
    """``runs.json`` of a subject folder: story -> run (``RUN_KEYS``), each entry checked."""
    path = Path(directory) / "runs.json"
    if not path.is_file():
        raise BrainshapeError(f"{path} is missing; run the fmri stage for this subject first.")
    try:
        runs = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BrainshapeError(f"{path} is not valid JSON ({err}); rerun the fmri stage.") from err
    if not isinstance(runs, dict) or not runs:
        raise BrainshapeError(
            f"{path} must map each story to its run; it is empty or not a mapping."
        )
    return {story: check_run(run, f"{path}, story {story!r}") for story, run in runs.items()}


def read_subject(directory: str | os.PathLike, *, mmap: bool = False) -> SubjectData:
    """Read a subject folder (``runs.json``, ``targets.parquet``, ``<story>.npy``); ``mmap``
    maps the arrays read-only instead of loading them.

    Every story of ``runs.json`` must have its array, with the kept volumes of its run as rows
    and one column per row of ``targets.parquet``. Raises a BrainshapeError naming the file.
    """
    directory = Path(directory)
    runs_path = directory / "runs.json"
    targets_path = directory / "targets.parquet"
    for path in (runs_path, targets_path):
        if not path.is_file():
            raise BrainshapeError(f"{path} is missing; run the fmri stage for this subject first.")
    runs = read_runs(directory)
    targets = pd.read_parquet(targets_path)
    _check_targets(targets, str(targets_path))
    data = {}
    for story, run in runs.items():
        path = directory / f"{story}.npy"
        if not path.is_file():
            raise BrainshapeError(
                f"{path} is missing but {runs_path} lists story {story!r}; rerun the fmri "
                "stage for this subject."
            )
        try:
            array = np.load(path, mmap_mode="r" if mmap else None)
        except (OSError, ValueError) as error:
            verify_manifest(directory)  # a file changed since it was written: name the rule
            raise BrainshapeError(
                f"cannot read {path} as a .npy array ({error}); rerun the fmri stage for this "
                "subject."
            ) from None
        if array.ndim != 2 or array.shape[1] != len(targets):
            raise BrainshapeError(
                f"{path} has shape {array.shape} but {targets_path} lists {len(targets)} "
                "targets; rerun the fmri stage for this subject."
            )
        _check_bold(array, run, len(targets), str(path))
        data[story] = array
    # Last: the checks above name what is malformed; this, what changed since it was written.
    verify_manifest(directory)
    return SubjectData(data=data, targets=targets, runs=runs)


def read_subjects(
    directories: Iterable[str | os.PathLike], *, mmap: bool = False
) -> dict[str, SubjectData]:
    """:func:`read_subject` of each ``sub-<label>`` folder, keyed by ``<label>``."""
    return {Path(d).name.removeprefix("sub-"): read_subject(d, mmap=mmap) for d in directories}


def write_subject(
    out_dir: str | os.PathLike,
    targets: pd.DataFrame | Callable[[], pd.DataFrame],
    runs: Iterable[tuple[str, Mapping, np.ndarray]] | SubjectData,
    *,
    drop_constant: bool = False,
) -> None:
    """Write a subject folder: ``<story>.npy`` (float32), ``targets.parquet``, ``runs.json``.

    ``runs`` yields ``(story, run, array)`` with ``run`` an entry of ``runs.json``
    (``RUN_KEYS``) and ``array`` (kept volumes, targets); it may be a generator that computes
    one story at a time, or a :class:`SubjectData` (then ``targets`` is ignored). ``targets``
    is the table, or a function returning it once every run has been computed (for columns the
    runs fill in). With ``drop_constant``, targets constant over the kept volumes of any story
    (no signal to predict there) are left out of every story and the table, and their number is
    logged. All files appear together at the end: on any error, raised by the checks or by
    ``runs`` itself, nothing is written and files of earlier calls stay as they were.
    """
    if isinstance(runs, SubjectData):
        targets = runs.targets
        runs = [(story, runs.runs[story], runs.data[story]) for story in runs.runs]
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    try:
        # Every file is staged under a temporary name and renamed only once all runs succeeded.
        with contextlib.ExitStack() as staged:
            info, paths, constant = _stage_runs(out_dir, runs, staged)
            table = targets() if callable(targets) else targets
            _check_targets(table, f"targets of {out_dir}")
            if drop_constant and constant is not None and constant.any():
                table = _drop_targets(table, constant, paths, out_dir)
            for story, path in paths.items():
                where = f"story {story}, {out_dir}"
                _check_bold(np.load(path, mmap_mode="r"), info[story], len(table), where)
            tmp = staged.enter_context(atomic_path(out_dir / "targets.parquet", suffix=".parquet"))
            table.to_parquet(tmp, index=False)
            tmp = staged.enter_context(atomic_path(out_dir / "runs.json", suffix=".json"))
            tmp.write_text(json.dumps(info, indent=2) + "\n")
        write_manifest(out_dir, "fmri")
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only if empty: never removes anything written before
        raise


def _stage_runs(out_dir: Path, runs, staged) -> tuple[dict, dict, np.ndarray | None]:
    """Write each story's array to a staged file: (runs.json entries, staged paths, columns
    constant in some story)."""
    info: dict[str, dict] = {}
    paths: dict[str, Path] = {}
    constant = None
    for story, run, array in runs:
        where = f"story {story}, {out_dir}"
        if story in info:
            raise BrainshapeError(f"{where}: the story is given twice.")
        info[story] = check_run(run, where)
        array = np.ascontiguousarray(array, dtype=np.float32)
        expected = run["n_trs"] - run["trim_start"] - run["trim_end"]
        if array.ndim != 2 or array.shape[0] != expected:
            _check_bold(array, info[story], array.shape[-1] if array.ndim else 0, where)
        flat = array.max(axis=0) == array.min(axis=0)
        constant = flat if constant is None else constant | flat
        tmp = staged.enter_context(atomic_path(out_dir / f"{story}.npy", suffix=".npy"))
        with open(tmp, "wb") as fh:
            np.save(fh, array)
        paths[story] = tmp
    if not info:
        raise BrainshapeError(f"{out_dir}: no story to write.")
    return info, paths, constant


def _drop_targets(
    table: pd.DataFrame, constant: np.ndarray, paths: Mapping[str, Path], out_dir: Path
) -> pd.DataFrame:
    """The targets table and staged arrays without the ``constant`` columns."""
    if constant.size != len(table):
        raise BrainshapeError(
            f"{out_dir}: the arrays have {constant.size} targets but the targets table lists "
            f"{len(table)}; rerun the fmri stage for this subject."
        )
    keep = ~constant
    if not keep.any():
        raise BrainshapeError(
            f"{out_dir}: every target is constant in some story (no signal left); check the "
            "mask and the response files of this subject"
        )
    for path in paths.values():
        array = np.load(path)[:, keep]
        with open(path, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array))
    log.warning(
        "%s: %d of %d targets are constant in some story (no signal to predict) and are left out",
        out_dir,
        int(constant.sum()),
        constant.size,
    )
    kept = table[keep].reset_index(drop=True)
    kept["target"] = np.arange(len(kept), dtype=np.int64)
    return kept
