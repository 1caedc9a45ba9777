"""The layout stays honest: each output path is spelled once, in the rule that writes it; the
library knows no output path; no library function grows past a screen; no module reaches into
another's private names."""

import ast
import re
from collections import Counter

from conftest import REPO

SRC = REPO / "src" / "brainshape"
RULES = REPO / "workflow" / "rules"

#: Lines a library function may span (signature and docstring included).
MAX_FUNCTION_LINES = 80


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _python_paths(path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _docstrings(tree)  # and the pieces of f-strings, which are read whole below
    skip |= {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            out += re.findall(r"(?:^|[\s\"'])((?:results|resources)/[^\s\"']*)", node.value)
        if isinstance(node, ast.JoinedStr):
            head = node.values[0] if node.values else None
            if isinstance(head, ast.Constant) and str(head.value).startswith(
                ("results/", "resources/")
            ):
                out.append(ast.unparse(node))
    return out


def _rule_paths(path) -> list[str]:
    return re.findall(r"[\"']((?:results|resources)/[^\"']*)[\"']", path.read_text())


def test_every_output_path_is_spelled_once_in_the_rules():
    spelled = Counter()
    where = {}
    for path in sorted(RULES.glob("*.smk")):
        for p in _rule_paths(path):
            spelled[p] += 1
            where.setdefault(p, []).append(path.name)
    in_library = {
        f"{path.relative_to(REPO)}: {p}" for path in SRC.rglob("*.py") for p in _python_paths(path)
    }
    assert not in_library, f"output paths spelled in the library: {sorted(in_library)}"
    twice = {p: where[p] for p, n in spelled.items() if n > 1}
    assert not twice, f"paths spelled more than once: {twice}"
    # common.smk refers to the rules' outputs and spells none.
    assert not _rule_paths(RULES / "common.smk")
    # Every rule that writes under results/ or resources/ is found (the check sees the rules).
    assert "results/{dataset}/brainscores.parquet" in spelled
    assert "resources/demo/{dataset}" in spelled


def test_path_check_catches_a_second_spelling(tmp_path):
    """The check above fails where it should: a library string and a second rule spelling."""
    module = tmp_path / "m.py"
    module.write_text(
        '"""Writes results/<dataset>/x.parquet (a docstring may say so)."""\n'
        'PATH = "results/{dataset}/brainscores.parquet"\n'
        'def f(ds):\n    return f"results/{ds}/words.parquet"\n'
    )
    assert _python_paths(module) == [
        "results/{dataset}/brainscores.parquet",
        "f'results/{ds}/words.parquet'",
    ]
    rules = tmp_path / "x.smk"
    rules.write_text('rule a:\n    output:\n        "results/{dataset}/words.parquet",\n')
    assert _rule_paths(rules) == ["results/{dataset}/words.parquet"]


def _long_functions(path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def test_no_library_function_is_longer_than_a_screen():
    long = [f for path in sorted(SRC.rglob("*.py")) for f in _long_functions(path)]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _is_module(name: str) -> bool:
    """A library module or subpackage module of that name (``fmri``, ``clouds``)."""
    return any(p.stem == name for p in SRC.rglob("*.py")) or (SRC / name).is_dir()


def test_no_module_imports_another_modules_private_names():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("brainshape"):
                found += [
                    f"{path.name}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and a.name != "__version__"
                ]
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and _is_module(node.value.id)
                and node.value.id != path.stem
            ):
                found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not found, f"private names used across modules: {found}"
