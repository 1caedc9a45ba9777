"""Glue for the workflow scripts: logging to the rule's log file and one-line user errors.

Every job ends, on any failure, with one line that names the rule, the file it was reading
and the likely fix; the full traceback goes to the job's log file only. A
:class:`BrainshapeError` already is such a line. Anything else (a library's exception, a
truncated file, a full disk) is translated here: :func:`explain`.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import re
import sys
import traceback
import warnings
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from brainshape.errors import BrainshapeError

log = logging.getLogger("brainshape")


def setup_logging(log_file: str | Path | None) -> None:
    """Send brainshape's log records (and Python warnings) to ``log_file`` and to stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        handlers=handlers,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
    warnings.simplefilter("default")


def _paths_in(values: Iterable[Any]) -> list[Path]:
    """Paths among ``values``: strings and path-likes, lists of them, and the names of open
    file objects (``gzip.GzipFile``, ``io.BufferedReader``)."""
    out = []
    for value in values:
        if isinstance(value, str | os.PathLike):
            out.append(Path(value))
        elif isinstance(value, list | tuple):
            out += _paths_in(value)
        elif isinstance(getattr(value, "name", None), str):
            out.append(Path(value.name))
    return out


def culprit(error: BaseException, inputs: Iterable[Any] = ()) -> Path | None:
    """The file the failing code was reading: the exception's own ``filename``, else the
    innermost frame's local variable that names an existing file, preferring the job's
    ``inputs`` (or files inside input folders)."""
    name = getattr(error, "filename", None)
    if isinstance(name, str | os.PathLike) and str(name):
        return Path(name)
    roots = [p.resolve() for p in _paths_in(inputs)]
    found: list[Path] = []
    for frame, _ in reversed(list(traceback.walk_tb(error.__traceback__))):
        for path in _paths_in(list(frame.f_locals.values())):
            try:
                if path.is_file() and path not in found:
                    found.append(path)
            except (OSError, ValueError):
                continue
    for path in found:
        resolved = path.resolve()
        if any(resolved == r or r in resolved.parents for r in roots):
            return path
    return found[0] if found else None


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` is a write that found no space: ENOSPC or EDQUOT, or the short write
    numpy reports without an errno (``N requested and M written``)."""
    if not isinstance(error, OSError):
        return False
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return (
        "Not enough free space" in text
        or re.search(r"\d+ requested and \d+ written", text) is not None
    )


def explain(error: BaseException, rule: str, inputs: Iterable[Any] = ()) -> str:
    """One line for a failure that is not a :class:`BrainshapeError`: what failed, in which
    rule and file, and the likely fix."""
    text = f"{type(error).__name__}: {error}".strip()
    if disk_full(error):
        # A failed write: the file a frame was reading says nothing about it.
        return (
            f"rule {rule} failed: {text}; the disk (or quota) is full; free space or point the "
            "results elsewhere, then rerun"
        )
    path = culprit(error, inputs)
    where = f" reading {path}" if path is not None else ""
    rerun = f"rerun the rule that wrote it (or fetch it again), then `snakemake` reruns {rule}"
    if isinstance(error, EOFError | gzip.BadGzipFile | zlib.error):
        fix = f"the file is truncated or corrupt; {rerun}"
    elif isinstance(error, ValueError) and "mmap length is greater than file size" in str(error):
        fix = f"the array file is shorter than its header says (truncated); {rerun}"
    elif isinstance(error, MemoryError):
        fix = f"the job ran out of memory; give it more (--set-resources {rule}:mem_mb=...)"
    else:
        fix = (
            "see the traceback in this job's log file; if an input file is at fault, rerun "
            "the rule that wrote it"
        )
    return f"rule {rule} failed{where}: {text}; {fix}"


def run(job: Any, main: Callable[[Any], None]) -> None:
    """Run ``main(job)`` for a Snakemake script; any failure becomes one line and exit 1.

    ``job`` is the ``snakemake`` object Snakemake injects into scripts (its ``log``, ``rule``
    and ``input`` attributes are read), so the library itself never imports Snakemake. The
    full traceback of an unexpected exception goes to the log file (and stderr) before the
    line.
    """
    logs = list(getattr(job, "log", []) or [])
    setup_logging(logs[0] if logs else None)
    rule = getattr(job, "rule", None) or "?"
    try:
        main(job)
    except BrainshapeError as error:
        log.error("%s", error)
        sys.exit(1)
    except Exception as error:  # noqa: BLE001 - every failure ends as one line for the user
        # The traceback to the log file only; stderr (the terminal) gets the one line.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.stream.write("".join(traceback.format_exception(error)))
                handler.flush()
        log.error("%s", explain(error, rule, list(getattr(job, "input", []) or [])))
        sys.exit(1)
