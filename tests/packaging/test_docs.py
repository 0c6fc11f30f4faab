"""The documentation site as a reader sees it: built strictly, and nothing raw on a page.

``mkdocs build --strict`` fails on a cross-reference that does not resolve; these tests read the
built HTML for what the build accepts but a reader should never see: a Sphinx role
(``:class:`...```) the docstring translation missed, an include directive (``--8<--``), a
reST ``::`` ending, an internal base class. The Markdown pages are checked too, as the
repository browser shows them: code, not include directives, and the same code the tests run.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("snippets", ROOT / "tools" / "snippets.py")
assert _spec is not None and _spec.loader is not None
snippets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(snippets)

RAW_ROLE = re.compile(r":(?:mod|class|meth|func|attr|data|exc|obj|py:\w+):(?:`|<code>)")
INCLUDE = re.compile(r"--8(?:<|&lt;)--")
REST_BLOCK = re.compile(r"\w::\s*</p>")
# GitHub needs a table cell's pipe escaped even in code; the site then shows the backslash.
ESCAPED_PIPE = re.compile(r"<code>[^<]*\\\|")
INTERNAL = ("ClientBase", "TransportBase")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or not (ROOT / "mkdocs.yml").exists(),
    reason="needs the docs tools (the test group) and a checkout with mkdocs.yml",
)


def raw_markup(page: str) -> list[str]:
    """What shows raw in a built page's text: roles, include directives, reST ``::`` endings,
    escaped pipes in code."""
    found = [m.group(0) for m in RAW_ROLE.finditer(page)]
    found += [m.group(0) for m in ESCAPED_PIPE.finditer(page)]
    found += [html.unescape(m.group(0)) for m in INCLUDE.finditer(page)]
    found += [m.group(0) for m in REST_BLOCK.finditer(page)]
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
        cwd=ROOT,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def test_the_checker_finds_what_shows_raw() -> None:
    assert raw_markup("see :class:<code>~headlesslb.errors.NotReady</code>.") == [":class:<code>"]
    assert raw_markup("<p>--8&lt;-- &quot;examples/quickstart.py&quot;</p>") == ["--8<--"]
    assert raw_markup("<p>Use it so::</p>") == ["o::</p>"]
    assert raw_markup("<td><code>-o table\\|json</code></td>") == ["<code>-o table\\|"]
    assert raw_markup('<p>Use it so:</p><a href="#x">NotReady</a>') == []


def test_no_page_shows_markup_raw(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 20
    raw = {str(p.relative_to(site)): found for p in pages if (found := raw_markup(p.read_text()))}
    assert raw == {}


def test_the_reference_links_and_shows_public_bases_only(site: Path) -> None:
    client = (site / "reference" / "client" / "index.html").read_text()
    sync = (site / "reference" / "sync" / "index.html").read_text()
    # A role in a docstring became a link to the object's entry on another page.
    assert 'href="../errors/#headlesslb.errors.NotReady"' in client
    for page in (client, sync):
        bases = re.findall(r'class="doc doc-class-bases">(.*?)</p>', page, re.S)
        assert bases and not [b for b in bases if any(name in b for name in INTERNAL)]
        # The internal base's public members are shown as the client's own.
        assert re.search(r'id="headlesslb(?:\.sync)?\.HeadlessClient\.endpoints"', page)
    # Long signatures are wrapped, one parameter a line.
    assert "doc-signature" in client
    signatures = re.findall(r'<div class="doc-signature highlight"><pre>(.*?)</pre>', client, re.S)
    longest = max(len(line) for s in signatures for line in re.sub(r"<[^>]+>", "", s).split("\n"))
    assert longest <= 100


def test_the_pages_on_the_repository_browser_show_code() -> None:
    pages = snippets.pages()
    assert not [str(p) for p in pages if INCLUDE.search(p.read_text())]
    assert snippets.stale() == []
