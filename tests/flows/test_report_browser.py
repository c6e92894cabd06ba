"""The report in a real browser: a workspace made by the real pipeline (GraphNet label propagation,
evaluated, logged to MLflow), its report opened in headless Chromium: every image loads, the
results table is there, and a screenshot is taken.

Chromium is Debian's `chromium` package (.ci/run installs it). Without it the test is skipped,
unless WSSS_REQUIRE_BROWSER is set (CI sets it): then a missing browser fails the test.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from flows.common import Execution, flow_result
from flows.graphnet import graphnet_flow
from flows.ingest import ingest_flow
from wsss_core.report import write_report
from wsss_core.requests import GraphNetRequest
from wsss_core.store import Workspace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = bool(os.environ.get("WSSS_REQUIRE_BROWSER"))

# Run after the page loaded: what a person would see broken, written into the DOM for --dump-dom.
CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify({
    images: images.length,
    broken: images.filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => i.alt),
    results_rows: document.querySelectorAll("table.results tbody tr").length,
  });
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        if REQUIRED:
            pytest.fail("WSSS_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium (apt-get install chromium; CI sets WSSS_REQUIRE_BROWSER so it never skips)")
    return CHROMIUM


def headless(browser: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)


def check_in_browser(browser: str, page: Path, tmp_path: Path) -> dict:
    """Load a copy of the page with CHECK_SCRIPT added and return what the script found."""
    probe = tmp_path / f"{page.stem}-probe.html"
    probe.write_text(page.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    dom = headless(browser, "--virtual-time-budget=20000", "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', dom, re.S)
    assert found, f"the check script did not run; the browser printed: {dom[-500:]}"
    return json.loads(html.unescape(found.group(1)))


def test_the_check_sees_a_broken_image(chromium, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><img alt="bad" src="data:image/png;base64,AAAA"></body></html>')
    assert check_in_browser(chromium, page, tmp_path) == {"images": 1, "broken": ["bad"], "results_rows": 0}


def test_the_report_of_a_real_run_renders_in_chromium(chromium, synthetic_root, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path / "ws"
    execution = Execution(batch_size=4, progress=False)
    ingest_flow(root=str(synthetic_root), workspace=str(workspace), split=["train", "val"], execution=execution)
    flow_result(graphnet_flow, workspace=str(workspace), request=GraphNetRequest(propagation="label-propagation", evaluate=True, log_to_mlflow=True), execution=execution)
    page = write_report(workspace)
    ws = Workspace(workspace)
    timed = [s for s in ws.stages() if (ws.stage_meta(s) or {}).get("wall_s", -1) >= 0]
    assert {"ingest", "superpixels"} <= set(timed) and "pseudo/labelprop-scribbles" in timed  # the runner records wall times

    found = check_in_browser(chromium, page, tmp_path)
    assert found["broken"] == [] and found["images"] > 10  # confusion matrix and the overlay panels
    assert found["results_rows"] >= 2  # the label-propagation masks and the nearest-scribble baseline
    text = page.read_text()
    assert "MLflow runs" in text and "<code>" in text  # the runs it logged, by id

    shot = tmp_path / "report.png"
    headless(chromium, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri())
    with Image.open(shot) as picture:
        assert picture.size == (1280, 2400)
        colours = picture.convert("RGB").resize((64, 120)).getcolors(64 * 120)
        assert colours is None or len(colours) > 20  # a rendered page, not a blank one
