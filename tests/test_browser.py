"""In a real browser (Debian's chromium, headless, through selenium and chromium-driver): the preview page is
live and the H.264 output plays in a `<video>` element. Skipped, with the reason, where chromium is absent."""

from __future__ import annotations

import threading
import time

import pytest

from stream.media.sample import pan_zoom, photo
from stream.outputs.sinks import VideoFileSink
from stream.web.address import parse_serve
from stream.web.server import PreviewServer
from tests.browser import MISSING, open_chromium
from tests.test_web import PhotoSource, pipeline_for

pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@pytest.fixture
def browser(tmp_path):
    pytest.importorskip("selenium")
    driver = open_chromium(tmp_path / "profile")
    yield driver
    driver.quit()


def wait(predicate, timeout: float = 20, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting for the page")


def test_the_page_shows_every_stream_live_with_changing_stats(browser):
    server = PreviewServer(parse_serve("127.0.0.1:0"), ["chelsea", "coffee"])
    server.start()
    sources = [PhotoSource("chelsea", 600, fps=20), PhotoSource("coffee", 600, fps=20)]
    session = pipeline_for(server, sources)
    run = threading.Thread(target=session.run)
    run.start()
    try:
        browser.get(server.url)
        tiles = wait(lambda: browser.find_elements("css selector", "section.tile[data-stream]")
                     if len(browser.find_elements("css selector", "section.tile[data-stream]")) == 2 else None)
        assert [t.get_attribute("data-stream") for t in tiles] == ["chelsea", "coffee"]
        images = browser.find_elements("css selector", "section.tile img")
        wait(lambda: all(browser.execute_script("return arguments[0].naturalWidth", img) > 0 for img in images))
        stats = tiles[0].find_element("css selector", ".stats")
        wait(lambda: "fps" in stats.text)
        first_shot, first_text = images[0].screenshot_as_png, stats.text
        time.sleep(1)
        second_shot, second_text = images[0].screenshot_as_png, stats.text
        assert first_shot != second_shot  # the image is live
        assert first_text != second_text  # so are the figures
        assert "running" in second_text and "e2e p95" in second_text
        assert tiles[1].find_elements("css selector", ".top li")
    finally:
        session.engine.stop_event.set()
        run.join(30)
        server.stop()


def test_the_h264_output_plays_in_a_video_element(browser, tmp_path):
    video = tmp_path / "annotated.mp4"
    sink = VideoFileSink(str(video), 30.0, 640, 360)
    for view in pan_zoom(photo("coffee"), 640, 360, 90):
        sink.write(None, view)
    sink.close()
    page = tmp_path / "play.html"
    page.write_text(f'<video id="v" src="{video.name}" muted autoplay playsinline></video>')
    browser.get(page.as_uri())
    wait(lambda: browser.execute_script("return document.getElementById('v').readyState") >= 2
         or browser.execute_script("return document.getElementById('v').error"))
    assert browser.execute_script("return document.getElementById('v').error") is None
    assert browser.execute_script("return document.getElementById('v').videoWidth") == 640
    assert browser.execute_script("return document.getElementById('v').duration") == pytest.approx(3.0, abs=0.1)
    browser.execute_script("document.getElementById('v').play()")
    start = browser.execute_script("return document.getElementById('v').currentTime")
    wait(lambda: browser.execute_script("return document.getElementById('v').currentTime") > start + 0.5, timeout=10)
