"""Steady labels, segments and rule events: on synthetic top-5 sequences (exact), and on a video of known label
intervals through the whole CLI (boundaries within 1 s, no event from flicker)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stream.decisions.hub import Decisions
from stream.decisions.rules import Rule, RuleSet, Smoothing, parse_rules
from stream.decisions.steady import SteadyLabeler
from stream.decisions.tracker import RuleTracker
from stream.errors import UserError
from stream.frames import UNCERTAIN, Classified, Frame, Prediction, StageTimes, TopK
from tests.conftest import ROOT

FPS = 30.0


def top(label: str, p: float, other: str = "other") -> list[TopK]:
    """`label` at p, the rest spread thinly (`other` never qualifies unless given the mass explicitly)."""
    rest = 1.0 - p
    return sorted([TopK(0, label, p), TopK(1, other, rest if other != "other" else rest / 4)], key=lambda t: -t.prob)


def feed(labeler: SteadyLabeler, tops):
    steadies, segments = [], []
    for i, t in enumerate(tops):
        steady, closed = labeler.update(i, i / FPS, t)
        steadies.append(steady)
        segments += closed
    return steadies, segments + labeler.finish()


def test_a_label_is_taken_after_its_dwell_and_dated_back_to_when_it_first_qualified():
    labeler = SteadyLabeler("s", Smoothing(method="none", enter=0.6, exit=0.4, min_dwell_s=0.5))
    steadies, segments = feed(labeler, [top("cat", 0.1)] * 30 + [top("cat", 0.9)] * 60)
    assert steadies[30 + 14].label == UNCERTAIN  # 14 frames = 0.47 s: not yet
    assert steadies[30 + 15].label == "cat" and steadies[30 + 15].since_s == pytest.approx(1.0)
    assert [(s.label, s.start_frame, s.end_frame) for s in segments] == [("cat", 30, 89)]


def test_hysteresis_holds_a_label_between_exit_and_enter_and_leaves_it_below_exit():
    labeler = SteadyLabeler("s", Smoothing(method="none", enter=0.6, exit=0.4, min_dwell_s=0.0))
    wobble = [top("cat", p) for p in (0.9, 0.45, 0.55, 0.41, 0.5, 0.45)] * 5
    steadies, segments = feed(labeler, wobble + [top("cat", 0.3)] * 3)
    assert all(s.label == "cat" for s in steadies[:30])
    assert steadies[30].label == UNCERTAIN
    assert len(segments) == 1 and segments[0].end_frame == 29 and segments[0].end_s == pytest.approx(30 / FPS)


def test_a_challenger_shorter_than_the_dwell_changes_nothing_and_one_that_holds_takes_over_dated_back():
    labeler = SteadyLabeler("s", Smoothing(method="none", enter=0.6, exit=0.4, min_dwell_s=0.5))
    seq = [top("cat", 0.9)] * 30 + [top("dog", 0.6, "cat")] * 10 + [top("cat", 0.9)] * 20 + [top("dog", 0.9)] * 30
    steadies, segments = feed(labeler, seq)
    assert all(s.label == "cat" for s in steadies[15:60])  # the 10-frame dog never counted (cat held at exit)
    assert [(s.label, s.start_frame, s.end_frame) for s in segments] == [("cat", 0, 59), ("dog", 60, 89)]
    cat = segments[0]
    assert cat.frames == 60 and cat.end_s == pytest.approx(2.0)  # its figures stop where dog's segment begins


def test_ema_smooths_a_one_frame_flicker_away_where_none_shows_it():
    flicker = [top("cat", 0.8, "dog") if i % 7 else top("dog", 0.8, "cat") for i in range(210)]
    counts = {}
    for method in ("none", "ema", "majority"):
        labeler = SteadyLabeler("s", Smoothing(method=method, enter=0.6, exit=0.4, min_dwell_s=0.0))
        counts[method] = len(feed(labeler, flicker)[1])
    assert counts["ema"] == 1 and counts["majority"] == 1
    assert counts["none"] >= 50


def test_frames_of_a_frozen_or_blank_picture_are_uncertain():
    labeler = SteadyLabeler("s", Smoothing(method="none", enter=0.6, exit=0.4, min_dwell_s=0.0))
    steadies, _ = feed(labeler, [top("cat", 0.9)] * 5 + [None] * 5)
    assert steadies[4].label == "cat" and steadies[5].label == UNCERTAIN


def _steadies(labels_per_second: list[str], dwell: float = 0.0):
    labeler = SteadyLabeler("s", Smoothing(method="none", enter=0.6, exit=0.4, min_dwell_s=dwell))
    tops = [top(label, 0.9) if label else top("x", 0.1) for label in labels_per_second for _ in range(int(FPS))]
    return [labeler.update(i, i / FPS, t)[0] for i, t in enumerate(tops)]


def run_tracker(rule: Rule, steadies):
    tracker = RuleTracker(rule)
    fired = [f for i, s in enumerate(steadies) if (f := tracker.update(i, i / FPS, s)) is not None]
    last = len(steadies) - 1
    end = tracker.finish(last, last / FPS)
    return fired + ([end] if end else [])


def test_a_rule_starts_after_min_duration_continues_across_its_labels_and_ends_when_they_go():
    rule = Rule("birds", ("goldfinch", "*junco*"), min_duration_s=1.0)
    fired = run_tracker(rule, _steadies(["", "goldfinch", "dark-eyed junco", "goldfinch", "", "", "goldfinch"]))
    # held 1 s at 2.0 s (the label then is the junco's); one event through both labels; the last second is
    # too short to fire
    assert [(f.type, f.label, round(f.time_s, 2)) for f in fired] == [("start", "dark-eyed junco", 2.0),
                                                                       ("end", "dark-eyed junco", 4.0)]


def test_a_label_shorter_than_min_duration_fires_nothing_and_the_stream_end_closes_an_event():
    rule = Rule("cats", ("cat",), min_duration_s=1.5)
    assert run_tracker(rule, _steadies(["cat", "", "cat", ""])) == []
    fired = run_tracker(rule, _steadies(["", "cat", "cat", "cat"]))
    assert [f.type for f in fired] == ["start", "end"]
    assert fired[1].frame == 4 * int(FPS) - 1  # at the stream's last frame


def test_cooldown_holds_back_a_restart_until_it_is_over_and_only_if_the_label_still_holds():
    rule = Rule("cats", ("cat",), min_duration_s=0.0, cooldown_s=5.0)
    fired = run_tracker(rule, _steadies(["cat", "", "cat", "", "cat", "cat", "cat", "cat", ""]))
    starts = [round(f.time_s, 2) for f in fired if f.type == "start"]
    assert starts == [0.0, 5.0]  # the return at 2 s is within the cooldown; at 5 s the cat still holds


def _classified(i: int, label: str, p: float, health=None) -> Classified:
    frame = Frame(i, None, 0.0, i / FPS, 0, health)
    return Classified(frame, Prediction(i, top(label, p), StageTimes(0, 0, 0, 1), 0.0))


class Recorder:
    name = "recorder"

    def __init__(self):
        self.events, self.labels, self.gone = [], [], []

    def publish(self, event):
        self.events.append(event)

    def steady(self, stream, steady):
        self.labels.append((stream, steady.label))

    def stream_gone(self, stream):
        self.gone.append(stream)

    def delivery(self):
        from stream.decisions.records import Delivery

        return Delivery(self.name, len(self.events))

    def close(self):
        pass


def test_the_hub_sends_label_changes_only_events_with_the_stream_clock_and_closes_everything_at_the_end():
    rules = RuleSet(Smoothing(method="none", min_dwell_s=0.0), (Rule("c", ("cat",), min_duration_s=0.5),))
    out = Recorder()
    hub = Decisions(rules, [out], clock=lambda: "2026-01-01T00:00:00.000Z")
    a, b = hub.open("a"), hub.open("b")
    for i in range(60):
        for decider, label in ((a, "cat"), (b, "dog")):
            item = decider.decide(_classified(i, label, 0.9))
            assert item.steady is not None and item.steady.label == label
            decider.rendered(item, None)
    assert out.labels == [("a", "cat"), ("b", "dog")]  # once each: on change only
    assert [(e.type, e.stream, e.frame, e.time_s) for e in out.events] == [("start", "a", 15, 0.5)]
    assert hub.close() == []
    assert [(e.type, e.stream, e.frame) for e in out.events][-1] == ("end", "a", 59)
    assert sorted(out.gone) == ["a", "b"]
    report = hub.report()
    assert report["streams"]["a"]["events"] == 2 and report["streams"]["b"]["segments"] == 1
    view = hub.view()
    assert view.counts == (("c", "cat", "end", 1), ("c", "cat", "start", 1))


def test_health_flagged_frames_fire_no_event():
    rules = RuleSet(Smoothing(method="none", min_dwell_s=0.0), (Rule("c", ("cat",), min_duration_s=0.5),))
    out = Recorder()
    hub = Decisions(rules, [out])
    d = hub.open("cam")
    for i in range(90):
        d.rendered(d.decide(_classified(i, "cat", 0.9, health="frozen")), None)
    hub.close()
    assert out.events == []


@pytest.mark.parametrize("text, words", [
    ('[smoothing]\nmethod = "median"', "method"),
    ("[smoothing]\nenter = 0.3\nexit = 0.5", "exit"),
    ("[smoothing]\nalpha = 0", "alpha"),
    ("[smoothing]\nspeed = 1", "unknown key"),
    ('[[rule]]\nname = "a b"\nlabels = ["x"]', "name"),
    ('[[rule]]\nname = "a"', "labels"),
    ('[[rule]]\nname = "a"\nlabels = []', "labels"),
    ('[[rule]]\nname = "a"\nlabels = ["x"]\n[[rule]]\nname = "a"\nlabels = ["y"]', "twice"),
    ('[[rule]]\nname = "a"\nlabels = ["x"]\npre_roll_s = 600', "pre_roll_s"),
    ('[[rule]]\nname = "a"\nlabels = ["x"]\nclip = "yes"', "clip"),
    ('[[rule]]\nname = "a"\nlabels = ["x"]\ncooldown_s = -1', "cooldown_s"),
])
def test_a_bad_rules_file_is_one_line_naming_the_key(text, words):
    import tomllib

    with pytest.raises(UserError) as err:
        parse_rules(tomllib.loads(text), "--rules r.toml")
    assert words in str(err.value) and "\n" not in str(err.value)


def _run(args, timeout=180):
    return subprocess.run([sys.executable, str(ROOT / "run_stream.py"), *args, "--no-display"], capture_output=True,
                          text=True, timeout=timeout)


def test_the_cli_refuses_bad_rules_and_decisions_on_ray_in_one_line(tmp_path):
    bad = tmp_path / "r.toml"
    bad.write_text("[smoothing]\nenter = 2\n")
    for args in (["--rules", str(bad)], ["--rules", str(tmp_path / "none.toml")],
                 ["--events", str(tmp_path / "e.jsonl")],
                 ["--engine", "ray", "--rules", str(bad)]):
        result = _run(args, timeout=60)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr


@pytest.fixture(scope="module")
def lab_runs(labelled_clip, tmp_path_factory):
    """The labelled clip through the whole CLI with EfficientNet-Lite0, smoothed (ema) and raw (none)."""
    out = tmp_path_factory.mktemp("decisions")
    runs = {}
    for method, extra in (("ema", ""), ("none", "min_dwell_s = 0\n")):
        rules = out / f"{method}.toml"
        rules.write_text(f'[smoothing]\nmethod = "{method}"\nenter = 0.3\nexit = 0.2\n{extra}'
                         '[[rule]]\nname = "cat"\nlabels = ["*cat*", "tabby"]\nmin_duration_s = 1.0\n'
                         '[[rule]]\nname = "coffee"\nlabels = ["espresso"]\nmin_duration_s = 1.0\n')
        paths = {k: out / f"{method}-{k}.jsonl" for k in ("events", "segments", "predictions")}
        result = _run(["--source", str(labelled_clip), "--model", "efficientnet_lite0", "--rules", str(rules),
                       "--report", str(out / f"{method}.json"),
                       *[a for k, p in paths.items() for a in (f"--{k}", str(p))]])
        assert result.returncode == 0, result.stderr
        runs[method] = {k: [json.loads(line) for line in p.read_text().splitlines()] for k, p in paths.items()}
        runs[method]["report"] = json.loads((out / f"{method}.json").read_text())
    return runs


def test_the_known_label_intervals_give_exactly_their_segments_and_events(lab_runs):
    run = lab_runs["ema"]
    espresso = [(s["start_s"], s["end_s"]) for s in run["segments"] if s["label"] == "espresso"]
    assert len(espresso) == 2
    for (start, end), (want_start, want_end) in zip(espresso, [(0, 4), (8, 12)], strict=True):
        assert abs(start - want_start) <= 1.0 and abs(end - want_end) <= 1.0
    between = [s for s in run["segments"] if 4.0 <= s["start_s"] < 8.0]
    assert between and all("cat" in s["label"] or s["label"] == "tabby" for s in between)
    events = [(e["type"], e["rule"], e["time_s"]) for e in run["events"]]
    assert [(t, r) for t, r, _ in events] == [("start", "coffee"), ("end", "coffee"), ("start", "cat"),
                                              ("end", "cat"), ("start", "coffee"), ("end", "coffee")]
    starts = {r: [s for t, rr, s in events if t == "start" and rr == r] for r in ("coffee", "cat")}
    assert 1.0 <= starts["coffee"][0] <= 2.5 and 9.0 <= starts["coffee"][1] <= 10.5  # 1 s min_duration after onset
    assert 5.0 <= starts["cat"][0] <= 7.0
    ends = [s for t, _, s in events if t == "end"]
    assert abs(ends[0] - 4) <= 1.0 and abs(ends[1] - 8) <= 1.0 and abs(ends[2] - 12) <= 1.0
    every = run["predictions"]
    assert len(every) == 480 and all("steady" in p for p in every)
    assert run["report"]["decisions"]["streams"]["labelled"]["events"] == 6


def test_without_smoothing_the_raw_flicker_shows_in_the_counts(lab_runs):
    raw, smooth = lab_runs["none"], lab_runs["ema"]
    assert len(raw["segments"]) >= 3 * len(smooth["segments"])
    top1_changes = sum(a["top5"][0]["label"] != b["top5"][0]["label"]
                       for a, b in zip(raw["predictions"], raw["predictions"][1:], strict=False))
    assert top1_changes >= 10


def test_a_stream_removed_mid_event_ends_its_event_and_segment_at_its_last_shown_frame(tmp_path):
    import threading
    import time

    import numpy as np

    from stream.outputs.event_log import EventLog, SegmentLog
    from stream.pipeline.inference import Batching
    from stream.pipeline.preprocess import Preprocessor
    from tests.sessions import add, local_session
    from tests.test_join_leave import plan, wait_for
    from tests.test_pipeline import CATEGORIES, SPEC, GrayBackend, GraySource, NullUi, RecordingSink

    class Still(GraySource):
        """Every frame the same grey (value 7): a steady label, "value7"."""

        def read(self):
            frame = super().read()
            return None if frame is None else Frame(frame.index, np.full_like(frame.image, 7), frame.captured_at,
                                                    frame.time_s)

    rules = RuleSet(Smoothing(min_dwell_s=0.1), (Rule("seven", ("value7",), min_duration_s=0.2),))
    events, segments = EventLog(str(tmp_path / "e.jsonl")), SegmentLog(str(tmp_path / "s.jsonl"))
    hub = Decisions(rules, [events], segments=segments)
    session = local_session(GrayBackend(), Preprocessor(SPEC), CATEGORIES, Batching(2, 0.02), NullUi(),
                            decisions=hub)
    sink = RecordingSink()
    add(session, plan("a", 60), Still(60, delay_s=0.005), uri="a")
    add(session, plan("b", 3000), Still(3000, delay_s=0.005), [sink], uri="b")
    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("outcome", session.run()))
    runner.start()
    try:
        wait_for(lambda: len(sink.items) >= 60)
        session.remove("b").result(timeout=20)
        time.sleep(0.2)
        mid = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    finally:
        runner.join(60)
    hub.close()
    last_b = sink.items[-1].frame.index
    b = [(e["type"], e["frame"]) for e in mid if e["stream"] == "b"]
    assert b[0][0] == "start" and b[-1] == ("end", last_b)  # written when it left, not at the run's end
    segs = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert {(s["stream"], s["label"]) for s in segs} == {("a", "value7"), ("b", "value7")}
    assert next(s for s in segs if s["stream"] == "b")["end_frame"] == last_b
    assert all(i.steady is not None for i in sink.items)


def test_a_label_that_falls_below_exit_is_left_at_once_even_while_a_challenger_dwells():
    labeler = SteadyLabeler("s", Smoothing(method="none", enter=0.6, exit=0.4, min_dwell_s=0.5))
    steadies, segments = feed(labeler, [top("cat", 0.9)] * 30 + [top("dog", 0.9)] * 30)
    assert steadies[31].label == UNCERTAIN and steadies[31].since_s == pytest.approx(1.0)  # not cat for 0.5 s more
    assert steadies[45].label == "dog"
    assert [(s.label, s.start_frame, s.end_frame) for s in segments] == [("cat", 0, 29), ("dog", 30, 59)]
