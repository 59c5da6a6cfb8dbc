"""The decisions stage on `--serve`: /api/events and its parameters, /api/timeline, the /metrics families,
/clips/ (no way out of the folder) and the vendored chart library, from DecisionsViews built by hand."""

from __future__ import annotations

import http.client
import json
import time
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.config import Config
from stream.decisions.hub import DecisionsView, StreamView
from stream.decisions.records import Delivery, Event, Segment
from stream.frames import UNCERTAIN, Steady
from stream.observe.stats import Percentiles
from stream.session.orchestrator import Run
from stream.web.history import ChartHistory
from tests.test_web import get

TOKEN = "tok-decisions-1"


def event(kind: str, rule: str, stream: str, label: str, t: float, snapshot=None, clip=None) -> Event:
    return Event(kind, rule, stream, label, 0.8125, t, int(t * 30), f"2026-12-03T16:00:{int(t):02d}.000Z",
                 snapshot, clip)


def segment(stream: str, label: str, start: float, end: float) -> Segment:
    return Segment(stream, label, int(start * 30), int(end * 30), start, end, 0.9, 0.7, int((end - start) * 30))


EVENTS = (event("start", "cat", "door", "tabby", 1.0), event("start", "coffee", "yard", "espresso", 2.0),
          event("end", "cat", "door", "tabby", 3.0), event("start", "cat", "door", "tabby", 4.0),
          event("start", "cat", "yard", "tiger cat", 5.0))
VIEW = DecisionsView(
    streams=(StreamView("door", Steady("tabby", 0.75, 4.0, 120), 200.0,
                        (segment("door", "tabby", 10.0, 30.0),  # before the 120 s window: left out
                         segment("door", "espresso", 70.0, 90.5),  # starts before the window: clipped to it
                         segment("door", "tabby", 100.0, 150.0),
                         segment("door", "rocket", 210.0, 230.0)),  # an earlier pass of a looped file
                        segment("door", "tabby", 160.0, 200.0)),
             StreamView("yard", Steady(UNCERTAIN, 0.1, 3.0, 90), 5.0, (), None)),
    events=EVENTS,
    counts=(("cat", "tabby", "end", 1), ("cat", "tabby", "start", 2), ("cat", "tiger cat", "start", 1),
            ("coffee", "espresso", "start", 1)),
    deliveries=(Delivery("events.jsonl", delivered=5), Delivery("mqtt://broker:1883", 3, 1, 2, 4, "disconnected")))


def fetch(srv, path: str, headers=None) -> tuple[int, dict | str, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        body = r.read()
        kind = r.getheader("Content-Type", "")
        return r.status, json.loads(body) if kind.startswith("application/json") else body, dict(r.getheaders())
    finally:
        conn.close()


# ---- /api/events

def test_events_come_newest_last_with_counts_and_delivery(server):
    srv = server(["door", "yard"])
    assert fetch(srv, "/api/events")[1]["events"] == []  # before any view
    srv.update_decisions(VIEW)
    status, doc, headers = fetch(srv, "/api/events")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert [(e["type"], e["stream"], e["time_s"]) for e in doc["events"]] == \
        [(e.type, e.stream, e.time_s) for e in EVENTS]
    assert doc["events"][0] == {**EVENTS[0].record(), "links": {"snapshot": None, "clip": None}}
    assert {"rule": "cat", "label": "tabby", "type": "start", "events": 2} in doc["counts"]
    assert doc["delivery"][1] == {"output": "mqtt://broker:1883", "delivered": 3, "failed": 1, "dropped": 2,
                                  "pending": 4, "state": "disconnected"}


@pytest.mark.parametrize(("query", "expected"), [
    ("stream=door", [1.0, 3.0, 4.0]),
    ("rule=cat", [1.0, 3.0, 4.0, 5.0]),
    ("stream=yard&rule=cat", [5.0]),
    ("limit=2", [4.0, 5.0]),
    ("stream=door&limit=1", [4.0]),
    ("stream=nobody", []),
    ("limit=100", [1.0, 2.0, 3.0, 4.0, 5.0]),
])
def test_events_are_filtered_by_stream_and_rule_then_limited(server, query, expected):
    srv = server(["door", "yard"])
    srv.update_decisions(VIEW)
    status, doc, _ = fetch(srv, f"/api/events?{query}")
    assert status == 200
    assert [e["time_s"] for e in doc["events"]] == expected


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=-1", "limit=abc", "limit=1e1", "limit=%C2%B2",
                                   "limit=", "limit=1&limit=2", "stream=", "stream=a&stream=b", "rule=%0Aevil",
                                   "rule=" + "r" * 129, "colour=red", "Stream=door"])
