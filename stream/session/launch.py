"""What an engine must give the orchestrator once its model is loaded, and the local engine's launcher.

A launcher is a context manager over the loaded model: it yields a `Launched` (what was loaded, for the
dashboard and the report; how to build the engine; what the engine adds to the report) and releases the
model and everything it started when the run is over. The Ray engine's launcher is
stream.cluster.engine.launch_on_ray; the CLI chooses between them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from models.spec import ModelInfo
from stream.backends import BackendOptions, LoadRecord
from stream.config import Config
from stream.cores import available_cores
from stream.errors import UserError
from stream.media.sources import MAX_IMAGE_PIXELS, Source
from stream.media.streams import StreamSpec
from stream.observe.cpu import born_as
from stream.session.plan import RunPlan, model_is_serial_path, rest_of_frame_ms

PROBE_CALLS = 3  # model calls timed at load to check the plan's thread count


@dataclass(frozen=True)
class LoadedModel:
    """What was loaded, wherever: for the streams (labels, preprocessing), the dashboard and the report."""

    model: ModelInfo
    backend: str
    device: str
    precision: str
    load: LoadRecord
    warmup_s: float
    threads: int | None = None  # a CPU runtime's intra-op threads
    calls: int = 1  # model calls side by side (stream.pipeline.inference)


@dataclass
class Launched:
    loaded: LoadedModel
    engine: Callable  # (the run's totals, Outputs, Decisions or None) → an engine (stream.session.session.Engine)
    device_peak_mb: Callable[[], float | None] = lambda: None
    # The engine's use of a source the orchestrator opened: the local engine reads it; Ray only probed it.
    owned: Callable[[Source], Source | None] = lambda source: source
    add_to_report: Callable[[dict, object], None] = lambda report, outcome: None
    summary_lines: Callable[[dict], list[str]] = field(default=lambda report: [])


Launcher = Callable[[Config, list[StreamSpec], list[Source], RunPlan], object]  # a context manager of Launched


def open_stream(uri: str, max_image_pixels: int = MAX_IMAGE_PIXELS) -> Source:
    from stream.media.sources import open_source
    from stream.pipeline.capture import READ_TIMEOUT_S

    # A silent stream URL must give its read back within the stall limit, so it can be reconnected.
    with born_as("decode"):  # the decoder's helper threads: the decode stage's CPU (stream.observe.cpu)
        return open_source(uri, read_timeout_ms=int(READ_TIMEOUT_S * 1000), max_image_pixels=max_image_pixels)


def calibration_for(cfg: Config, specs: list[StreamSpec], sources: list[Source]):
    calibration = cfg.calibration_request()
    if calibration.path == "source":  # the run's own recording: calibrated on the very frames it will classify
        files = [spec.uri for spec, src in zip(specs, sources, strict=True) if not src.info.live]
        if not files:
            raise UserError("--calibration source needs a video file or image folder among the sources; "
                            "give --calibration PATH for live cameras")
        calibration = replace(calibration, path=files[0])
    return calibration


def backend_options(cfg: Config, plan: RunPlan, calibration) -> BackendOptions:
    """What the backend is told for this run (the local engine's and every Ray replica's alike): live
    sources get OpenVINO's latency hint, and the plan's thread count."""
    return BackendOptions.from_settings(cfg, batch=plan.batching.size, live=plan.live, threads=plan.threads,
                                        calibration=calibration)


@contextmanager
def launch_local(cfg: Config, specs: list[StreamSpec], sources: list[Source], plan: RunPlan) -> Iterator[Launched]:
    """The model in this process; the engine's threads read the sources the orchestrator opened."""
    from stream.backends import backend_class
    from stream.config import model_request
    from stream.pipeline.inference import local_inference
    from stream.pipeline.preprocess import make_preprocessor
    from stream.pipeline.render import Renderer
    from stream.session.local import LocalEngine

    batching = plan.batching
    options = backend_options(cfg, plan, calibration_for(cfg, specs, sources))
    request = model_request(cfg)
    print(f"loading {request.describe()} on {cfg.backend}...", flush=True)

    def load(threads: int | None):
        with born_as("inference_pool"):  # the runtime's own threads (its intra-op pool): the model's CPU
            loaded = backend_class(cfg.backend)(request, replace(options, threads=threads))
        try:
            with born_as("inference_pool"):  # some runtimes start their pool at the first inference
                seconds = loaded.warmup(batching.size, cfg.warmup)
                if batching.size > 1:  # a partial batch (a file's last, a quiet moment) must not pay for a new shape
                    seconds += loaded.warmup(1, min(cfg.warmup, 2))
        except BaseException:
            loaded.close()
            raise
        return loaded, seconds

    backend, warmup_s = load(plan.threads)
    record = backend.load
    calls = 1
    try:
        # The plan left cores to the rest of the pipeline (int8); on a CPU where the model is slow that starves it.
        rest = rest_of_frame_ms([s.info for s in sources], bool(cfg.output)) if (
            cfg.threads is None and plan.threads is not None and backend.device == "cpu") else None
        if rest is not None:
            with born_as("inference_pool"):
                wall, cpu = _model_ms(backend, batching.size)
            cores = available_cores()
            # Calls side by side on the threads the plan gave, where they make two or more (2 cores: 1 thread each,
            # measured); elsewhere the reload on every core, as measured before them.
            side_by_side = cores // plan.threads if getattr(backend, "parallel_calls", False) else 1
            if model_is_serial_path(wall, cpu, rest, cores):
                bounds = (f"the model takes {wall:.1f} ms a frame on {plan.threads} thread(s) against ~{rest:.0f} ms "
                          "of CPU for the rest of a frame: it bounds the run, so")
                if side_by_side >= 2:
                    calls = side_by_side
                    print(f"{bounds} {calls} calls run side by side", flush=True)
                else:
                    print(f"{bounds} it gets all {cores} cores", flush=True)
                    first = backend.load
                    backend.close()
                    backend = None
                    backend, more = load(None)
                    warmup_s += more
                    record = _both(first, backend.load)
        model = backend.model
        preprocessor = make_preprocessor(model.preprocess, backend.input_device, cfg.resize)

        def engine(totals, outputs, decisions=None) -> LocalEngine:
            # Preprocessing on the host overlaps the model (stream.pipeline.inference); on a GPU it is the device's.
            overlap = backend.input_device == "cpu"
            stage = local_inference(backend, preprocessor, list(model.categories), batching, overlap=overlap,
                                    calls=calls if overlap else 1)
            return LocalEngine(stage, Renderer(model.random_weights), batching, totals, plan.reconnect, outputs,
                               open_stream, cfg.keep_running, plan.health, decisions)

        loaded = LoadedModel(model, backend.name, backend.device, backend.precision, record, warmup_s,
                             getattr(backend, "threads", None), calls)
        yield Launched(loaded, engine, backend.device_peak_mb)
    finally:
        if backend is not None:
            backend.close()


def _both(first: LoadRecord, second: LoadRecord) -> LoadRecord:
    """Both loads of a reloaded model, as one: the report's build and cache tell what the first one did."""
    builds = [b for b in (first.build_s, second.build_s) if b is not None]
    return LoadRecord(first.weights_s + second.weights_s, sum(builds) if builds else None,
                      second.cache if first.cache == "hit" else first.cache, second.artifact)


def _model_ms(backend, batch: int) -> tuple[float, float]:
    """Wall time and process CPU per frame of a few model calls. Nothing else runs yet (the engine reads the
    sources later), so the process's CPU is the model's."""
    wall, cpu = time.perf_counter(), time.process_time()
    backend.warmup(batch, PROBE_CALLS)
    frames = batch * PROBE_CALLS
    return (time.perf_counter() - wall) * 1e3 / frames, (time.process_time() - cpu) * 1e3 / frames
