"""Code keys: the source of the package modules some entry module runs, read off the import statements, so a key
over training code is not voided by an edit of serving code, and a DVC stage's code deps can be checked against it.

A module's imports are every ``import`` statement in its file (module level, inside functions or ``if`` blocks),
relative ones resolved, and string constants naming a module, as a registry's ``"llara.recommenders.sasrec:SASRec"``
does for ``importlib``. Not seen: a module imported under a name computed at run time.
"""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

from llara.fingerprint import file_digest

PACKAGE_DIR = Path(__file__).parent  # the llara package, whose modules code_digest reads
# modules that cannot change a result (errors, atomic writes, the entry point and the package's lazy names): an edit
# there keys nothing anew, and no DVC stage lists them as a dependency (tests/test_dvc_yaml.py)
PLUMBING = frozenset({"llara", "llara.entrypoint", "llara.errors", "llara.atomic"})
_MODULE_STRING = re.compile(r"^[A-Za-z_]\w*(\.\w+)+(:\w+)?$")  # "package.module" or "package.module:Name"


def _module_file(package_dir: Path, name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != package_dir.name:
        return None
    base = package_dir.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_names(path: Path, name: str) -> set[str]:
    """Dotted names the source file of module ``name`` may import (see the module's docstring); ``from a import b``
    gives both ``a`` and ``a.b``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.match(node.value):
            out.add(node.value.partition(":")[0])
    return out


def code_modules(*roots: str, package_dir: Path | None = None) -> dict[str, Path]:
    """The package's modules that ``roots`` (dotted names) run, with their files: the roots, every package module
    they import, transitively, and the packages above each (their ``__init__`` runs on import); the
    :data:`PLUMBING` neither counts nor is walked through. ``package_dir``: where the source is read (default
    :data:`PACKAGE_DIR`, read at the call)."""
    package_dir = Path(package_dir or PACKAGE_DIR)
    found: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        path = None if name in found or name in PLUMBING else _module_file(package_dir, name)
        if path is None:
            continue
        found[name] = path
        parents = [name.rsplit(".", n)[0] for n in range(1, name.count(".") + 1)]
        todo += parents + sorted(imported_names(path, name))
    missing = [r for r in roots if r not in found]
    if missing:
        raise ModuleNotFoundError(f"{missing[0]} is not a module of {package_dir}")
    return dict(sorted(found.items()))


def code_digest(*roots: str, package_dir: Path | None = None) -> str:
    """sha256 over the names and contents of :func:`code_modules` (comments count: any edit of a module run keys
    anew; an edit of a module not run does not)."""
    h = hashlib.sha256()
    for name, path in code_modules(*roots, package_dir=package_dir).items():
        h.update(f"{name}\0{file_digest(path)}\n".encode())
    return h.hexdigest()
