"""Pin the model registry's hub revisions to the commits that were downloaded.

A registry entry names a branch (``revision: main``) until someone pins it; a branch moves when
the model's authors upload again, and a study that reloads it later would silently compute
different features. ``pin_registry`` replaces every revision that is not a 40-hex commit (the
entry's own, and the ``revision`` of gptq/gguf variants with a ``checkpoint``) by the commit it
resolves to, looked up without the network where possible:

1. the Hugging Face cache the jobs read (``HF_HUB_CACHE``, under ``HF_HOME``): ``hf download``
   records there, in ``models--<org>--<name>/refs/<branch>``, the commit it fetched;
2. a copy downloaded with ``hf download --local-dir <model_root>/<model>``: its
   ``.cache/huggingface/download/*.metadata`` files start with the commit of each file;
3. only with ``hub=True`` (a login node with network access): the hub's current commit of the
   branch, which may be newer than what was downloaded.

The registry file is edited line by line, so its comments and layout stay; the file is
replaced atomically, and each pinned line says which branch it was pinned from.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from brainshape.errors import BrainshapeError
from brainshape.io import save_text
from brainshape.models import is_commit

log = logging.getLogger(__name__)

#: A hub lookup: (repository, branch or tag) -> commit.
Resolver = Callable[[str, str], str]


@dataclass
class Pin:
    """One revision of the registry: where it is (``models.<model>`` or
    ``models.<model>.variants.<variant>``), the repository, the revision written there, the
    commit it resolved to (None if it could not be) and where that commit came from."""

    where: str
    repo: str
    revision: str
    commit: str | None
    source: str

    @property
    def changes(self) -> bool:
        """Whether pinning writes a new revision here."""
        return self.commit is not None and self.commit != self.revision


def cache_commit(repo: str, revision: str, cache_dir: str | os.PathLike) -> str | None:
    """The commit that ``revision`` of model ``repo`` points to in a Hugging Face cache."""
    ref = Path(cache_dir) / ("models--" + repo.replace("/", "--")) / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
        return commit if is_commit(commit) else None
    return None


def local_copy_commit(folder: str | os.PathLike) -> str | None:
    """The commit of a ``hf download --local-dir`` copy, if all its files agree on one."""
    meta = Path(folder) / ".cache" / "huggingface" / "download"
    commits = set()
    for path in sorted(meta.rglob("*.metadata")) if meta.is_dir() else []:
        with path.open() as f:
            commits.add(f.readline().strip())
    if len(commits) > 1:
        log.warning(
            "%s was downloaded from %d different commits; not pinning it from there",
            folder,
            len(commits),
        )
        return None
    commit = commits.pop() if commits else None
    return commit if commit and is_commit(commit) else None


def hub_commit(repo: str, revision: str) -> str:
    """The hub's current commit of ``revision`` (needs network access)."""
    from huggingface_hub import HfApi

    return HfApi().model_info(repo, revision=revision).sha


def find_revisions(registry: dict) -> list[tuple[str, str, str, str | None]]:
    """(where, repo, revision, model name) of every hub revision in a parsed registry."""
    found = []
    for name, entry in (registry.get("models") or {}).items():
        if entry.get("source", {}).get("kind") == "hub" and entry.get("hf_id"):
            found.append((f"models.{name}", entry["hf_id"], entry.get("revision") or "main", name))
        for vname, variant in (entry.get("variants") or {}).items():
            checkpoint = variant.get("checkpoint")
            if checkpoint and not Path(checkpoint).is_absolute():
                where = f"models.{name}.variants.{vname}"
                found.append((where, checkpoint, str(variant.get("revision") or "main"), None))
    return found


def resolve(
    registry_path: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    model_root: str | os.PathLike | None = None,
    hub: bool = False,
    hub_lookup: Resolver = hub_commit,
) -> list[Pin]:
    """Every revision of the registry with the commit it resolves to (see the module doc)."""
    if cache_dir is None:
        from huggingface_hub import constants

        cache_dir = constants.HF_HUB_CACHE
    text = Path(registry_path).read_text()
    registry = yaml.safe_load(text) or {}
    pins = []
    for where, repo, revision, model in find_revisions(registry):
        if is_commit(revision):
            pins.append(Pin(where, repo, revision, revision, "already a commit"))
            continue
        commit, source = cache_commit(repo, revision, cache_dir), f"HF cache {cache_dir}"
        if commit is None and model_root is not None and model is not None:
            commit, source = local_copy_commit(Path(model_root) / model), f"{model_root}/{model}"
        if commit is None and hub:
            try:
                commit, source = hub_lookup(repo, revision), "the hub"
            except Exception as error:  # network, gated repository, unknown revision
                log.warning("%s: %s@%s not resolved on the hub: %s", where, repo, revision, error)
                commit = None
        if commit is None:
            source = "not downloaded"
        pins.append(Pin(where, repo, revision, commit, source))
    return pins


