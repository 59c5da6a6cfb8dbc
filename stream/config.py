"""Run settings: defaults < `--config FILE` (TOML, same keys as the flags) < command-line flags."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from models.card import resolve
from models.spec import ModelRequest
from stream.backends import AUTO, check_offered
from stream.backends import BACKEND_NAMES as BACKENDS
from stream.backends.settings import BackendSettings
from stream.backends.torch_backend import check_runs
from stream.errors import UserError

DROP_POLICIES = ("auto", "latest", "block")
TRISTATE = ("auto", "on", "off")
CODECS = ("auto", "h264", "mp4v", "mjpg")  # stream.outputs.video_writer
ENGINES = ("local", "ray")
DECISION_KEYS = ("rules", "events", "segments", "mqtt", "webhook", "clips")  # the decisions stage's outputs
BACKEND_CHOICES = (AUTO, *BACKENDS)


@dataclass(frozen=True)
class Config(BackendSettings):  # the backend's settings first: device, precision, threads, cache_dir, ...
    source: tuple[str, ...] = ()  # --source, repeatable; none: the bundled sample clip (unless --sources)
    sources: str | None = None  # a TOML file of [[source]] tables (stream.media.streams)
    output: str | None = None
    report: str | None = None
    predictions: str | None = None
    model: str = "alexnet"  # a torchvision name, efficientnet_lite0, an ONNX file or a model card (models.card)
    weights: str = "imagenet"
    labels: str | None = None  # the model's class names: a text file, one per line, or a JSON list
    input_size: int | None = None  # the model's input (crop) size; an ONNX graph's own by default
    mean: str | None = None  # "r,g,b" on the 0..1 scale, in the model's channel order
    std: str | None = None
    interpolation: str | None = None  # bilinear | bicubic | nearest
    channels: str | None = None  # the model's input channel order: rgb | bgr
    backend: str = "auto"  # auto: the fastest installed for the device (stream.backends.registry.choose_backend)
    batch: int | None = None  # None: 8 for a file read losslessly (throughput), 1 for live sources (latency)
    queue_size: int | None = None  # frames buffered per stream; None: 2 for live streams, 8 for files
    max_buffer_mb: float = 512.0  # all streams' buffered frames together, in MB of pixels (bounds --queue-size)
    max_image_pixels: int = 100_000_000  # an image source larger than this is refused before it is decoded
    drop_policy: str = "auto"
    max_frames: int | None = None
    batch_timeout_ms: float | None = None  # None: about a frame period of the fastest live stream
    max_staleness_ms: float | None = None  # None: 500 ms for live streams
    reconnect: str = "auto"  # auto: on when there are several streams
    frozen_after_s: float = 10.0  # a live picture unchanged this long is "frozen" (0: never judged)
    blank_after_s: float = 5.0  # a live picture without contrast this long is "blank" (0: never judged)
    reconnect_frozen: bool = False  # reconnect a frozen stream (needs reconnecting on)
    max_reconnects: int | None = None  # consecutive failed attempts before a stream fails; None: no limit
    loop: bool = False
    pace: bool = False  # read a file at its own fps, like a live camera
    display: str = "auto"
    dashboard: str = "auto"
    target_fps: float | None = None  # None: the source's own fps, else 30
    latency_budget_ms: float | None = None  # None: 2 frame periods + the model's p95 (stream.observe.realtime)
    warmup: int = 5
    status_every: float = 5.0
    serve: str | None = None  # [HOST:]PORT of the browser preview, /api/status and /metrics (stream.web)
    serve_token: str | None = None  # required of every request to --serve but /healthz, when given
    serve_allow_host: str | None = None  # comma-separated Host names --serve answers beyond loopback and its own
    codec: str = "auto"  # --output's codec: h264 for .mp4 when PyAV has libx264, mjpg for .avi
    engine: str = "local"  # local: threads in this process; ray: Serve replicas and stream actors (stream.cluster)
    ray_address: str | None = None  # None: start Ray on this machine; "auto" or HOST:PORT: join a cluster
    replicas: int = 1  # classifier replicas (--engine ray)
    replica_cpus: float = 1.0  # CPUs Ray reserves for each replica
    replica_gpus: float = 0.0  # GPUs for each replica (1 for TensorRT/CUDA)
    keep_running: bool = False  # a service: up with no stream at all, until SIGINT/SIGTERM; streams join and leave
    persist: bool = False  # rewrite --sources after each stream added or removed (the REST API), for a restart
    rules: str | None = None  # a TOML file: smoothing and [[rule]] tables (stream.decisions.rules)
    events: str | None = None  # JSON lines: one per rule event, the durable record
    segments: str | None = None  # JSON lines: one per closed label segment
    mqtt: str | None = None  # mqtt://[user:pass@]host:port/prefix (stream.outputs.mqtt)
    webhook: tuple[str, ...] = ()  # URLs each event is POSTed to as JSON, repeatable
    clips: str | None = None  # a folder for event clips (mp4 with pre/post-roll) and snapshots
    clip_buffer_mb: float = 64.0  # each stream's pre-roll buffer bound, in MB of encoded frames


FIELD_TYPES = {f.name: f.type for f in fields(Config)}


def _check_type(key: str, value, where: str):
    kind = FIELD_TYPES[key]
    if key in ("source", "webhook"):  # one URI, or a list of them
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) and v for v in items):
            raise UserError(f"{where}: {key} = {value!r} should be a string or a list of strings")
        return tuple(items)
    if value is None and "None" in kind:
        return None
    if kind.startswith("bool"):
        ok = isinstance(value, bool)
    elif kind.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind.startswith("float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if key in ("display", "dashboard", "reconnect") and isinstance(value, bool):
        return "on" if value else "off"
    if not ok:
        raise UserError(f"{where}: {key} = {value!r} should be of type {kind.replace(' | None', '')}")
    return value


def read_toml(path: str, flag: str) -> dict:
    """A TOML file's tables, or a one-line error naming the flag that gave it."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{flag} {path}: no such file")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{flag} {path}: not valid TOML ({exc})") from None


