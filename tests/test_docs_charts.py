"""Every Mermaid chart in the README and docs renders with the Mermaid library in headless Chromium: the DVC graph
(a flowchart) and the learning curves (an xychart whose shorter curves must stop where their points end).

Needs /usr/bin/chromium and mermaid's browser bundle (``bash scripts/fetch_mermaid.sh``, which the test script
runs); skipped, saying why, without them."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from _browser import CHROMIUM, chromium

ROOT = Path(__file__).resolve().parents[1]
MERMAID_JS = ROOT / ".cache/mermaid/mermaid.min.js"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "metrics/learning/README.md"]
BLOCK = re.compile(r"```mermaid\n(.*?)```", re.S)

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium absent (apt-get install -y chromium)"),
    pytest.mark.skipif(not MERMAID_JS.is_file(), reason=f"{MERMAID_JS} absent (bash scripts/fetch_mermaid.sh)"),
]


def charts() -> list[tuple[str, str]]:
    return [(f"{doc.relative_to(ROOT)}#{i}", text) for doc in DOCS if doc.is_file()
            for i, text in enumerate(BLOCK.findall(doc.read_text()))]


def render(blocks: list[str], tmp_path: Path) -> list[str]:
    """Each block's rendered element (its SVG or Mermaid's error), in order."""
    page = tmp_path / "charts.html"
    body = "".join(f'<pre class="mermaid" id="chart{i}">{html.escape(b)}</pre>\n' for i, b in enumerate(blocks))
    page.write_text(f"<html><body>{body}<script src=\"{MERMAID_JS.as_uri()}\"></script>"
                    "<script>mermaid.initialize({startOnLoad: true});</script></body></html>")
    dom = chromium("--allow-file-access-from-files", "--virtual-time-budget=20000", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    parts = re.split(r'<pre class="mermaid"[^>]*id="chart\d+"[^>]*>', dom.stdout)[1:]
    assert len(parts) == len(blocks), "a chart element went missing"
    return parts


def test_the_docs_have_charts():
    kinds = {text.split("\n", 1)[0] if not text.startswith("%%") else text.split("\n")[1] for _, text in charts()}
    assert {"flowchart TD", "xychart-beta"} <= kinds, kinds


def test_every_chart_renders_and_each_curve_stops_where_its_points_end(tmp_path: Path):
    found = charts()
    broken = "xychart-beta\n    x-axis [1, 2]\n    line [0.1, oops]\n"  # the check itself: this one must fail
    *rendered, error = render([text for _, text in found] + [broken], tmp_path)
    assert 'aria-roledescription="error"' in error[:error.index("</svg>")]
    for (where, text), svg in zip(found, rendered):
        assert svg.lstrip().startswith("<svg"), f"{where}: not rendered: {svg[:300]}"
        svg = svg[:svg.index("</svg>")]
        assert 'aria-roledescription="error"' not in svg and "Syntax error" not in svg, f"{where}: {svg[-500:]}"
        if "xychart-beta" not in text:
            assert 'aria-roledescription="flowchart' in svg and svg.count('class="node') >= 10, where
            continue
        lines = [line.count(",") + 1 for line in re.findall(r"^\s*line \[(.*)\]$", text, re.M)]
        width = len(re.search(r"^\s*x-axis .*\[(.*)\]$", text, re.M).group(1).split(","))
        paths = re.findall(r'<g class="line-plot-(\d+)"><path d="([^"]*)"', svg)
        assert [int(i) for i, _ in paths] == list(range(len(lines))), f"{where}: {len(paths)} lines drawn"
        for n_values, (i, d) in zip(lines, paths):
            points = re.findall(r"[ML]([^ML]+)", d)
            assert len(points) == width, f"{where}: line {i} has {len(points)} points for {width} x values"
            drawn = [p for p in points if "NaN" not in p]
            # a shorter curve: its missing values are NaN, where SVG stops drawing the path (it ends at its last point)
            assert points[:n_values] == drawn, f"{where}: line {i}: {d}"
