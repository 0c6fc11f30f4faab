"""A griffe extension that makes headlesslb's docstrings render on the documentation site.

The docstrings are written for Python's tools (``help()``, IDEs, Sphinx): cross-references are
Sphinx roles (``:class:`~headlesslb.errors.NotReady```) and code examples follow ``::``. The
site renders docstrings as Markdown, where those show raw. Rewriting ~400 references in the
source would churn every module; translating them when the site is built keeps one style in
the source and renders it correctly. mkdocs.yml loads this file (``extensions:`` of the python
handler); it changes only what the site shows, never the package.

What it does, once the package is loaded (``on_package``):

- A role becomes a Markdown cross-reference, ``[`NotReady`][headlesslb.errors.NotReady]``,
  resolved as Sphinx resolves it (absolute; from the docstring's class, then its module and
  what the module imports; ``~`` shows the last name; methods and functions get ``()``). A target
  the reference renders is a required reference, so ``mkdocs build --strict`` fails if it does
  not resolve; any other target (a module of the pure core, say) stays code without a link, as
  the reference does not document it. A target that does not exist fails the build here
  (tests/unit/test_prose.py finds it first, with the file).
- ``text::`` followed by an indented block becomes ``text:`` and a fenced Python block, ``::``
  alone on a line is dropped, as Sphinx renders them.
- An attribute's first paragraph is joined into one line, which the summary tables above a
  class's entries show (mkdocs.yml's ``summary``), so a table cell is never cut mid-sentence.
- A base class the reference does not document (``ClientBase``, ``TransportBase``: internal
  plumbing) is dropped from the class's bases, and its public members are shown as the class's
  own (they are: ``endpoints()``, ``build_request()``).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import griffe

DOCS = Path(__file__).resolve().parent.parent / "docs"
ROLE = re.compile(r":(mod|class|meth|func|attr|data|exc|obj):`(~?)(?:([^`<]+?) <)?([\w.]+)>?`")
"""A Sphinx role: ``:class:`x.Y```, ``:class:`~x.Y``` (shown as ``Y``) or
``:class:`title <x.Y>```."""
DIRECTIVE = re.compile(r"^:::\s+(\S+)", re.MULTILINE)
PACKAGE = "headlesslb"


class HeadlesslbDocstrings(griffe.Extension):
    """Sphinx roles and ``::`` blocks to Markdown; internal bases hidden (see the module)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite every docstring of the package once it is loaded."""
        if pkg.name != PACKAGE:
            return
        objects = _walk(pkg)
        rendered = _rendered(pkg)
        for obj in objects:
            if obj.is_class:
                _hide_internal_bases(obj, rendered)  # type: ignore[arg-type]
        rendered = _rendered(pkg)  # with the members the hidden bases gave their subclasses
        for obj in objects:
            if obj.docstring is not None:
                obj.docstring.value = _markdown(obj.docstring.value, obj, rendered)
                if obj.is_attribute:
                    obj.docstring.value = _one_line_summary(obj.docstring.value)


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    """Every object defined in the package (aliases point at objects listed elsewhere)."""
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias:
            found.extend(_walk(member))  # type: ignore[arg-type]
    return found


def _lookup(pkg: griffe.Module, path: str) -> griffe.Object | griffe.Alias | None:
    if path == pkg.path:
        return pkg
    if not path.startswith(pkg.path + "."):
        return None
    try:
        found: griffe.Object | griffe.Alias = pkg.get_member(path[len(pkg.path) + 1 :])
        return found
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _final(obj: griffe.Object | griffe.Alias) -> griffe.Object:
    return obj.final_target if isinstance(obj, griffe.Alias) else obj


def _path(obj: griffe.Object | griffe.Alias) -> str:
    """Where an object is defined; for an alias to another package (``httpx``), its target."""
    if not isinstance(obj, griffe.Alias):
        return obj.path
    try:
        return obj.final_target.path
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return obj.target_path


def _rendered(pkg: griffe.Module) -> set[str]:
    """Canonical paths of what the reference pages render: each ``::: name`` and its public
    members (mkdocs.yml filters out ``_`` names)."""
    paths: set[str] = set()

    def add(obj: griffe.Object, depth: int) -> None:
        # Without show_if_no_docstring, an object with no docstring gets no heading.
        if obj.docstring is None and depth > 0:
            return
        paths.add(obj.path)
        for name, member in obj.members.items():
            if name.startswith("_"):
                continue
            # A module documents what it defines; a class shows its inherited members too.
            if obj.is_module and member.is_alias:
                continue
            if depth < 3:
                add(_final(member), depth + 1)

    for page in DOCS.rglob("*.md"):
        for name in DIRECTIVE.findall(page.read_text()):
            found = _lookup(pkg, name)
            if found is not None:
                add(_final(found), 0)
    return paths


def _hide_internal_bases(cls: griffe.Class, rendered: set[str]) -> None:
    kept: list[str | griffe.Expr] = []
    for base in cls.bases:
        path = base.canonical_path if isinstance(base, griffe.Expr) else str(base)
        internal = path.startswith(PACKAGE + ".") and path not in rendered
        target = _lookup(cls.package, path) if internal else None
        if target is None:
            kept.append(base)
            continue
        base_cls = _final(target)
        for name, member in base_cls.all_members.items():
            if not name.startswith("_") and name not in cls.members:
                cls.set_member(name, griffe.Alias(name, _final(member), parent=cls))
    cls.bases = kept


def _scopes(obj: griffe.Object) -> list[griffe.Object]:
    scopes: list[griffe.Object] = []
    here: griffe.Object | None = obj
    while here is not None:
        scopes.append(here)
        here = here.parent
    return scopes


def _resolve(target: str, obj: griffe.Object) -> str:
    """The full path a role's target names, read as Sphinx reads it from ``obj``'s docstring."""
    pkg = obj.package
    if target.startswith(PACKAGE):
        return target
    if target.startswith("."):
        module = obj.module
        name = target.lstrip(".")
        for here in _scopes(module):
            if _lookup(pkg, f"{here.path}.{name}") is not None:
                return f"{here.path}.{name}"
        raise ValueError(f"{obj.path}: cannot resolve {target!r}")
    head, _, rest = target.partition(".")
    for scope in _scopes(obj):
        member = scope.members.get(head) if not scope.is_function else None
        if member is None and scope.is_class:
            member = scope.all_members.get(head)
        if member is not None:
            path = _path(member)
            return f"{path}.{rest}" if rest else path
    raise ValueError(f"{obj.path}: cannot resolve {target!r}")


def _reference(match: re.Match[str], obj: griffe.Object, rendered: set[str]) -> str:
    role, short, given, target = match.groups()
    if given is not None:
        title = given
    else:
        title = target.rsplit(".", 1)[-1] if short else target.lstrip(".")
        if role in ("meth", "func"):
            title += "()"
    path = _resolve(target, obj)
    found = _lookup(obj.package, path)
    if found is None and path.startswith(PACKAGE + "."):
        raise ValueError(f"{obj.path}: {match.group(0)} names nothing ({path})")
    canonical = _path(found) if found is not None else path
    if canonical in rendered:
        return f"[`{title}`][{canonical}]"
    return f"`{title}`"


def _literal_blocks(text: str) -> str:
    """reST's ``::`` paragraph ending to a colon and a fenced block of the indented lines."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.rstrip()
        if not stripped.endswith("::") or stripped.endswith(":::"):
            out.append(line)
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        head = stripped[:-2].rstrip()
        if head.strip():
            out.append(head + ":")
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        block: list[str] = []
        while j < len(lines) and (
            not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent
        ):
            block.append(lines[j])
            j += 1
        while block and not block[-1].strip():
            block.pop()
            j -= 1
        pad = " " * indent
        out.extend(["", pad + "```python"])
        out.extend(
            pad + b if b.strip() else "" for b in textwrap.dedent("\n".join(block)).split("\n")
        )
        out.extend([pad + "```"])
        i = j
    return "\n".join(out)


def _one_line_summary(text: str) -> str:
    """The first paragraph on one line: the summary tables show an attribute's first line, and
    Markdown renders a paragraph's line breaks as spaces anyway."""
    first, sep, rest = text.partition("\n\n")
    if "```" in first or first.lstrip().startswith(("-", "|")):
        return text
    return " ".join(line.strip() for line in first.split("\n")) + sep + rest


def _markdown(text: str, obj: griffe.Object, rendered: set[str]) -> str:
    text = _literal_blocks(text)
    return ROLE.sub(lambda m: _reference(m, obj, rendered), text)