def test_a_bad_event_parameter_is_a_400_of_one_line(server, query):
    srv = server(["door"])
    srv.update_decisions(VIEW)
    status, doc, headers = fetch(srv, f"/api/events?{query}")
    assert status == 400, query
    assert headers["Content-Type"].startswith("application/json")
    assert set(doc) == {"error"} and "\n" not in doc["error"] and len(doc["error"]) < 200


def test_the_guard_covers_the_new_routes(server, tmp_path):
    (tmp_path / "snap.jpg").write_bytes(b"\xff\xd8jpeg")
    srv = server(["door"], token=TOKEN)
    srv.clips_dir = tmp_path
    for path in ("/api/events", "/api/timeline", "/clips/snap.jpg", "/static/uPlot.iife.min.js"):
        assert fetch(srv, path)[0] == 401, path
        assert fetch(srv, path, {"Host": "evil.example", "Authorization": f"Bearer {TOKEN}"})[0] == 403, path
        assert fetch(srv, path, {"Authorization": f"Bearer {TOKEN}"})[0] == 200, path
    assert fetch(srv, f"/api/events?limit=3&token={TOKEN}")[0] == 200  # the page's own way of sending it


def test_the_openapi_document_describes_the_decisions_routes(server):
    doc = fetch(server(["door"]), "/api/openapi.json")[1]
    events = doc["paths"]["/api/events"]["get"]
    assert {p["name"] for p in events["parameters"]} == {"stream", "rule", "limit"}
    assert "400" in events["responses"] and "/api/timeline" in doc["paths"]
    assert {"Event", "Events", "Timeline"} <= set(doc["components"]["schemas"])


# ---- /api/timeline

def fake_snapshot(rows: dict[str, tuple[float, float | None, float, float | None]]):
    """Only what the chart history and the targets read: name → (fps, p95 ms, target fps, budget ms)."""
    def row(name, fps, p95, target, budget):
        e2e = Percentiles(0 if p95 is None else 10, 0, 0, p95 or 0.0, 0, 0)
        snap = SimpleNamespace(fps_10s=SimpleNamespace(pipeline=fps), latency_ms={"end_to_end": e2e},
                               verdict=SimpleNamespace(target_fps=target, budget_ms=budget))
        return SimpleNamespace(name=name, snap=snap)
    return SimpleNamespace(streams=[row(n, *v) for n, v in rows.items()])


def test_the_timeline_shows_the_last_two_minutes_of_segments_and_the_steady_label(server):
    srv = server(["door", "yard", "late"])
    srv.update_decisions(VIEW)
    srv.snapshot = fake_snapshot({"door": (24.5, 81.25, 30.0, 140.0)})
    srv.history.sample(srv.snapshot)
    status, doc, _ = fetch(srv, "/api/timeline")
    assert status == 200
    door, yard, late = doc["streams"]
    d = door["decisions"]
    assert d["now_s"] == 200.0 and d["window_s"] == 120.0
    assert d["steady"] == {"label": "tabby", "prob": 0.75, "since_s": 4.0}
    assert d["segments"] == [{"label": "espresso", "start_s": 80.0, "end_s": 90.5},
                             {"label": "tabby", "start_s": 100.0, "end_s": 150.0},
                             {"label": "tabby", "start_s": 160.0, "end_s": 200.0}]  # the open one, so far
    assert (door["target_fps"], door["budget_ms"]) == (30.0, 140.0)
    assert door["history"]["fps"] == [24.5] and door["history"]["p95_ms"] == [81.25]
    assert yard["decisions"]["steady"]["label"] == UNCERTAIN and yard["decisions"]["segments"] == []
    assert late == {"name": "late", "decisions": None, "target_fps": None, "budget_ms": None,
                    "history": {"t": [], "fps": [], "p95_ms": []}}


