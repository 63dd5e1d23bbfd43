"""`dvc plots show` renders without internet: the project's HTML template carries Vega, Vega-Lite
and Vega-Embed (pipeline/plots.py), checked in a real headless Chromium with every host name
unresolvable, against DVC's own page (which loads them from a CDN) as the control.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import plots

from helpers.project import ROOT, clone_working_tree

BIN = Path(sys.executable).parent


def test_dvc_uses_the_projects_template():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc/config")
    assert config["plots"]["html_template"] == plots.TEMPLATE.name
    assert (ROOT / ".dvc" / config["plots"]["html_template"]) == ROOT / plots.TEMPLATE
    page = (ROOT / plots.TEMPLATE).read_text(encoding="utf-8")
    assert "{plot_divs}" in page
    assert "{scripts}" not in page  # DVC would put its CDN <script> tags there
    assert not re.search(r"<script[^>]+src=", page)  # nothing loaded from elsewhere
    assert "window.vegaEmbed" in page


@pytest.mark.slow
def test_the_committed_template_is_what_the_script_builds(tmp_path):
    """From the pinned vl-convert-python alone (no download): `python -m pipeline.plots`."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.plots", "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "template.html"
    plots.write_template(out)
    assert out.read_text(encoding="utf-8") == (ROOT / plots.TEMPLATE).read_text(encoding="utf-8")


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "Chromium is not installed (Debian: apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI installs it: {message}")
        pytest.skip(message)
    return found


def render(page: Path, work: Path) -> tuple[str, list[str]]:
    """The page's DOM after its scripts ran in headless Chromium with no host name resolving,
    and the URLs the page itself asked for over the network (the browser's own background
    requests, whose initiator is "not an origin", aside)."""
    netlog = work / f"{page.parent.name}-netlog.json"
    result = subprocess.run(
        [
            _chromium(), "--headless", "--no-sandbox", "--disable-gpu",
            f"--user-data-dir={work / 'chromium-profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing leaves this machine
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            "--disable-extensions", "--disable-sync", f"--log-net-log={netlog}",
            "--virtual-time-budget=20000", "--dump-dom", page.as_uri(),
        ],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = json.loads(netlog.read_text())
    types = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    starts = [
        event.get("params", {})
        for event in log["events"]
        if types.get(event["type"]) == "URL_REQUEST_START_JOB"
    ]
    asked = [
        params["url"]
        for params in starts
        if params.get("initiator") != "not an origin"
        and not params.get("url", "file:").startswith(("file:", "data:", "blob:"))
    ]
    return result.stdout, asked


@pytest.mark.slow
def test_the_plots_render_offline_in_chromium(tmp_path):
    _chromium()
    project = clone_working_tree(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"

    def show(out: str, *args: str) -> Path:
        shown = subprocess.run(
            ["dvc", "plots", "show", "-o", str(tmp_path / out), *args],
            cwd=project, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stdout + shown.stderr
        return tmp_path / out / "index.html"

    page = show("offline")
    html = page.read_text(encoding="utf-8")
    charts = len(re.findall(r"vegaEmbed\('#", html))
    assert charts >= 3  # the loss, accuracy and confusion-matrix charts of dvc.yaml
    assert "cdn.jsdelivr.net" not in html

    dom, asked = render(page, tmp_path)
    assert asked == []
    drawn = re.findall(r'<svg[^>]*class="marks".*?</svg>', dom, re.DOTALL)
    assert len(drawn) == charts  # every chart drawn, as SVG marks
    for svg in drawn:
        assert "<path" in svg and "<text" in svg  # marks and axis labels

    # The control: DVC's own page asks the CDN for Vega and, offline, draws nothing.
    from dvc_render.html import PAGE_HTML

    default = tmp_path / "dvc-template.html"
    default.write_text(PAGE_HTML, encoding="utf-8")
    dom, asked = render(show("cdn", "--html-template", str(default)), tmp_path)
    assert any("vega" in url for url in asked), asked
    assert 'class="marks"' not in dom
