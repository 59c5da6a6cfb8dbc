"""Every decision a run makes from its settings and its sources, in pure functions.

Live sources (and files read with --pace) keep their newest frames in a small buffer and run at
batch 1 when alone; files are read losslessly and batched for throughput. Several streams are
batched together: when any is live a batch holds up to one frame per stream (8 at most) and waits about
one frame period of the fastest live stream for them, so no stream waits on a silent one. A stream that
joins a run in progress is planned by the same rules (`plan_stream`); the batch is the run's, fixed at start.
Buffers are bounded in bytes as well as frames: all streams' buffered frames together fit in --max-buffer-mb,
which lowers --queue-size (with a note) where it must. The other holders of frames grow with --batch (at most 256),
not with the buffer: the batch being classified, the results waiting for the render loop (two batches) and, on
Ray, a stream's requests in flight (two batches' worth); at the default batch of 8 that is about 24 frames
(570 MB of 4K frames) beside the buffers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from stream.backends import AUTO, capabilities, choose_backend
from stream.config import Config
from stream.media.sources import SourceInfo
from stream.media.streams import StreamSpec
from stream.pipeline.capture import Reconnect
from stream.pipeline.health import HealthRules
from stream.pipeline.inference import Batching

# Batching amortises the weight stream of the fully connected layers: on the 2-core CPU, 720p, AlexNet,
# batch 8 against 1 gave ONNX Runtime 1.4× and PyTorch 1.8× the pipeline fps (README, Backends).
FILE_BATCH = 8
SERVICE_BATCH = 4  # a run that starts with no stream and waits for cameras: a few frames per batch
LIVE_BUFFER = 2  # frames a live stream keeps for the batcher: the newest, and the one being replaced
FILE_BUFFER = 8
FILE_BATCH_TIMEOUT_S = 0.05
MAX_BATCH_TIMEOUT_S = 0.05
LIVE_STALENESS_S = 0.5
SERVICE_FPS = 30.0
MB = 2**20  # as the report's memory figures count


@dataclass(frozen=True)
class StreamPlan:
    """What the run decided for one stream."""

    name: str
    live: bool  # keep the newest frames; judged on latency
    buffer: int
    target_fps: float
    judge_latency: bool
    total: int | None = None  # frames expected, for progress and ETA
    max_frames: int | None = None
    loop: bool = False
    pace_fps: float | None = None
    latency_budget_ms: float | None = None
    note: str | None = None  # why its buffer holds fewer frames than asked for

    @property
    def policy(self) -> str:
        return "latest" if self.live else "block"


def model_threads(cfg: Config, cores: int, batch: int = FILE_BATCH) -> int | None:
    """Intra-op threads of a CPU backend for this run; None leaves the backend's own default (one per core).

    int8 leaves one core to decode, preprocessing and encoding: the model is no longer what bounds the
    pipeline, and one intra-op thread spends less CPU per frame than two (their hand-offs cost). Measured on
    2 cores, AlexNet int8, 720p with video, batch 8 (a file's): 1 thread 154-163 fps against 2 threads 130-150 (ONNX
    Runtime and OpenVINO alike; 130-150 against 123-128 again after the encoder's cut); fp32 batch 8 the other way
    round (100 vs 107). At batch 1 (a live camera's) ONNX Runtime is the exception: each frame's model call is the
    pipeline's serial path (7.4 ms of its ~8.2 ms a frame on the model's thread, the other core 80 % busy), and two
    threads shorten it to ~5 ms for 0.7 ms more CPU: 116-123 against 124-128 fps, and 99-116 against 102-122 in a
    noisier hour (paired median +5 %). OpenVINO's two threads cost 10.3 ms of CPU against 7.8 for no more fps.
    Those figures are one CPU's: the load times the model on the threads left to it and gives it every core where
    it turns out to bound the run (`model_is_serial_path`, stream.session.launch).
    """
    if cfg.threads or cfg.precision != "int8" or cores < 2:
        return cfg.threads
    # A plan made before the run picked its backend (a library caller's) plans for what auto will pick.
    backend = cfg.backend if cfg.backend != AUTO else choose_backend(cfg.device, cfg.precision).name
    if batch == 1 and backend == "onnxruntime":
        return cfg.threads
    return cores - 1 if capabilities(backend).cpu_bound else cfg.threads


# What a frame costs besides the model, per megapixel of source frame, measured on the 2-core boxes (a 720p frame,
# AlexNet int8, report's cpu section): decoding ~2.3 ms, faithful preprocessing ~2.2, drawing, top-5 and the
# pipeline's own hand-offs ~1.5; the annotated video's encoder (mp4v) ~4.8 more. An estimate for one decision only.
REST_MS_PER_MPIXEL = 6.5
ENCODE_MS_PER_MPIXEL = 5.2


def rest_of_frame_ms(infos: Iterable[SourceInfo], writes_video: bool) -> float | None:
    """The CPU a frame of these sources costs outside the model; None when there is no source yet (a service)."""
    sizes = [info.width * info.height / 1e6 for info in infos]
    if not sizes:
        return None
    return sum(sizes) / len(sizes) * (REST_MS_PER_MPIXEL + (ENCODE_MS_PER_MPIXEL if writes_video else 0.0))


def model_is_serial_path(wall_ms: float, cpu_ms: float, rest_ms: float, cores: int) -> bool:
    """Whether the model, on the threads `model_threads` left it, bounds the pipeline: its wall time per frame
    exceeds what a frame takes when all its CPU (model and the rest) shares the cores. Then the cores it left free
    idle and every core on the model gives more frames. How fast int8 runs differs between CPUs of one family:
    AlexNet int8 batch 8 took 4.4 ms a frame on one thread on one 2-core EPYC and 15.6 on another (Zen 2), where one
    thread gave 62 fps against 74 with two; OpenVINO int8 batch 1 there 35 against 50."""
    return wall_ms > (cpu_ms + rest_ms) / cores


@dataclass(frozen=True)
class RunPlan:
    streams: list[StreamPlan]
    batching: Batching
    reconnect: Reconnect
    threads: int | None = None  # the CPU backends' intra-op threads; None: one per core
    health: HealthRules = HealthRules()  # how a live stream is judged frozen or blank

    @property
    def live(self) -> bool:
        return any(s.live for s in self.streams)

    @property
    def notes(self) -> list[str]:
        return [s.note for s in self.streams if s.note]


def plan_run(cfg: Config, specs: list[StreamSpec], infos: list[SourceInfo], cores: int = 1,
             service: bool = False) -> RunPlan:
    """`service`: streams may join later (the run keeps going with none), so batch and reconnect are set for
    cameras that are not there yet. The streams share --max-buffer-mb equally."""
    share = cfg.max_buffer_mb * MB / max(1, len(specs))
    streams = [plan_stream(cfg, spec, info, share) for spec, info in zip(specs, infos, strict=True)]
    live = [s for s in streams if s.live]
    if cfg.batch:
        batch = cfg.batch
    elif service and not streams:
        batch = SERVICE_BATCH
    elif live:
        batch = max(1, min(FILE_BATCH, len(streams)))
    else:
        batch = FILE_BATCH
    if cfg.batch_timeout_ms is not None:
        timeout = cfg.batch_timeout_ms / 1000
    elif live or (service and not streams):
        fastest = max([s.target_fps for s in live] or [cfg.target_fps or SERVICE_FPS])
        timeout = 0.0 if batch == 1 else min(1.0 / fastest, MAX_BATCH_TIMEOUT_S)
    else:
        timeout = FILE_BATCH_TIMEOUT_S
    stale = cfg.max_staleness_ms / 1000 if cfg.max_staleness_ms is not None else (
        LIVE_STALENESS_S if live or service else None)
    reconnect_on = cfg.reconnect == "on" or (cfg.reconnect == "auto" and (len(streams) > 1 or service))
    return RunPlan(streams, Batching(batch, timeout, stale), Reconnect(reconnect_on, cfg.max_reconnects),
                   model_threads(cfg, cores, batch),
                   HealthRules(cfg.frozen_after_s, cfg.blank_after_s, cfg.reconnect_frozen))


def plan_stream(cfg: Config, spec: StreamSpec, info: SourceInfo, buffer_bytes: float | None = None) -> StreamPlan:
    """`buffer_bytes`: what its buffer may hold (`buffer_left` for a stream joining a run); None: --max-buffer-mb."""
    policy = cfg.drop_policy if cfg.drop_policy != "auto" else ("latest" if info.live or cfg.pace else "block")
    live = policy == "latest"
    # An image folder's nominal 1 fps is a slideshow rate for the output video, not a target.
    target = spec.target_fps or cfg.target_fps or (None if info.nominal_fps else info.fps) or 30.0
    total = None if cfg.loop or info.live else info.frame_count
    if total is not None and cfg.max_frames is not None:
        total = min(total, cfg.max_frames)
    wanted = cfg.queue_size or (LIVE_BUFFER if live else FILE_BUFFER)
    buffer = frames_within(wanted, info, cfg.max_buffer_mb * MB if buffer_bytes is None else buffer_bytes)
    note = None if buffer == wanted else (
        f"{'--queue-size ' if cfg.queue_size else 'the buffer of '}{wanted} lowered to {buffer} frame(s) for stream "
        f"{spec.name}: its {info.width}x{info.height} frames take {frame_bytes(info) / MB:.1f} MB each, and all "
        f"streams' buffers share --max-buffer-mb {cfg.max_buffer_mb:g}")
    pace = (info.fps or 30.0) if cfg.pace and not info.live else None
    return StreamPlan(spec.name, live, buffer, target, info.live or cfg.pace, total, cfg.max_frames, cfg.loop, pace,
                      cfg.latency_budget_ms, note)


def frame_bytes(info: SourceInfo) -> int:
    """A decoded frame: 8-bit BGR at the source's size (an image folder's first image; OpenCV's first frame)."""
    return max(1, info.width * info.height * 3)


def frames_within(wanted: int, info: SourceInfo, budget_bytes: float) -> int:
    """`wanted`, or as many of the source's frames as fit in `budget_bytes`; at least one, or nothing moves."""
    return max(1, min(wanted, int(budget_bytes // frame_bytes(info))))


def buffer_left(cfg: Config, streams: Iterable[tuple[StreamPlan, SourceInfo]]) -> float:
    """The bytes of --max-buffer-mb that these streams' buffers leave to a stream joining the run. A stream that
    left still counts (its slot stays for the report): a service whose streams come and go ends up giving new
    ones a single frame, never more than the bound."""
    held = sum(plan.buffer * frame_bytes(info) for plan, info in streams)
    return max(0.0, cfg.max_buffer_mb * MB - held)
