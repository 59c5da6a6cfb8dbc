"""One run from settings to exit status: open the streams, load the model, plan, run, report.

Everything a user can get wrong fails here before the model loads, as one line (stream.errors).
"""

from __future__ import annotations

import sys
import time

from stream.config import Config
from stream.errors import UserError

EXIT_INCOMPLETE = 4


def run_streams(cfg: Config, process_start: float, interrupts=None) -> int:
    from stream.backends import backend_class
    from stream.media.streams import StreamSpec, output_path, stream_specs
    from stream.outputs.sinks import WindowSink, check_writable

    specs = stream_specs(list(cfg.source), cfg.sources)
    if not specs:
        from stream.media.sample import sample_clip

        uri = str(sample_clip(cfg.cache_dir))
        print(f"no --source given: using the sample clip {uri}")
        specs = [StreamSpec(uri, "sample")]
    for flag, template in (("--output", cfg.output), ("--predictions", cfg.predictions)):
        for spec in specs:
            path = output_path(template, spec.name, len(specs), flag)
            if path:
                check_writable(path, flag)
    if cfg.report:
        check_writable(cfg.report, "--report")
    _check_codec(cfg, specs)
    backend_cls = backend_class(cfg.backend)  # fails fast, before any model is loaded
    if cfg.engine == "ray":
        from stream.cluster.engine import run_on_ray

        return run_on_ray(cfg, specs, process_start, interrupts)
    if cfg.display == "on":
        WindowSink.check()
    sources, busy = [], set()  # busy: sources a capture thread that missed its join may still be reading
    server = None
    try:
        for spec in specs:
            sources.append(_open(spec.uri))
        server = _serve(cfg, specs)
        return _run(cfg, specs, sources, backend_cls, process_start, busy, interrupts, server)
    finally:
        if server is not None:
            server.stop()
        for source in sources:
            if id(source) not in busy:
                source.close()


def _check_codec(cfg: Config, specs) -> None:
    from stream.media.streams import output_path
    from stream.outputs.video_writer import choose_codec

    for spec in specs:
        path = output_path(cfg.output, spec.name, len(specs), "--output")
        note = choose_codec(path, cfg.codec).note if path else None
        if note:
            print(f"note: {note}", file=sys.stderr)


def _serve(cfg: Config, specs):
    """The --serve server, listening before the model loads (a busy port fails fast); None without --serve."""
    if cfg.serve is None:
        return None
    from stream.web.address import exposure_warning, parse_serve
    from stream.web.server import PreviewServer

    address = parse_serve(cfg.serve)
    warning = exposure_warning(address, cfg.serve_token)
    if warning:
        print(warning, file=sys.stderr)
    server = PreviewServer(address, [s.name for s in specs], cfg.serve_token)
    server.start()
    print(f"serving {server.url} (live preview, /api/status, /metrics)", flush=True)
    return server


def _open(uri: str):
    from stream.media.sources import open_source
    from stream.pipeline.capture import READ_TIMEOUT_S

    # A silent stream URL must give its read back within the stall limit, so it can be reconnected.
    return open_source(uri, read_timeout_ms=int(READ_TIMEOUT_S * 1000))