def load_toml(path: str) -> dict:
    data = read_toml(path, "--config")
    unknown = sorted(set(data) - set(FIELD_TYPES))
    if unknown:
        raise UserError(f"--config {path}: unknown key(s) {', '.join(unknown)}; "
                        f"valid keys: {', '.join(FIELD_TYPES)}")
    return {k: _check_type(k, v, f"--config {path}") for k, v in data.items()}


def merge(file_values: dict, flag_values: dict) -> Config:
    """Flags win over the config file, which wins over the defaults; the result is validated."""
    cfg = replace(Config(), **file_values)
    cfg = replace(cfg, **{k: _check_type(k, v, "flag --" + k.replace("_", "-")) for k, v in flag_values.items()})
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    def bad(key: str, value, fix: str) -> UserError:
        return UserError(f"bad value for {key.replace('_', '-')}: {value!r}; {fix}")

    for f in fields(cfg):  # nan passes every `not low <= x <= high` test the wrong way round; inf is no setting
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise bad(f.name, value, "use a finite number")
    if cfg.batch is not None and not 1 <= cfg.batch <= 256:
        raise bad("batch", cfg.batch, "use a batch size from 1 to 256")
    if cfg.queue_size is not None and not 1 <= cfg.queue_size <= 1024:
        raise bad("queue_size", cfg.queue_size, "use a queue size from 1 to 1024")
    if not 1 <= cfg.max_buffer_mb <= 1_000_000:
        raise bad("max_buffer_mb", cfg.max_buffer_mb, "use megabytes from 1 to 1000000")
    if not 1 <= cfg.clip_buffer_mb <= 100_000:
        raise bad("clip_buffer_mb", cfg.clip_buffer_mb, "use megabytes from 1 to 100000")
    if not 1 <= cfg.max_image_pixels <= 10**10:
        raise bad("max_image_pixels", cfg.max_image_pixels, "use a pixel count from 1 to 10000000000")
    if cfg.max_frames is not None and not 1 <= cfg.max_frames <= 10**12:
        raise bad("max_frames", cfg.max_frames, "use a positive number of frames")
    if not 0 <= cfg.warmup <= 1000:
        raise bad("warmup", cfg.warmup, "use 0 to 1000 warm-up iterations")
    if cfg.target_fps is not None and not 0 < cfg.target_fps <= 1000:
        raise bad("target_fps", cfg.target_fps, "use a frame rate above 0")
    if cfg.batch_timeout_ms is not None and not 0 <= cfg.batch_timeout_ms <= 600_000:
        raise bad("batch_timeout_ms", cfg.batch_timeout_ms, "use milliseconds from 0 to 600000")
    if cfg.max_staleness_ms is not None and not 0 < cfg.max_staleness_ms <= 600_000:
        raise bad("max_staleness_ms", cfg.max_staleness_ms, "use milliseconds above 0 (0 would drop every live frame)")
    for key in ("frozen_after_s", "blank_after_s"):
        if not 0 <= getattr(cfg, key) <= 86_400:
            raise bad(key, getattr(cfg, key), "use seconds from 0 (never) to 86400")
    if cfg.max_reconnects is not None and not 0 <= cfg.max_reconnects <= 10**9:
        raise bad("max_reconnects", cfg.max_reconnects, "use 0 or more attempts")
    if cfg.latency_budget_ms is not None and not 0 < cfg.latency_budget_ms <= 600_000:
        raise bad("latency_budget_ms", cfg.latency_budget_ms, "use a positive number of milliseconds")
    if not 0 < cfg.status_every <= 1_000_000:  # the lab's whole-pipeline runs ask for none: 100000
        raise bad("status_every", cfg.status_every, "use seconds above 0, up to 1000000")
    for key, choices in (("drop_policy", DROP_POLICIES), ("backend", BACKEND_CHOICES), ("codec", CODECS),
                         ("display", TRISTATE), ("dashboard", TRISTATE), ("reconnect", TRISTATE)):
        if getattr(cfg, key) not in choices:
            raise bad(key, getattr(cfg, key), f"choose one of {', '.join(choices)}")
    cfg.check_values()
    if cfg.backend != AUTO:  # auto is checked once chosen (stream.session.orchestrator)
        check_offered(cfg.backend, precision=cfg.precision, device=cfg.device, hint=cfg.openvino_hint,
                      converter=cfg.trt_converter)
    if cfg.precision == "fp16" and cfg.device == "cpu":
        raise UserError("--precision fp16 needs a CUDA GPU; use --precision fp32 on CPU")
    if cfg.serve is not None:
        from stream.web.address import parse_serve

        parse_serve(cfg.serve)
    _validate_engine(cfg, bad)
    if cfg.persist and not cfg.sources:
        raise UserError("--persist needs --sources FILE: the file it keeps listing the streams added and removed")
    if cfg.serve_allow_host is not None and cfg.serve is None:
        raise UserError("--serve-allow-host needs --serve")
    if cfg.serve_token is not None and (cfg.serve is None or not cfg.serve_token.strip()):
        raise UserError("--serve-token needs --serve and a non-empty token")
    if not cfg.weights:
        raise bad("weights", cfg.weights, "use imagenet, random or a path to a state_dict file")
    request = model_request(cfg)  # a card, an ONNX graph and labels are read and checked before anything loads
    if cfg.backend == "torch":
        check_runs(request)


