"""Stream buffers are bounded in bytes as well as frames: all streams' buffered frames fit in --max-buffer-mb."""

from stream.config import Config, merge
from stream.media.sources import SourceInfo
from stream.media.streams import StreamSpec
from stream.session.plan import MB, buffer_left, frame_bytes, plan_run, plan_stream

UHD = (3840, 2160)  # 23.7 MB (24.9e6 bytes) a decoded frame: --queue-size 1024 of them is 25 GB


def source(width: int, height: int, live: bool = False) -> SourceInfo:
    return SourceInfo("x", "url" if live else "file", live, 30.0, None if live else 100, width, height, not live)


def specs(n: int) -> list[StreamSpec]:
    return [StreamSpec(f"u{i}", f"cam{i}") for i in range(n)]


def buffered_bytes(plan, infos) -> int:
    return sum(s.buffer * frame_bytes(i) for s, i in zip(plan.streams, infos, strict=True))


def test_4k_streams_with_queue_size_1024_fit_under_the_cap_with_a_note():
    cfg = merge({}, {"queue_size": 1024})
    infos = [source(*UHD, live=i % 2 == 0) for i in range(4)]
    plan = plan_run(cfg, specs(4), infos)
    assert buffered_bytes(plan, infos) <= cfg.max_buffer_mb * MB
    assert [s.buffer for s in plan.streams] == [5] * 4  # 128 MB each: 5 frames of 23.7 MB
    assert plan.notes[0] == ("--queue-size 1024 lowered to 5 frame(s) for stream cam0: its 3840x2160 frames take "
                             "23.7 MB each, and all streams' buffers share --max-buffer-mb 512")
    assert len(plan.notes) == 4 and all("\n" not in n for n in plan.notes)


def test_the_cap_follows_max_buffer_mb_and_keeps_at_least_one_frame():
    infos = [source(*UHD)]
    assert plan_run(Config(queue_size=1024, max_buffer_mb=2048), specs(1), infos).streams[0].buffer == 86
    tiny = plan_run(Config(queue_size=1024, max_buffer_mb=1), specs(1), infos)
    assert tiny.streams[0].buffer == 1  # over the cap, but a stream needs a frame to move
    assert plan_run(Config(max_buffer_mb=100), specs(1), infos).streams[0].note.startswith("the buffer of 8 lowered")


def test_small_frames_keep_the_buffer_asked_for_without_a_note():
    infos = [source(640, 360) for _ in range(8)]
    plan = plan_run(Config(queue_size=64), specs(8), infos)
    assert [s.buffer for s in plan.streams] == [64] * 8 and plan.notes == []
    assert plan_run(Config(), specs(1), [source(*UHD)]).streams[0].buffer == 8  # the default fits: 190 MB


def test_a_stream_joining_a_run_gets_what_the_others_left():
    cfg = Config(queue_size=1024)
    infos = [source(*UHD) for _ in range(2)]
    plan = plan_run(cfg, specs(2), infos)
    left = buffer_left(cfg, zip(plan.streams, infos, strict=True))
    assert left == cfg.max_buffer_mb * MB - buffered_bytes(plan, infos)
    joined = plan_stream(cfg, StreamSpec("u9", "late"), source(1920, 1080), left)
    assert buffered_bytes(plan, infos) + joined.buffer * frame_bytes(source(1920, 1080)) <= cfg.max_buffer_mb * MB
    assert joined.buffer >= 1 and "late" in joined.note
