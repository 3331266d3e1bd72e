"""The status page in headless Chromium: it loads with no console error and no failed
request, draws its five charts from status.json, and a screenshot is kept as an artifact
(tests/artifacts/status-page.png, git-ignored) (issue 19, part 4)."""

from __future__ import annotations

import pytest
from devtools import Browser
from nginx_support import stop_process
from observability_support import ARTIFACTS, Load, start_forklift

# Pixels of each chart drawn in a series colour (not grid, not text): the lines are there.
_INKED = """(() => {
  const out = {};
  const colours = ["--a", "--b", "--c", "--d"].map(name => {
    const hex = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return [1, 3, 5].map(i => parseInt(hex.substr(i, 2), 16));
  });
  for (const canvas of document.querySelectorAll("canvas")) {
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 3] < 200) continue;
      for (const [r, g, b] of colours)
        if (Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 40) {
          n++;
          break;
        }
    }
    out[canvas.id] = n;
  }
  return out;
})()"""


@pytest.mark.requires("chromium")
def test_status_page_draws_live_charts_without_errors(tmp_path):
    server = start_forklift(tmp_path)
    load = Load(server.port("http"), pause=0.005)
    browser = None
    try:
        browser = Browser()
        for domain in ("Runtime", "Log", "Page", "Network"):
            browser.call(f"{domain}.enable")
        browser.call("Page.navigate", url=f"http://127.0.0.1:{server.stats_port}/")
        # five polls, five charts each: the lines have several points
        assert browser.wait_for("window.forkliftDraws >= 25", timeout=20)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.screenshot(str(ARTIFACTS / "status-page.png"))
        inked = browser.evaluate(_INKED)
        assert set(inked) == {
            "chart-rps",
            "chart-latency",
            "chart-errors",
            "chart-workers",
            "chart-rss",
        }
        assert all(n > 10 for n in inked.values()), str(inked)
        assert float(browser.evaluate("document.getElementById('now-rps').textContent")) > 1
        assert browser.evaluate("document.querySelectorAll('#worker-rows tr').length") == 2
        assert browser.evaluate("document.getElementById('error').textContent") == ""
        failed = [e for e in browser.events if e["method"] == "Network.loadingFailed"]
        assert failed == []
        assert browser.problems() == []
        # nothing was fetched from anywhere but the stats port
        urls = {
            e["params"]["request"]["url"]
            for e in browser.events
            if e["method"] == "Network.requestWillBeSent"
        }
        assert all(u.startswith(f"http://127.0.0.1:{server.stats_port}/") for u in urls), urls
    finally:
        load.stop()
        if browser is not None:
            browser.close()
        stop_process(server.proc)
