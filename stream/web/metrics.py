"""`/metrics`: Prometheus families made at scrape time from the newest stats snapshot.

A custom collector on the server's own registry (no global state): the counters are the snapshot's, so
the last scrape of a run equals its report. Latency histograms are the run-long exact bucket counts kept
beside the percentiles (stream.observe.histogram.BoundedSamples.buckets), in seconds as Prometheus prefers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from stream.observe.histogram import Buckets
from stream.observe.stats import StatsSnapshot
from stream.web.preview import LatestFrame

# A snapshot row's `state`, as stream.pipeline.capture spells them: written out because web reads snapshots
# only (.importlinter); tests/test_web.py keeps the two lists equal.
STATES = ("connecting", "running", "reconnecting", "stalled", "ended", "failed", "frozen", "blank")


def _buckets(b: Buckets) -> list[tuple[str, float]]:
    pairs = [(f"{bound / 1000:g}", float(n)) for bound, n in zip(b.bounds_ms, b.cumulative, strict=True)]
    return [*pairs, ("+Inf", float(b.count))]


class SnapshotCollector:
    def __init__(self, snapshot: Callable[[], StatsSnapshot | None],
                 frames: Callable[[], dict[str, LatestFrame]],
                 waiting: Callable[[], list[str]] = lambda: []) -> None:
        self._snapshot = snapshot
        self._frames = frames
        self._waiting = waiting  # a service's cameras that did not answer at start (stream.session.waiting)

    def collect(self) -> Iterator[Metric]:
        viewers = GaugeMetricFamily("stream_preview_viewers", "Browser viewers of a stream's MJPEG preview",
                                    labels=["stream"])
        encodes = CounterMetricFamily("stream_preview_jpeg_encodes", "JPEG encodes made for the preview",
                                      labels=["stream"])
        for name, frame in self._frames().items():
            viewers.add_metric([name], frame.viewers)
            encodes.add_metric([name], frame.encodes)
        yield viewers
        yield encodes
        waiting = GaugeMetricFamily("stream_waiting", "1 for a camera that did not answer at start and is tried "
                                    "again in the background (not in the run yet)", labels=["stream"])
        for name in self._waiting():
            waiting.add_metric([name], 1.0)
        yield waiting
        snap = self._snapshot()
        if snap is None:
            return
        yield from self._streams(snap)
        if snap.cpu is not None:
            yield from _cpu(snap)
        yield GaugeMetricFamily("stream_model_only_fps", "Frames per second of pure model time in the run",
                                value=snap.model_fps)
        yield GaugeMetricFamily("stream_rss_bytes", "Resident memory of the process", value=snap.rss_mb * 2**20)
        yield GaugeMetricFamily("stream_peak_rss_bytes", "Peak resident memory of the process",
                                value=snap.peak_rss_mb * 2**20)
        if snap.device_mb is not None:
            yield GaugeMetricFamily("stream_device_peak_memory_bytes", "Peak CUDA memory allocated",
                                    value=snap.device_mb * 2**20)

    def _streams(self, snap: StatsSnapshot) -> Iterator[Metric]:
        labels = ["stream"]
        fps = GaugeMetricFamily("stream_fps", "Annotated frames per second over the last 10 s", labels=labels)
        capture = GaugeMetricFamily("stream_capture_fps", "Frames read per second over the last 10 s", labels=labels)
        frames = {kind: CounterMetricFamily(f"stream_frames_{kind}", f"Frames {kind}", labels=labels)
                  for kind in ("read", "processed", "shown")}
        dropped = CounterMetricFamily("stream_frames_dropped", "Frames dropped, by cause", labels=["stream", "cause"])
        reconnects = CounterMetricFamily("stream_reconnects", "Reconnects of a live stream", labels=labels)
        stalls = CounterMetricFamily("stream_stalls", "Stalls detected on a live stream", labels=labels)
        state = GaugeMetricFamily("stream_state", "1 for the stream's current state", labels=["stream", "state"])
        latency = HistogramMetricFamily("stream_latency_seconds", "Per-frame latency by stage, the whole run",
                                        labels=["stream", "stage"])
        for row in snap.streams:
            s = row.snap
            fps.add_metric([row.name], s.fps_10s.pipeline)
            capture.add_metric([row.name], s.fps_10s.capture)
            frames["read"].add_metric([row.name], s.frames_read)
            frames["processed"].add_metric([row.name], s.frames_processed)
            frames["shown"].add_metric([row.name], s.frames_rendered)
            for cause, count in row.drops.items():
                dropped.add_metric([row.name, cause], count)
            reconnects.add_metric([row.name], row.reconnects)
            stalls.add_metric([row.name], row.stalls)
            for name in STATES:
                state.add_metric([row.name, name], 1.0 if row.state == name else 0.0)
            for stage, buckets in s.histograms.items():
                latency.add_metric([row.name, stage], _buckets(buckets), buckets.sum_ms / 1000)
        yield from (fps, capture, *frames.values(), dropped, reconnects, stalls, state, latency)


def _cpu(snap: StatsSnapshot) -> Iterator[Metric]:
    """The run's CPU by stage and each stage thread's time blocked on its neighbours (stream.observe.cpu)."""
    cpu = snap.cpu
    seconds = CounterMetricFamily("stream_cpu_seconds", "CPU time of the process since the run started, by stage "
                                  "(unattributed: the process's CPU clock less every stage)", labels=["stage"])
    for stage, value in cpu.stages.items():
        seconds.add_metric([stage], value)
    idle = CounterMetricFamily("stream_thread_idle_seconds", "Wall time a stage thread spent blocked on its "
                               "neighbours (a queue's get or put)", labels=["thread", "role"])
    busy = CounterMetricFamily("stream_thread_cpu_seconds", "CPU time of a stage thread", labels=["thread", "role"])
    for t in cpu.threads:
        idle.add_metric([t.name, t.role], t.idle_s)
        busy.add_metric([t.name, t.role], t.cpu_s)
    yield seconds
    yield idle
    yield busy
    yield CounterMetricFamily("stream_cpu_frames", "Frames the CPU figures are divided by", value=cpu.frames)
