"""The demo's tables against a reference run: a change to the code changes no number unless it
means to.

The reference (``tests/data/demo_reference/``) holds the tables of the demo config run end to
end. A change that is meant to change results (a new column, a corrected method) updates it
deliberately, in the same commit:

    BRAINSHAPE_UPDATE_REFERENCE=1 .venv/bin/pytest tests/test_reference.py

and says in its message which tables changed and why.
"""

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

pytestmark = pytest.mark.workflow

REFERENCE = REPO / "tests" / "data" / "demo_reference"

#: The tables compared, relative to results/demo/.
TABLES = (
    "words.parquet",
    "ceiling.parquet",
    "baselines/word_rate/g1.parquet",
    "baselines/word_length_position/g1.parquet",
    "brainscores.parquet",
    "topology.parquet",
    "regressions.parquet",
    "contrasts.parquet",
)

#: Floating-point tolerance: the same code on another machine of the same kind may order a sum
#: differently; anything a method change does is far larger.
RTOL, ATOL = 1e-6, 1e-9


def _compare(name: str, got: pd.DataFrame, want: pd.DataFrame) -> list[str]:
    if list(got.columns) != list(want.columns):
        return [f"{name}: columns {list(got.columns)} != reference {list(want.columns)}"]
    if len(got) != len(want):
        return [f"{name}: {len(got)} rows != reference {len(want)}"]
    problems = []
    for column in got.columns:
        a, b = got[column].to_numpy(), want[column].to_numpy()
        if np.issubdtype(a.dtype, np.floating) and np.issubdtype(b.dtype, np.floating):
            close = np.isclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True)
            if not close.all():
                i = int(np.flatnonzero(~close)[0])
                problems.append(
                    f"{name}: column {column}: {int((~close).sum())} values differ "
                    f"(row {i}: {a[i]!r} != reference {b[i]!r})"
                )
        elif not (a == b).all():
            i = int(np.flatnonzero(a != b)[0])
            problems.append(f"{name}: column {column}: row {i}: {a[i]!r} != reference {b[i]!r}")
    return problems


def test_demo_tables_equal_the_reference(demo_run):
    results = demo_run / "results" / "demo"
    if os.environ.get("BRAINSHAPE_UPDATE_REFERENCE"):
        for table in TABLES:
            target = REFERENCE / table
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(results / table, target)
    problems = []
    for table in TABLES:
        problems += _compare(
            table, pd.read_parquet(results / table), pd.read_parquet(REFERENCE / table)
        )
    assert not problems, "\n".join(problems)


def test_the_comparison_sees_a_changed_value():
    want = pd.read_parquet(REFERENCE / "brainscores.parquet")
    got = want.copy()
    assert _compare("brainscores", got, want) == []
    got.loc[7, "score"] += 1e-4
    (problem,) = _compare("brainscores", got, want)
    assert problem.startswith("brainscores: column score: 1 values differ (row 7: ")
    assert _compare("brainscores", got.drop(columns="q_value"), want)[0].startswith(
        "brainscores: columns"
    )
