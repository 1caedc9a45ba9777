"""Code-version stamps: a change to library code reruns exactly the rules whose code changed.

Each rule declares ``code=code_version("<script>.py")`` in its params. The stamp is a hash of the
source of every ``brainshape`` module that the rule's script imports, followed through the
library's own imports. Snakemake reruns a job whose params changed, so editing
``brainshape/fmri.py`` reruns the jobs of rules whose scripts reach that module and leaves the
others alone. A subpackage (``brainshape/ridge/``) counts as one module made of all its files.
Comments and formatting count as changes: the stamp is deliberately simple and errs on the side
of rerunning.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

from brainshape.errors import BrainshapeError

PACKAGE = "brainshape"
LIBRARY = Path(__file__).resolve().parent


def _imported_modules(source: str, filename: str) -> set[str]:
    """``brainshape`` modules named by the import statements of one Python source."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == PACKAGE and len(parts) > 1:
                found.add(parts[1])
            elif name == PACKAGE:
                found.add("__init__")
    return {m for m in found if _sources(m)}


def _sources(name: str) -> list[Path]:
    """The source files of library module ``name``: ``name.py``, or every ``.py`` file of the
    package ``name/`` (a package counts as one module: editing any of its files reruns every
    rule that imports any part of it)."""
    module = LIBRARY / f"{name}.py"
    if module.is_file():
        return [module]
    package = LIBRARY / name
    return sorted(package.rglob("*.py")) if (package / "__init__.py").is_file() else []


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
    found: set[str] = set()
    for source in _sources(name):
        found |= _imported_modules(source.read_text(), str(source))
    return frozenset(found - {name})


@cache
def code_stamp(script: str | Path) -> str:
    """A 16-hex-digit hash of the library sources the script uses (see the module docstring)."""
    digest = hashlib.sha256()
    for name in library_modules(script):
        for source in _sources(name):
            # "fmri" for fmri.py, "stimuli/words" for a package's module
            label = source.relative_to(LIBRARY).with_suffix("").as_posix()
            digest.update(label.encode() + b"\0")
            digest.update(source.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
