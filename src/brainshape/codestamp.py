"""Code-version stamps: a change to library code reruns exactly the rules whose code changed.

Each rule declares ``code=code_version("<script>.py")`` in its params. The stamp is a hash of the
source of every ``brainshape`` module that the rule's script imports, followed through the
library's own imports. Snakemake reruns a job whose params changed, so editing
``brainshape/fmri.py`` reruns the jobs of rules whose scripts reach that module and leaves the
others alone. Comments and formatting count as changes: the stamp is deliberately simple and
errs on the side of rerunning.

A subpackage (``brainshape/topology/``) counts module by module: ``from brainshape.topology
import persistence`` reaches ``topology/persistence.py`` (and what it imports), not the other
modules of the package; importing the package itself (``from brainshape import topology``), or a
name its ``__init__`` re-exports, reaches the ``__init__`` and so every module it imports. Imports
inside the library are absolute (``from brainshape.topology.clouds import prepare``).
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

from brainshape.errors import BrainshapeError

PACKAGE = "brainshape"
LIBRARY = Path(__file__).resolve().parent


def _module_file(name: str) -> Path | None:
    """The source of library module ``name`` (dotted, without ``brainshape.``), or None."""
    path = LIBRARY.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


#: Fields of a statement that hold statements (imports are statements, found at any depth of
#: the bodies of functions, classes, ``if``, ``try``, ``with``, loops and ``match`` cases).
_BODIES = ("body", "orelse", "finalbody", "handlers", "cases")


def _statements(tree: ast.AST):
    """Every statement of a parsed module, without visiting its expressions (most of a tree's
    nodes, which ``ast.walk`` visits one by one at every Snakemake start)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for field in _BODIES:
            children = getattr(node, field, None)
            if isinstance(children, list):
                todo.extend(children)


def _imported_modules(source: str, filename: str) -> set[str]:
    """Library modules (dotted names without ``brainshape.``) named by the import statements of
    one Python source. ``from package import module`` names the module, not the package."""
    found: set[str] = set()
    for node in _statements(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            names = [[alias.name] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # Each imported name: the submodule it is, else the module it comes from.
            names = [[f"{node.module}.{alias.name}", node.module] for alias in node.names]
            if node.module == PACKAGE:
                found.add("__init__")
        else:
            continue
        for choices in names:
            for name in choices:
                parts = name.split(".")
                if parts[0] != PACKAGE:
                    break
                inner = ".".join(parts[1:]) or "__init__"
                if _module_file(inner) is not None:
                    found.add(inner)
                    break
    return found


def library_modules(script: str | Path) -> list[str]:
    """Library modules (names without ``.py``) a script uses, directly or through others."""
    path = Path(script)
    if not path.is_file():
        raise BrainshapeError(f"code_version: workflow script {path} does not exist")
    todo = _imported_modules(path.read_text(), str(path))
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo |= _module_imports(name) - seen
    return sorted(seen)


@cache
def _module_imports(name: str) -> frozenset[str]:
    """The library modules one library module imports (parsed once per process: every rule's
    stamp walks the same modules)."""
    module = _module_file(name)
    return frozenset(_imported_modules(module.read_text(), str(module)))


@cache
def code_stamp(script: str | Path) -> str:
    """A 16-hex-digit hash of the library sources the script uses (see the module docstring)."""
    digest = hashlib.sha256()
    for name in library_modules(script):
        digest.update(name.encode() + b"\0")
        digest.update(_module_file(name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]
