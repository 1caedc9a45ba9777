"""The runs sheet: which subject heard which story, in which file, on which clock.

A runs sheet (``runs.tsv``, schema ``workflow/schemas/runs.schema.yaml``) has one row per
(subject, story, run): the response file and its format, the brain mask and confounds where they
apply, the story's word-timing file, and how the two clocks meet (``offset``: the word time at
the start of the response file's first row; ``tr``; volumes the dataset already removed). It is
to brainshape what a sample sheet is to other workflows: the config says how to process, the
sheet says what exists. Subjects may have heard different stories.

A dataset either names its sheet (``datasets.<name>.runs``) or lists ``subjects`` and
``stories`` of a regular BIDS + fMRIPrep dataset, from which :func:`derive_sheet` writes the
same table. The importers in :mod:`brainshape.importers` write sheets for published datasets.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from brainshape import responses
from brainshape.config import SCHEMAS, load_schema, validate
from brainshape.errors import BrainshapeError

#: The sheet's schema beside the library; the workflow passes its own (``workflow/schemas``).
RUNS_SCHEMA = SCHEMAS / "runs.schema.yaml"

#: Cells read as "no value": an empty cell takes the column's default; ``n/a`` is allowed only
#: where the column may have no value at all (a mask, a confounds file), never for a number the
#: timing needs (``offset``, ``tr`` of an hdf5 response), where it would hide a fault.
MISSING = ("n/a", "NA", "nan")

#: Columns that hold paths (relative to the dataset root unless absolute).
PATH_COLUMNS = ("response", "mask", "confounds", "labels", "words")

_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}


def columns(schema: str | os.PathLike = RUNS_SCHEMA) -> list[str]:
    """The sheet's columns, in the schema's order."""
    return list(load_schema(schema)["properties"])


def _types(schema: str | os.PathLike) -> dict[str, tuple[str, bool]]:
    """Column -> (type, whether it may be null)."""
    props = load_schema(schema)["properties"]
    out = {}
    for name, prop in props.items():
        kinds = prop.get("type", "string")
        kinds = [kinds] if isinstance(kinds, str) else kinds
        out[name] = (next(k for k in kinds if k != "null"), "null" in kinds)
    return out


def _cell(value: str, kind: tuple[str, bool], where: str, column: str) -> Any:
    """A sheet cell converted to its column's type; None when empty (or n/a where allowed)."""
    text = str(value).strip()
    kind, nullable = kind
    if text == "":
        return None
    if text in MISSING:
        if nullable:
            return None
        raise BrainshapeError(
            f"{where}: column {column} is {text!r}; it needs a value (leave the cell empty "
            "for the documented default, or exclude the row with exclude: true and a reason)"
        )
    try:
        if kind == "integer":
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind == "number":
            number = float(text)
            if not math.isfinite(number):
                raise ValueError
            return number
    except ValueError:
        raise BrainshapeError(
            f"{where}: column {column} is {text!r}, not a {kind}; write a "
            f"{'whole ' if kind == 'integer' else ''}number (or leave it empty for the default)"
        ) from None
    if kind == "boolean":
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise BrainshapeError(f"{where}: column {column} is {text!r}; write true or false")
    return text


def rows_from_table(
    table: pd.DataFrame, source: str, schema: str | os.PathLike = RUNS_SCHEMA
) -> pd.DataFrame:
    """Validate a sheet read as strings (one row per run) and fill its defaults.

    Errors name ``source`` and the row (counted from 1, as a spreadsheet shows data rows) and
    say what to change. Returns a table with every schema column, typed.
    """
    types = _types(schema)
    unknown = [c for c in table.columns if c not in types]
    if unknown:
        raise BrainshapeError(
            f"{source}: unknown column(s) {unknown}; a runs sheet has the columns "
            f"{', '.join(types)} (docs/datasets.md)"
        )
    required = load_schema(schema)["required"]
    absent = [c for c in required if c not in table.columns]
    if absent:
        raise BrainshapeError(
            f"{source} lacks the column(s) {', '.join(absent)}; a runs sheet needs the columns "
            f"{', '.join(required)} (docs/datasets.md)"
        )
    rows = []
    for i, record in enumerate(table.to_dict("records"), start=1):
        where = f"{source}, row {i}"
        excluded = _cell(record.get("exclude", ""), types["exclude"], where, "exclude")
        row = {}
        for column, value in record.items():
            if excluded and str(value).strip() in MISSING:
                continue  # an excluded row may lack what it would need to run
            cell = _cell(value, types[column], where, column)
            if cell is not None:
                row[column] = cell
        validate(row, schema, where)
        rows.append(row)
    if not rows:
        raise BrainshapeError(f"{source} has no rows; list one row per subject, story and run")
    out = pd.DataFrame(rows, columns=list(types))
    # Empty cells of columns that mix values and blanks are None, never NaN.
    out = out.astype(object).where(out.notna(), None)
    for name, (kind, _) in types.items():
        if kind in ("integer", "number", "boolean") and out[name].notna().all():
            out[name] = out[name].astype(
                {"integer": "int64", "number": "float64", "boolean": bool}[kind]
            )
    _check_rows(out, source)
    return out