def test_the_chart_history_takes_one_sample_a_period_keeps_a_bounded_number_and_forgets_gone_streams():
    clock = SimpleNamespace(now=1000.0)
    history = ChartHistory(period_s=1.0, samples=5, clock=lambda: clock.now)
    for i in range(40):  # 4 snapshots a second for 10 s
        clock.now = 1000.0 + i * 0.25
        history.sample(fake_snapshot({"a": (float(i), None, 30.0, None), "b": (1.0, 5.0, 30.0, None)}))
    a = history.series("a")
    assert a["t"] == [1005.0, 1006.0, 1007.0, 1008.0, 1009.0]
    assert a["fps"] == [20.0, 24.0, 28.0, 32.0, 36.0] and a["p95_ms"] == [None] * 5  # no latency samples yet
    clock.now += 1
    history.sample(fake_snapshot({"a": (1.0, None, 30.0, None)}))
    assert history.series("b") == {"t": [], "fps": [], "p95_ms": []}
    assert len(history.series("a")["t"]) == 5


# ---- /metrics

def metric_samples(srv) -> dict[tuple, float]:
    status, body = get(f"http://127.0.0.1:{srv.port}/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def test_metrics_count_events_delivery_and_the_steady_labels(server):
    srv = server(["door", "yard"])
    assert not any(name.startswith("stream_event") for name, _ in metric_samples(srv))
    srv.update_decisions(VIEW)
    m = metric_samples(srv)
    assert m[("stream_events_total", (("label", "tabby"), ("rule", "cat"), ("type", "start")))] == 2
    assert m[("stream_events_total", (("label", "espresso"), ("rule", "coffee"), ("type", "start")))] == 1
    assert sum(v for (name, _), v in m.items() if name == "stream_events_total") == 5
    mqtt = ("output", "mqtt://broker:1883")
    assert [m[("stream_event_delivery_total", (mqtt, ("result", r)))] for r in ("delivered", "failed", "dropped")] \
        == [3, 1, 2]
    assert m[("stream_event_delivery_total", (("output", "events.jsonl"), ("result", "delivered")))] == 5
    assert m[("stream_event_pending", (mqtt,))] == 4
    assert m[("stream_steady_label_info", (("label", "tabby"), ("stream", "door")))] == 1
    assert m[("stream_steady_label_info", (("label", UNCERTAIN), ("stream", "yard")))] == 1
    assert m[("stream_steady_label_probability", (("stream", "door"),))] == 0.75
    # A label left behind is not exported: one info series per stream, whatever the run's history.
    srv.update_decisions(DecisionsView(streams=(StreamView("door", Steady("espresso", 0.5, 9.0), 9.0, (), None),)))
    info = [labels for (name, labels), _ in metric_samples(srv).items() if name == "stream_steady_label_info"]
    assert info == [(("label", "espresso"), ("stream", "door"))]


# ---- /clips/ and /static/

@pytest.fixture
def clips(tmp_path):
    folder = tmp_path / "clips"
    (folder / "door").mkdir(parents=True)
    (folder / "door" / "cat start.jpg").write_bytes(b"\xff\xd8\xff snapshot")
    (folder / "door" / "cat.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(1000))
    (folder / "notes.txt").write_text("inside, but not a clip")
    (tmp_path / "secret.jpg").write_bytes(b"SECRET outside the folder")
    (folder / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    (folder / "up").symlink_to(tmp_path)
    return folder


def test_a_clip_and_a_snapshot_are_served_with_their_types(server, clips, tmp_path):
    srv = server(["door"])
    srv.clips_dir = str(tmp_path / "clips" / ".." / "clips")  # resolved by the server
    status, body, headers = fetch(srv, "/clips/door/cat%20start.jpg")
    assert (status, body, headers["Content-Type"]) == (200, b"\xff\xd8\xff snapshot", "image/jpeg")
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, body, headers = fetch(srv, "/clips/door/cat.mp4", {"Range": "bytes=4-11"})
    assert (status, body, headers["Content-Type"]) == (206, b"ftypmp42", "video/mp4")  # a <video> can seek


@pytest.mark.parametrize("path", [
    "/clips/../secret.jpg", "/clips/..%2fsecret.jpg", "/clips/%2e%2e/secret.jpg", "/clips/%2E%2E%2Fsecret.jpg",
    "/clips/door/../../secret.jpg", "/clips/door/..%2F..%2Fsecret.jpg", "/clips//etc/passwd", "/clips/%2Fetc%2Fpasswd",
    "/clips/..%5csecret.jpg", "/clips/link.jpg", "/clips/up/secret.jpg",
    "/clips/notes.txt", "/clips/door", "/clips/door/", "/clips/missing.jpg", "/clips/door/cat.mp4%00.jpg",
    "/clips/" + "a/" * 300 + "x.jpg",
])
def test_nothing_outside_the_clips_folder_nor_any_other_kind_of_file_is_served(server, clips, path):
    srv = server(["door"])
    srv.clips_dir = clips
    status, body, _ = fetch(srv, path)
    assert status in (400, 404), (path, status)
    assert b"SECRET" not in body and b"ftyp" not in body and b"root:" not in body


def test_without_a_clips_folder_nothing_is_served_and_events_carry_no_links(server, clips):
    srv = server(["door"])
    srv.update_decisions(DecisionsView(events=(event("start", "cat", "door", "tabby", 1.0,
                                                     str(clips / "door" / "cat start.jpg"),
                                                     str(clips / "door" / "cat.mp4")),)))
    assert fetch(srv, "/clips/door/cat.mp4")[0] == 404
    assert fetch(srv, "/api/events")[1]["events"][0]["links"] == {"snapshot": None, "clip": None}


def test_events_link_their_snapshot_and_clip_when_inside_the_folder(server, clips, tmp_path, monkeypatch):
    srv = server(["door"])
    srv.clips_dir = clips
    monkeypatch.chdir(tmp_path)  # the recorder's paths may be relative to the run's directory
    srv.update_decisions(DecisionsView(events=(
        event("start", "cat", "door", "tabby", 1.0, "clips/door/cat start.jpg", str(clips / "door" / "cat.mp4")),
        event("end", "cat", "door", "tabby", 2.0, str(tmp_path / "secret.jpg"), str(clips / "link.jpg")))))
    first, second = fetch(srv, "/api/events")[1]["events"]
    assert first["links"] == {"snapshot": "clips/door/cat%20start.jpg", "clip": "clips/door/cat.mp4"}
    assert second["links"] == {"snapshot": None, "clip": None}
    for link in first["links"].values():
        assert fetch(srv, "/" + link)[0] == 200


def test_the_chart_library_is_served_from_this_server_with_its_licence(server):
    srv = server(["door"])
    status, body, headers = fetch(srv, "/static/uPlot.iife.min.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and b"uPlot" in body
    status, body, headers = fetch(srv, "/static/uPlot.min.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    assert b"MIT License" in fetch(srv, "/static/uPlot.LICENSE")[1]
    for path in ("/static/index.html", "/static/..%2fserver.py", "/static/../server.py", "/static/"):
        assert fetch(srv, path)[0] == 404, path
    page = fetch(srv, "/")[1].decode()
    assert "static/uPlot.iife.min.js" in page and "cdn" not in page.lower() and "https://" not in page


def test_the_page_sets_every_name_as_text():
    """Labels, streams and rules come from users (rules.toml, stream names): never parsed as HTML."""
    from stream.web.server import PAGE

    script = PAGE.read_text().split("<script>", 1)[1]
    decisions = script.split("// ---- the decisions stage", 1)[1]
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "DOMParser"):
        assert sink not in decisions, sink
    assert "textContent" in decisions


def test_the_run_hands_its_clips_folder_to_the_server(tmp_path):
    run = Run(Config(serve="127.0.0.1:0", clips=str(tmp_path)), time.perf_counter())
    run._serve()
    try:
        assert run.server.clips_dir == tmp_path.resolve()
    finally:
        run.server.stop()
