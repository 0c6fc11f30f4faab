"""The prose names what exists: every cross-reference in a docstring, and every module path the
docs give, resolves to a module, class, function or attribute of the package as it is now.

A false docstring is a bug; a reference to a module that moved is the commonest one, and this
finds it mechanically. Metric and attribute names that merely look dotted are not references.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import re
from pathlib import Path

import pytest

import headlesslb

PACKAGE = Path(headlesslb.__file__).parent
ROOT = PACKAGE.parent
ROLE = re.compile(r":(?:mod|class|meth|func|attr|data|exc|obj):`(?:[^`<]+ <)?~?([\w.]+)>?`")
DOC_PATH = re.compile(r"`((?:headlesslb/)?(?:core|io|aio|sync|telemetry|testing)/[\w/]+\.py)`")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolves(target: str, here: str) -> bool:
    """Whether ``target`` names something that exists, read as Sphinx reads it: absolute; with a
    leading dot, under ``here``'s module or any package above it; a bare name, in ``here`` or
    on one of its classes (``:meth:`aclose``` inside a class)."""
    if target.startswith("headlesslb"):
        return _exists(target)
    parents = here.split(".")
    if target.startswith("."):
        name = target.lstrip(".")
        return any(_exists(".".join([*parents[:cut], name])) for cut in range(len(parents), 0, -1))
    if _exists(f"{here}.{target}"):
        return True
    module = importlib.import_module(here)
    classes = [v for v in vars(module).values() if isinstance(v, type)]
    head = target.split(".")[0]
    return any(_has(cls, head) for cls in classes)


def _has(obj: object, name: str) -> bool:
    if hasattr(obj, name) or name in getattr(obj, "__annotations__", {}):
        return True
    # An instance attribute a class sets on itself (``self.latency = ...`` in __init__).
    if isinstance(obj, type):
        with contextlib.suppress(OSError, TypeError):
            return re.search(rf"\bself\.{name}\b[^=\n]*=", inspect.getsource(obj)) is not None
    return False


def _exists(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not _has(obj, name):
                return False
            obj = getattr(obj, name, None)
        return True
    return False


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_docstring_references_resolve(path: Path) -> None:
    here = _module_name(path)
    text = path.read_text()
    stale = [t for t in ROLE.findall(text) if not _resolves(t, here)]
    assert not stale, f"{path.relative_to(ROOT)} names what does not exist: {stale}"


@pytest.mark.parametrize("doc", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_module_paths_in_the_docs_exist(doc: Path) -> None:
    if not (ROOT / "docs").exists():
        pytest.skip("no docs/ beside the package (an installed wheel)")
    missing = []
    for mentioned in DOC_PATH.findall(doc.read_text()):
        relative = mentioned.removeprefix("headlesslb/")
        if not (PACKAGE / relative).exists():
            missing.append(mentioned)
    assert not missing, f"docs/{doc.name} names files that do not exist: {missing}"
