from dataclasses import replace

from rich.console import Console

from stream.frames import TopK
from stream.media.sources import SourceInfo
from stream.observe.dashboard import build_dashboard, status_line
from stream.observe.realtime import Verdict
from stream.observe.runinfo import RunInfo
from stream.observe.stats import STAGES, Percentiles, Rates, StatsSnapshot


def snapshot(**overrides) -> StatsSnapshot:
    values = dict(
        elapsed_s=12.5, frames_read=300, frames_processed=290, frames_rendered=288, frames_dropped=7,
        fps_1s=Rates(31.5, 29.25, 28.75), fps_10s=Rates(30.5, 27.5, 27.0), fps_total=Rates(30.0, 26.0, 25.5),
        model_fps=41.5,
        latency_ms={s: Percentiles(10, 11.0, 12.5 + i, 33.25 + i, 40.0, 50.0) for i, s in enumerate(STAGES)},
        queue_fill=3, queue_size=8, rss_mb=1234.0, peak_rss_mb=1400.0, device_mb=None,
        top=[TopK(285, "Egyptian cat", 0.42), TopK(281, "tabby", 0.31)],
        total_frames=600, eta_s=95.0,
        verdict=Verdict(30.0, "not real-time", "27.0 fps < 28.5 (0.95 × 30)", False, 97.0, 330.0),
    )
    values.update(overrides)
    return StatsSnapshot(**values)


def info(random_weights: bool = False) -> RunInfo:
    source = SourceInfo("clip.mp4", "file", False, 30.0, 600, 1280, 720)
    return RunInfo(source, "alexnet", "random" if random_weights else "AlexNet_Weights.IMAGENET1K_V1",
                   random_weights, "torch", "cpu", "fp32", 4, "block")


def render(renderable) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_dashboard_shows_every_field():
    text = render(build_dashboard(snapshot(device_mb=512.0), info()))
    for expected in ["clip.mp4", "alexnet", "torch on cpu", "fp32", "batch 4",
                     "31.5", "29.2", "28.8", "27.0", "41.5",  # fps windows and model-only fps
                     "12.5", "33.2", "end to end",  # latency p50/p95
                     "3/8", "dropped 7", "RSS 1234 MB", "peak 1400 MB", "device peak 512 MB",
                     "Egyptian cat", "42.0%", "tabby", "288/600", "ETA 1:35",
                     "NOT REAL-TIME", "27.0 fps < 28.5"]:
        assert expected in text, expected
    assert "RANDOM WEIGHTS" not in text
    assert "side by side" not in text
    sides = replace(info(), backend="onnxruntime", precision="int8", threads=1, calls=2)
    assert "onnxruntime on cpu, int8, batch 4, 2 model calls side by side" in render(build_dashboard(snapshot(), sides))


def test_dashboard_warns_about_random_weights_and_hides_progress_for_live():
    text = render(build_dashboard(snapshot(total_frames=None, eta_s=None), info(random_weights=True)))
    assert "RANDOM WEIGHTS" in text
    assert "ETA" not in text
    assert "CUDA" not in text


def test_status_line_carries_progress_and_rates():
    line = status_line(snapshot())
    assert "288/600 (48%)" in line and "ETA 1:35" in line
    assert "27.0 fps" in line and "dropped 7" in line and "Egyptian cat" in line
    assert "\n" not in line


def test_a_multi_stream_dashboard_has_a_row_per_stream_and_the_totals():
    from stream.observe.stats import SnapshotRow

    rows = [SnapshotRow("door", "running", snapshot(fps_10s=Rates(30.0, 29.9, 29.8)), {"full": 3, "stale": 1}, 0, 0,
                        0.02, "latest"),
            SnapshotRow("yard", "reconnecting", snapshot(fps_10s=Rates(0.0, 0.0, 0.0), top=[]), {"full": 0, "stale": 0},
                        2, 1, 7.5, "latest")]
    text = render(build_dashboard(snapshot().with_streams(rows), info()))
    for expected in ["2 streams", "door", "yard", "running", "reconnecting", "29.8", "3/1", "2 (1 stalls)",
                     "7.5 s ago", "door (latest), yard (latest)", "end to end"]:
        assert expected in text, expected
    line = status_line(snapshot().with_streams(rows))
    assert "door running 29.8 fps" in line and "yard reconnecting 0.0 fps" in line


def test_the_dashboard_shows_the_steady_label_beside_the_raw_top_5():
    from stream.frames import Steady

    assert "steady: tabby" not in render(build_dashboard(snapshot(), info()))
    text = render(build_dashboard(snapshot(steady=Steady("tabby", 0.7, 1.0)), info()))
    assert "steady: tabby" in text
