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


class WaitingControl:
    """The run's control as a service lends it: one stream in the run, one camera that did not answer at start
    and is tried again (one more attempt each time the server lists the streams)."""

    def __init__(self) -> None:
        self.attempts, self.removed = 1, []

    def streams(self) -> list[dict]:
        self.attempts += 1
        rows = [{"name": "chelsea", "uri": "chelsea", "target_fps": None}]
        if "yard" not in self.removed:
            rows.append({"name": "yard", "uri": "rtsp://***:***@yard.local/s1", "target_fps": None,
                         "state": "waiting", "attempts": self.attempts,
                         "error": "cannot open stream rtsp://***:***@yard.local/s1 (timed out)"})
        return rows

    def add(self, uri, name, target_fps):
        raise AssertionError("not asked for")

    def remove(self, name: str) -> list[dict]:
        self.removed.append(name)
        return []


def test_a_waiting_camera_has_a_tile_with_its_attempts_and_error_and_can_be_removed(browser):
    server = PreviewServer(parse_serve("127.0.0.1:0"), ["chelsea"])
    server.start()
    session = pipeline_for(server, [PhotoSource("chelsea", 600, fps=20)])
    server.control = control = WaitingControl()
    run = threading.Thread(target=session.run)
    run.start()
    try:
        browser.get(server.url)
        wait(lambda: len(browser.find_elements("css selector", "section.tile[data-stream]")) == 2)
        [yard] = browser.find_elements("css selector", "section.tile[data-stream='yard']")
        live = browser.find_element("css selector", "section.tile[data-stream='chelsea'] img")
        wait(lambda: browser.execute_script("return arguments[0].naturalWidth", live) > 0)
        text = wait(lambda: browser.execute_script(
            "const t = arguments[0]; return [t.querySelector('.stats').textContent, t.querySelector('.why')"
            "?.textContent, t.querySelector('img').hidden, t.querySelector('img').getAttribute('src')]", yard)
            if "attempt" in yard.text else None)
        stats, why, hidden, src = text
        assert stats.startswith("waiting | not answering, attempt") and why.endswith("(timed out)")
        assert hidden and src is None  # no image, and no connection to a feed that has no frames
        first = int(stats.rsplit(" ", 1)[1])
        wait(lambda: int(yard.find_element("css selector", ".stats").text.rsplit(" ", 1)[1]) > first)
        yard.find_element("css selector", "button.remove").click()
        wait(lambda: not browser.find_elements("css selector", "section.tile[data-stream='yard']"))
        assert control.removed == ["yard"]
        assert browser.find_elements("css selector", "section.tile[data-stream='chelsea']")
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
