"""Glue for the workflow scripts: logging to the rule's log file and one-line user errors."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
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


def run(job: Any, main: Callable[[Any], None]) -> None:
    """Run ``main(job)`` for a Snakemake script; a BrainshapeError becomes one line and exit 1.

    ``job`` is the ``snakemake`` object Snakemake injects into scripts (only its ``log``
    attribute is used here), so the library itself never imports Snakemake.
    """
    logs = list(getattr(job, "log", []) or [])
    setup_logging(logs[0] if logs else None)
    try:
        main(job)
    except BrainshapeError as error:
        log.error("%s", error)
        sys.exit(1)