def _run(cfg: Config, specs, sources, backend_cls, process_start: float, busy: set, interrupts, server) -> int:
    from models.spec import ModelRequest
    from stream.backends.onnxruntime_backend import available_cores
    from stream.observe.dashboard import LiveDashboard, StatusPrinter
    from stream.observe.report import LoadTimes, build_report, summary, write_report
    from stream.observe.runinfo import RunInfo
    from stream.outputs.sinks import Outputs, display_available, open_sinks
    from stream.pipeline.preprocess import make_preprocessor
    from stream.pipeline.render import Renderer
    from stream.session.local import Pipeline, StreamInput, execute
    from stream.session.plan import plan_run

    plan = plan_run(cfg, specs, [s.info for s in sources], available_cores())
    batch = plan.batching.size
    print(f"loading {cfg.model} ({cfg.weights} weights) on {cfg.backend}...", flush=True)
    options = backend_options(cfg, plan, _calibration(cfg, specs, sources))
    backend = backend_cls(ModelRequest(cfg.model, cfg.weights), options)
    model = backend.model
    try:
        warmup_s = backend.warmup(batch, cfg.warmup)
        if batch > 1:  # a partial batch (a file's last, a quiet moment across streams) must not pay for a new shape
            warmup_s += backend.warmup(1, min(cfg.warmup, 2))
        policies = ["latest" if p.live else "block" for p in plan.streams]
        info = RunInfo(sources[0].info, model.name, model.weights, model.random_weights, backend.name,
                       backend.device, backend.precision, batch, policies[0], cfg.resize,
                       model.preprocess.interpolation,
                       tuple((s.name, src.info, pol) for s, src, pol in zip(specs, sources, policies, strict=True)))
        window = cfg.display == "on" or (cfg.display == "auto" and display_available())
        sinks = open_sinks(Outputs(cfg.output, cfg.predictions, window, cfg.codec), [s.name for s in specs],
                           [s.info for s in sources])
        live_ui = cfg.dashboard == "on" or (cfg.dashboard == "auto" and sys.stdout.isatty())
        ui = LiveDashboard(info) if live_ui else StatusPrinter(cfg.status_every)
        if server is not None:
            from stream.web.server import ServedUi

            for spec, stream_sinks in zip(specs, sinks, strict=True):
                stream_sinks.append(server.frames[spec.name])
            ui = ServedUi(ui, server)
        load = LoadTimes(backend.load, warmup_s, time.perf_counter() - process_start)
        try:
            preprocessor = make_preprocessor(model.preprocess, backend.input_device, cfg.resize)
            inputs = [StreamInput(p, src, sk, (lambda uri=spec.uri: _open(uri)) if src.info.live else None)
                      for p, src, sk, spec in zip(plan.streams, sources, sinks, specs, strict=True)]
            pipeline = Pipeline(inputs, backend, preprocessor, list(model.categories),
                                Renderer(model.random_weights), ui, plan.batching, plan.reconnect)
        except BaseException:  # nothing ran: still leave finalised files and a usable terminal
            for closer in dict.fromkeys([*(s.close for sk in sinks for s in sk), ui.close]):
                closer()
            raise
        outcome = execute(pipeline, interrupts)
        summaries = [[s.summary() for s in sk] for sk in sinks]
        written = [next((s["written"] for s in sk if s["kind"] == "video"), None) for sk in summaries]
        report = build_report(info, outcome, load, written, process_start, backend.device_peak_mb())
    finally:
        backend.close()
    for stream, source in zip(outcome.streams, sources, strict=True):
        if stream.thread_alive:
            busy.update({id(source), id(stream.source)})
        elif stream.source is not source:
            stream.source.close()  # a reconnected source belongs to the run, not the caller
    _warnings(cfg, sources, report)
    truncated = _check_truncated(cfg, outcome, report)
    if cfg.report:
        write_report(report, cfg.report)
    print(summary(report))
    return _exit_status(outcome, report, truncated)


def backend_options(cfg: Config, plan, calibration):
    """What the backend is told for this run (the local engine's and every Ray replica's alike): live
    sources get OpenVINO's latency hint, and the plan's thread count."""
    from stream.backends import BackendOptions

    hint = "latency" if plan.live and cfg.openvino_hint == "auto" else cfg.openvino_hint
    return BackendOptions(cfg.device, cfg.precision, plan.batching.size, cfg.cache_dir, plan.threads,
                          cfg.trt_converter, calibration, hint)


def _calibration(cfg: Config, specs, sources):
    from stream.backends.quantize import Calibration

    path = cfg.calibration
    if path == "source":  # the run's own recording: calibrated on the very frames it will classify
        files = [spec.uri for spec, src in zip(specs, sources, strict=True) if not src.info.live]
        if not files:
            raise UserError("--calibration source needs a video file or image folder among the sources; "
                            "give --calibration PATH for live cameras")
        path = files[0]
    return Calibration(path, cfg.calibration_frames, cfg.calibration_method)


def _warnings(cfg: Config, sources, report: dict) -> None:
    for source in sources:
        skipped = getattr(source, "skipped", None)
        if skipped:
            report["warnings"].append(f"{len(skipped)} unreadable image(s) skipped: {skipped[:3]}")
    if cfg.resize == "fast":
        report["warnings"].append("--resize fast: frames were resized without antialiasing, so labels can differ "
                                  "from what the model gives on its weights' own transform")


def _check_truncated(cfg: Config, outcome, report: dict) -> str | None:
    """A file whose decoding stopped well before its container's end: the decodable part was processed.
    Returns the fault's message; a mere note (a nominal frame count) becomes a warning."""
    if outcome.status != "completed" or cfg.loop or cfg.max_frames is not None:
        return None
    faults = []
    for stream in outcome.streams:
        check = stream.source.decode_check(stream.frames_read)
        if check is None:
            continue
        if check.message:
            report["warnings"].append(check.message)
        if check.truncated:
            faults.append(check.message)
    if faults:
        report["status"] = "incomplete input"
        return "; ".join(faults)
    return None


def _exit_status(outcome, report: dict, truncated: str | None) -> int:
    from stream.interrupts import END_SIGTERM, EXIT_SIGINT, EXIT_SIGTERM

    if outcome.status == "interrupted":
        print(f"interrupted ({outcome.end_reason}): outputs hold the {report['frames']['shown']} frames "
              "processed so far", file=sys.stderr)
        return EXIT_SIGTERM if outcome.end_reason == END_SIGTERM else EXIT_SIGINT
    if outcome.error is not None:
        err = outcome.error
        if isinstance(err, UserError):
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code
        print(f"error during the run: {type(err).__name__}: {err} "
              "(outputs hold the frames processed so far)", file=sys.stderr)
        return 1
    if truncated:
        print(f"error: {truncated}", file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0