def model_request(cfg: Config) -> ModelRequest:
    """The model the run asked for, with what its card and flags say (read once per process; models.card)."""
    return resolve(cfg.model, cfg.weights, labels=cfg.labels, input_size=cfg.input_size, mean=cfg.mean, std=cfg.std,
                   interpolation=cfg.interpolation, channels=cfg.channels)


def _validate_engine(cfg: Config, bad) -> None:
    if cfg.engine not in ENGINES:
        raise bad("engine", cfg.engine, f"choose one of {', '.join(ENGINES)}")
    if not 1 <= cfg.replicas <= 256:
        raise bad("replicas", cfg.replicas, "use 1 to 256 replicas")
    if not 0 <= cfg.replica_cpus <= 1024:
        raise bad("replica_cpus", cfg.replica_cpus, "use 0 or more CPUs per replica")
    if not 0 <= cfg.replica_gpus <= 64:
        raise bad("replica_gpus", cfg.replica_gpus, "use 0 or more GPUs per replica (fractions share one)")
    if cfg.engine == "local":
        given = [k for k in ("ray_address", "replicas", "replica_cpus", "replica_gpus")
                 if getattr(cfg, k) != getattr(Config(), k)]
        if given:
            raise UserError(f"--{given[0].replace('_', '-')} needs --engine ray")
        return
    if cfg.ray_address is not None and not cfg.ray_address.strip():
        raise bad("ray_address", cfg.ray_address, "use auto, HOST:PORT or ray://HOST:PORT")
    decided = [k for k in DECISION_KEYS if getattr(cfg, k)]
    if decided:
        raise UserError(f"--{decided[0].replace('_', '-')} is not available with --engine ray yet; the stream actors "
                        "label their frames on their nodes (use --engine local)")
    if cfg.serve is not None:
        raise UserError("--serve is not available with --engine ray yet; the stream actors' frames stay on "
                        "their nodes (use --output, the dashboard and --report)")
    if cfg.display == "on":
        raise UserError("--display needs the local engine: stream actors have no window; use --output")
