"""In a real browser (Debian's chromium, headless): the page's label timeline, fps/latency charts (uPlot, served
by the run itself) and events list, on a real run of the sample clip with rules; and the events' clip and
snapshot links. Skipped, with the reason, where chromium is absent."""

from __future__ import annotations

import importlib.util
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from stream.decisions.hub import DecisionsView
from stream.decisions.records import Event
from tests.browser import MISSING, open_chromium
from tests.conftest import ROOT
from tests.test_browser import wait

pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

RULES = """
smoothing = {enter = 0.3, exit = 0.2}
rule = [{name = "cat", labels = ["*cat*", "tabby"], min_duration_s = 0.5, clip = true, pre_roll_s = 1, post_roll_s = 1},
        {name = "coffee", labels = ["espresso", "cup"], min_duration_s = 0.5}]
"""
# The clip recorder (stream.outputs.clips) may not be in this tree yet: without it the run has no --clips.
# The run plays the default input, the sample clip.
HAS_CLIPS = importlib.util.find_spec("stream.outputs.clips") is not None


@pytest.fixture
def browser(tmp_path):
    pytest.importorskip("selenium")
    driver = open_chromium(tmp_path / "profile", 1300, 1100)
    yield driver
    driver.quit()


def fetch_status(browser, href: str) -> int:
    """What the page's own fetch of a link answers (its token included)."""
    return browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {cache: 'no-store'}).then(r => r.arrayBuffer().then(() => done(r.status)),"
        " () => done(0));", href)


def region(browser, tile) -> tuple[bytes, bytes]:
    return (tile.find_element("css selector", ".timeline").screenshot_as_png,
            tile.find_element("css selector", ".chart").screenshot_as_png)


@pytest.mark.slow
def test_the_timeline_charts_and_events_of_a_real_run_render_and_update(browser, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    clips = ["--clips", str(tmp_path / "clips")] if HAS_CLIPS else []
    run = subprocess.Popen([sys.executable, str(ROOT / "run_stream.py"), "--model",
                            "efficientnet_lite0", "--backend", "onnxruntime", "--no-display", "--serve", "127.0.0.1:0",
                            "--rules", str(rules), "--events", str(tmp_path / "events.jsonl"), *clips,
                            "--loop", "--pace", "--max-frames", "1800"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        url = next(m.group(1) for line in run.stdout if (m := re.search(r"serving (http://\S+/)", line)))
        browser.get(url)
        tile = wait(lambda: browser.find_elements("css selector", "section.tile[data-stream]"), 60)[0]
        wait(lambda: tile.find_elements("css selector", ".timeline .bar"), 60)
        wait(lambda: tile.find_elements("css selector", ".chart canvas"))
        assert browser.execute_script("return typeof uPlot") == "function"  # served by the run, not a CDN
        wait(lambda: tile.find_elements("css selector", ".events li"), 60)
        first = region(browser, tile)
        time.sleep(3)
        second = region(browser, tile)
        assert first[0] != second[0], "the timeline did not move"
        assert first[1] != second[1], "the chart did not move"

        bars = [b.text for b in tile.find_elements("css selector", ".timeline .bar") if b.text]
        legend = tile.find_element("css selector", ".legend").text
        assert any("cat" in b or "tabby" in b for b in bars) and "uncertain" in legend
        assert tile.find_element("css selector", ".steady").text.startswith("steady: ")
        chart = tile.find_element("css selector", ".chart").text
        assert all(s in chart for s in ("fps", "target fps", "p95 e2e ms", "budget ms"))
        # Read in one script: the list is rebuilt on every update, so elements found one call earlier can be gone.
        events, links = browser.execute_script(
            "const t = arguments[0]; return [Array.from(t.querySelectorAll('.events li'), li => li.innerText),"
            " Array.from(t.querySelectorAll('.events a'), a => a.href)];", tile)
        assert any(re.match(r"(start|end) (cat|coffee): .+ \d+% at [\d.]+ s \(\d\d:\d\d:\d\d UTC\)", e)
                   for e in events), events
        assert "delivered" in browser.find_element("id", "decisions").text
        if HAS_CLIPS:
            assert links and all(fetch_status(browser, href) == 200 for href in links)
    finally:
        run.send_signal(signal.SIGINT)
        output = run.communicate(timeout=60)[0]
    assert run.returncode in (0, 130), output[-2000:]


def test_the_events_links_fetch_their_files_and_names_stay_text(browser, server, tmp_path):
    """The page with a hand-made view: links under /clips/ answer 200 with the token, and a label that looks like
    HTML is shown as its characters."""
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "door-cat.jpg").write_bytes(b"\xff\xd8\xff")
    (folder / "door-cat.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    srv = server(["door"], token="page-token")
    srv.clips_dir = folder
    stop = threading.Event()

    def camera() -> None:  # the page's load waits for the preview's first picture, sent to viewers only
        while not stop.wait(0.1):
            srv.frames["door"].write(None, np.zeros((90, 160, 3), np.uint8))

    threading.Thread(target=camera, daemon=True).start()
    label = "<img src=x onerror=window.pwned=1>"
    srv.update_decisions(DecisionsView(events=(
        Event("start", "cat", "door", label, 0.9, 1.0, 30, "2026-12-03T16:00:01.000Z",
              str(folder / "door-cat.jpg"), str(folder / "door-cat.mp4")),)))
    try:
        browser.get(srv.url + "?token=page-token")
    finally:
        stop.set()
    item = wait(lambda: browser.find_elements("css selector", ".events li"))[0]
    assert label in item.text and browser.execute_script("return window.pwned") is None
    timeline = browser.find_element("css selector", ".timeline")
    assert not timeline.is_displayed()  # no decisions for the stream: no empty track
    links = {a.text: a.get_attribute("href") for a in item.find_elements("css selector", "a")}
    assert set(links) == {"snapshot", "clip"}
    assert all("token=page-token" in href and "/clips/" in href for href in links.values())
    assert [fetch_status(browser, href) for href in links.values()] == [200, 200]
    assert fetch_status(browser, links["clip"].split("?")[0]) == 401  # the token is what opens them
