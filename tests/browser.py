"""report.html as a browser draws it: Debian's headless Chromium loads the file from disk and a script
added to a copy of the page measures what was laid out (every SVG, every chart element with an id)."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,900"]

MEASURE = """<script>
const groups = {};
for (const g of document.querySelectorAll("svg g[id]")) {
  const box = g.getBoundingClientRect();
  const paths = [...g.querySelectorAll("path")].map(p => (p.getAttribute("d") || "").length);
  const drawn = [...g.querySelectorAll("path, use")].filter(e => {
    const b = e.getBoundingClientRect(); return b.width > 0 || b.height > 0; }).length;
  groups[g.id] = {width: box.width, height: box.height, path_chars: paths.reduce((a, b) => a + b, 0), drawn: drawn,
                  clipped: g.querySelectorAll("[clip-path]").length, left: box.left, top: box.top};
}
const svgs = [...document.querySelectorAll("svg")].map(s => {
  const b = s.getBoundingClientRect(); return {width: b.width, height: b.height}; });
const out = document.createElement("pre");
out.id = "edgetune-measure";
out.textContent = JSON.stringify({svgs, groups, requests: performance.getEntriesByType("resource").length});
document.body.appendChild(out);
</script>"""


def chromium() -> str:
    """The Chromium binary; the test is skipped, saying why, where there is none."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it where apt is "
                    "available): report.html is not rendered in a browser here")
    return path


def render(page: Path, tmp_path: Path) -> dict:
    """Load a copy of `page` in headless Chromium from disk; what it laid out: {"svgs": [{width, height}],
    "groups": {id: {width, height, left, top, path_chars, drawn, clipped}}, "requests": count of fetched resources}."""
    binary = chromium()
    copy = tmp_path / "measured.html"
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    profile = tmp_path / "chromium-profile"
    done = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", copy.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="edgetune-measure">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium drew no page (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))