def _check_rows(runs: pd.DataFrame, source: str) -> None:
    keys = ["subject", "story", "run"]
    dup = runs[runs.duplicated(keys, keep=False)]
    if len(dup):
        first = dup.iloc[0]
        lines = [str(i + 1) for i in dup.index]
        raise BrainshapeError(
            f"{source}: rows {', '.join(lines)} are the same run (subject {first.subject}, "
            f"story {first.story}, run {first.run}); give repeats their own run number or "
            "remove the duplicate"
        )
    for story, rows in runs.groupby("story", sort=False):
        timing = rows[["words", "words_format", "tier"]].drop_duplicates()
        if len(timing) > 1:
            raise BrainshapeError(
                f"{source}: story {story} has rows with different word timings "
                f"({', '.join(timing['words'].astype(str).unique())}); a story is one "
                "transcript: give a different transcript a different story id"
            )
    for i, row in runs.iterrows():
        if row.exclude:
            continue
        where = f"{source}, row {i + 1} (subject {row.subject}, story {row.story})"
        if row.format == "hdf5" and row.tr is None:
            raise BrainshapeError(f"{where}: an hdf5 response needs tr (seconds between rows)")
        responses.check_tr(row.tr, where)
        if row.format == "fmriprep" and row["mask"] is None:
            raise BrainshapeError(
                f"{where}: an fmriprep response needs its brain mask (column mask); fMRIPrep "
                "writes one beside the BOLD image (..._desc-brain_mask.nii.gz)"
            )


def read_sheet(path: str | os.PathLike, schema: str | os.PathLike = RUNS_SCHEMA) -> pd.DataFrame:
    """Read and validate a runs sheet (TSV with a header row)."""
    path = Path(path)
    if not path.is_file():
        raise BrainshapeError(
            f"runs sheet {path} does not exist; write it with `brainshape sheet` "
            "(docs/datasets.md) or fix datasets.<name>.runs in the config"
        )
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise BrainshapeError(f"cannot read runs sheet {path} as TSV ({error})") from None
    return rows_from_table(table, str(path), schema)


def write_sheet(path: str | os.PathLike, runs: pd.DataFrame) -> None:
    """Write ``runs`` as a runs sheet (TSV; empty cells for missing values), atomically."""
    from brainshape.io import atomic_path

    table = runs.reindex(columns=columns())
    with atomic_path(path, suffix=".tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a")


def derive_sheet(
    dataset: Mapping[str, Any], fmri_paths, schema: str | os.PathLike = RUNS_SCHEMA
) -> pd.DataFrame:
    """The runs sheet of a regular dataset: every subject heard every story, fMRIPrep
    derivatives named by ``fmri_paths(sub, story)`` (an :class:`fmri.RunPaths`), words from
    ``dataset.words.path``, one clock (offset 0), TR from the config or the headers."""
    words = dataset["words"]
    rows = []
    for sub in dataset["subjects"]:
        for story in dataset["stories"]:
            run = fmri_paths(sub, story)
            rows.append(
                {
                    "subject": str(sub),
                    "story": str(story),
                    "response": str(run.bold),
                    "format": "fmriprep",
                    "mask": str(run.mask),
                    "confounds": str(run.confounds),
                    "words": words["path"].format(story=story),
                    "words_format": words["format"],
                    "tier": words["tier"],
                    "tr": dataset["tr"],
                }
            )
    table = pd.DataFrame(rows).astype(object)
    table = table.where(table.notna(), "")
    return rows_from_table(table.astype(str), "datasets config", schema)