def pin_registry(
    registry_path: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    model_root: str | os.PathLike | None = None,
    hub: bool = False,
    dry_run: bool = False,
    hub_lookup: Resolver = hub_commit,
) -> list[Pin]:
    """Resolve every revision (``resolve``) and write the commits into the registry file.

    Revisions that could not be resolved stay as they are (the returned pins say which). The
    file is rewritten only if something changed and ``dry_run`` is false.
    """
    path = Path(registry_path)
    if not path.is_file():
        raise BrainshapeError(f"registry {path} does not exist; give the path of models.yaml")
    pins = resolve(path, cache_dir=cache_dir, model_root=model_root, hub=hub, hub_lookup=hub_lookup)
    todo = {p.where: p for p in pins if p.changes}
    if not todo or dry_run:
        return pins
    lines = path.read_text().splitlines(keepends=True)
    done = _rewrite(lines, todo)
    missed = sorted(set(todo) - done)
    if missed:
        raise BrainshapeError(
            f"{path}: could not find the revision line of {', '.join(missed)} (the registry is "
            "written in a layout this tool does not edit); set those revisions by hand"
        )
    save_text(path, "".join(lines))
    return pins


_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")


def _rewrite(lines: list[str], todo: dict[str, Pin]) -> set[str]:
    """Replace, in place, the revision of each ``todo`` entry; return the ones replaced.

    The registry's block layout is followed by indentation: ``models:`` at column 0, a model
    name one level in, its keys one more, ``variants:`` and then one variant per line (a flow
    mapping ``{kind: gptq, checkpoint: ..., revision: main}``).
    """
    done: set[str] = set()
    stack: list[tuple[int, str]] = []
    hf_id_lines: dict[str, tuple[int, str]] = {}
    for i, line in enumerate(lines):
        match = _KEY.match(line.rstrip("\n"))
        if not match or line.lstrip().startswith("#"):
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key, rest = match["key"], match["rest"]
        path = ".".join([k for _, k in stack] + [key])
        parent = ".".join(k for _, k in stack)
        if key == "hf_id":
            hf_id_lines[parent] = (i, match["indent"])
        if key == "revision" and parent in todo:
            pin = todo[parent]
            lines[i] = f"{match['indent']}revision: {pin.commit}  # {pin.revision}, pinned\n"
            done.add(parent)
        elif path in todo and (flow := re.match(r"^(\s*\{[^}#]*\})(.*)$", rest)):
            pin = todo[path]
            body, tail = flow[1], flow[2]  # the mapping, then any comment after it
            body, n = re.subn(
                r"(\brevision:\s*)([^,}\s]+)", lambda m, c=pin.commit: m[1] + c, body, count=1
            )
            if not n:  # no revision yet: the checkpoint was read at its default branch
                body = body[:-1].rstrip() + f", revision: {pin.commit}}}"
            lines[i] = f"{match['indent']}{key}:{body}{tail}\n"
            done.add(path)
        if not rest.strip() or rest.strip().startswith("#"):
            stack.append((indent, key))
    # Entries without a revision line get one after their hf_id, bottom up so indices hold.
    for where in sorted(set(todo) - done, key=lambda w: -hf_id_lines.get(w, (-1, ""))[0]):
        if where in hf_id_lines:
            i, indent = hf_id_lines[where]
            pin = todo[where]
            lines.insert(i + 1, f"{indent}revision: {pin.commit}  # {pin.revision}, pinned\n")
            done.add(where)
    return done


def report(pins: list[Pin]) -> str:
    """A table of what was (or would be) pinned, and what is left to download."""
    rows = []
    for p in pins:
        state = p.commit if p.commit else "-"
        rows.append(f"{p.where}\t{p.repo}\t{p.revision}\t{state}\t{p.source}")
    left = [p for p in pins if p.commit is None]
    tail = ""
    if left:
        tail = (
            f"\n{len(left)} revision(s) not resolved: download them first (hf download <repo> "
            "--revision <revision>), or run again with --hub on a login node\n"
        )
    return "where\trepository\trevision\tcommit\tfrom\n" + "\n".join(rows) + "\n" + tail
