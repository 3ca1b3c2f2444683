"""The HTML report in a real browser: headless Chromium (Debian's ``chromium``) opens the page from disk,
and the test checks that the plots are in the rendered DOM, that the page asked for nothing over the
network, and that the screenshot shows a drawn page.

Network: Chromium's net log records every URL request. Requests the page makes carry its origin as
initiator ("null" for a file:// page); Chromium's own background requests (update checks and the like)
carry "not an origin". A control page with an external <img> proves the detector sees a page request.
``--host-resolver-rules`` makes every host name unresolvable, so nothing leaves the machine either way.

Chromium missing: skipped with the reason outside CI; a failure when ``CI`` is set (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from aibench.cli import main
from tests.report_fixtures import write_fixture

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed but CI is set: .ci/run must install it "
                        "(apt-get install -y --no-install-recommends chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it and runs this test")
    return CHROMIUM


def _run(chromium: str, tmp: Path, page: Path, *extra: str) -> tuple[str, list[dict[str, Any]]]:
    """(what Chromium printed on stdout, the page-initiated URL requests from its net log)."""
    profile = tmp / f"profile-{page.stem}-{len(extra)}"
    netlog = tmp / f"netlog-{page.stem}-{len(extra)}.json"
    proc = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", f"--log-net-log={netlog}", *extra,
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads(netlog.read_text())
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    requests = [ev["params"] for ev in log["events"]
                if names.get(ev["type"]) == "URL_REQUEST_START_JOB" and "url" in ev.get("params", {})]
    return proc.stdout, [r for r in requests if r.get("initiator") != "not an origin"]


def test_report_renders_in_chromium(chromium: str, tmp_path: Path) -> None:
    folder = write_fixture(tmp_path / "results")
    page = tmp_path / "out" / "report.html"
    page.parent.mkdir()  # an output's folder must exist (aibench never creates one for an output)
    with pytest.raises(SystemExit) as exc:
        main(["-q", "report", str(tmp_path / "results"), str(folder["comparison"]), "--html", str(page)])
    assert exc.value.code == 0

    dom, page_requests = _run(chromium, tmp_path, page, "--dump-dom")
    assert page_requests == [], page_requests
    assert '<section id="summary">' in dom and '<section id="environment">' in dom
    for kind in ("kernel", "batch", "latency", "sweep", "energy", "comparison"):
        assert f'data-plot="{kind}"><svg' in dom, f"no rendered {kind} plot"
    assert dom.count("<svg") >= 15
    assert "<script" not in dom.lower()  # the hostile names stayed text in the rendered DOM too
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom

    # A screenshot, kept beside the page: the plots are drawn (a blank or unstyled page is mostly white).
    shot = tmp_path / "out" / "report.png"
    _run(chromium, tmp_path, page, f"--screenshot={shot}", "--window-size=1280,2400")
    assert shot.stat().st_size > 20_000
    from PIL import Image

    with Image.open(shot) as im:
        grey = im.convert("L")
        dark = sum(grey.histogram()[:200])  # pixels darker than light grey: text, lines, bars
    assert dark > 0.02 * grey.width * grey.height, "the screenshot is almost blank"


def test_network_detector_sees_a_page_request(chromium: str, tmp_path: Path) -> None:
    """Control: without our CSP, a page with an external image does ask, and the detector sees it."""
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><html><body><img src="http://aibench-control.invalid/x.png"></body></html>')
    _, page_requests = _run(chromium, tmp_path, control, "--dump-dom")
    assert [r["url"] for r in page_requests] == ["http://aibench-control.invalid/x.png"]
