"""Command line: parse and merge settings, open the stages, run, report. Errors become one line."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from stream.config import BACKENDS, DROP_POLICIES, PRECISIONS, RESIZE_MODES, TRT_CONVERTERS, Config, load_toml, merge
from stream.errors import UserError

EXIT_SIGINT, EXIT_SIGTERM = 130, 143
EXIT_INCOMPLETE = 4
LAB_COMMANDS = ("bench", "eval")  # `run_stream.py bench|eval ...`: see stream/lab
# Batching amortises the weight stream of the fully connected layers: on the 2-core CPU, 720p, AlexNet,
# batch 8 against 1 gave ONNX Runtime 1.4× and PyTorch 1.8× the pipeline fps (README, Backends).
FILE_BATCH = 8


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + error
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    d = Config()
    p = OneLineParser(prog="run_stream.py", argument_default=argparse.SUPPRESS,
                description="Classify every frame of a camera, stream, video or images in real time.",
                epilog="Also: `run_stream.py bench --help` (speed, load, memory, numeric change) and "
                       "`run_stream.py eval --help` (top-1/top-5 accuracy on a labelled image set).")
    p.add_argument("--config", help="TOML file with the same keys as these flags (flags win)")
    p.add_argument("--source", help="camera index (0), video file, rtsp/http URL, image or image folder; "
                                    "default: a sample clip of real photographs")
    p.add_argument("--output", help="annotated video to write (.mp4, .avi, ...)")
    p.add_argument("--report", help="run report JSON to write (a summary is always printed)")
    p.add_argument("--predictions", help="JSON lines file, one line per processed frame")
    p.add_argument("--model", help=f"torchvision classification model or efficientnet_lite0 (default {d.model})")
    p.add_argument("--weights", help="imagenet (download once, cached), random, or a local state_dict file")
    p.add_argument("--backend", choices=BACKENDS,
                   help=f"inference backend; onnxruntime is the optimised CPU path (default {d.backend})")
    p.add_argument("--trt", dest="backend", action="store_const", const="tensorrt",
                   help="= --backend tensorrt (NVIDIA GPU; see requirements-gpu.txt)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="fp16 needs a CUDA GPU (default auto: fp16 for TensorRT, fp32 otherwise)")
    p.add_argument("--trt-converter", choices=TRT_CONVERTERS,
                   help="how the TensorRT engine is built: TensorRT's ONNX parser (default) or torch2trt")
    p.add_argument("--cache-dir", help="where exported ONNX models and TensorRT engines are kept "
                                       "(default ~/.cache/stream-classifier, or $STREAM_CLASSIFIER_CACHE)")
    p.add_argument("--resize", choices=RESIZE_MODES,
                   help="faithful (default): the model weights' own antialiased resize, as torchvision computes it; "
                        "fast: one bilinear warp without antialiasing, cheaper but it changes labels")
    p.add_argument("--threads", type=int, help="intra-op threads for the CPU backends (default: one per core)")
    p.add_argument("--batch", type=int, help=f"micro-batch size for the model (default: {FILE_BATCH} for files "
                                             "read losslessly, 1 for live sources and --pace)")
    p.add_argument("--queue-size", type=int, help=f"capture→inference queue length (default {d.queue_size})")
    p.add_argument("--drop-policy", choices=DROP_POLICIES,
                   help="latest: keep newest frames (live default); block: lossless (files default)")
    p.add_argument("--max-frames", type=int, help="stop after reading this many frames")
    p.add_argument("--loop", action="store_true", help="replay a file or image folder until stopped")
    p.add_argument("--pace", action="store_true",
                   help="read a file at its own fps, as a camera would deliver it (judge live use on a recording)")
    p.add_argument("--display", action=argparse.BooleanOptionalAction,
                   help="show a window (default: if a display exists)")
    p.add_argument("--dashboard", action=argparse.BooleanOptionalAction,
                   help="live terminal dashboard (default: when stdout is a terminal)")
    p.add_argument("--target-fps", type=float, help="real-time target (default: the source's fps, else 30)")
    p.add_argument("--latency-budget-ms", type=float,
                   help="p95 end-to-end latency a live run (or --pace) may reach and still be real-time "
                        "(default: 2 frame periods + the model's p95)")
    p.add_argument("--warmup", type=int, help=f"untimed warm-up iterations before the run (default {d.warmup})")
    p.add_argument("--status-every", type=float, help="seconds between plain status lines without a dashboard")
    return p


def _on_sigterm(signum, frame):
    from stream.pipeline import Terminated

    raise Terminated


def main(argv: list[str] | None = None, process_start: float | None = None) -> int:
    process_start = time.perf_counter() if process_start is None else process_start
    argv = sys.argv[1:] if argv is None else argv
    if threading_is_main():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if argv and argv[0] in LAB_COMMANDS:
            from stream.lab.cli import main as lab_main

            return lab_main(argv[0], argv[1:])
        return run(vars(build_parser().parse_args(argv)), process_start)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print("interrupted before the run started; nothing was processed", file=sys.stderr)
        return EXIT_SIGTERM if type(exc).__name__ == "Terminated" else EXIT_SIGINT
    except Exception as exc:  # noqa: BLE001 - one line for users; STREAM_DEBUG=1 for the traceback
        if os.environ.get("STREAM_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (rerun with STREAM_DEBUG=1 for details)",
              file=sys.stderr)
        return 1


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def run(args: dict, process_start: float) -> int:
    config_path = args.pop("config", None)
    display, dashboard = args.pop("display", None), args.pop("dashboard", None)
    for key, value in (("display", display), ("dashboard", dashboard)):
        if value is not None:
            args[key] = "on" if value else "off"
    cfg = merge(load_toml(config_path) if config_path else {}, args)

    from stream.backends import backend_class
    from stream.sinks import check_writable

    for flag, path in (("--output", cfg.output), ("--report", cfg.report), ("--predictions", cfg.predictions)):
        if path:
            check_writable(path, flag)
    backend_cls = backend_class(cfg.backend)  # fails fast, before any model is loaded
    if cfg.display == "on":
        from stream.sinks import WindowSink

        WindowSink.check()

    from stream.sources import open_source

    uri = cfg.source
    if uri is None:
        from stream.sample import sample_clip

        uri = str(sample_clip())
        print(f"no --source given: using the sample clip {uri}")
    source = open_source(uri)
    try:
        return _run_with_source(cfg, source, backend_cls, process_start)
    finally:
        source.close()


def _run_with_source(cfg: Config, source, backend_cls, process_start: float) -> int:
    from models.spec import ModelRequest
    from stream.backends import BackendOptions
    from stream.dashboard import LiveDashboard, StatusPrinter
    from stream.pipeline import PipelineOptions, run_pipeline
    from stream.preprocess import make_preprocessor
    from stream.render import Renderer
    from stream.report import LoadTimes, build_report, summary, write_report
    from stream.runinfo import RunInfo
    from stream.sinks import VideoFileSink

    info_src = source.info
    policy = cfg.drop_policy if cfg.drop_policy != "auto" else ("latest" if info_src.live or cfg.pace else "block")
    # An image folder's nominal 1 fps is a slideshow rate for the output video, not a target.
    target_fps = cfg.target_fps or (info_src.fps if info_src.kind in ("file", "camera", "url") else None) or 30.0

    batch = cfg.batch or (FILE_BATCH if policy == "block" else 1)
    print(f"loading {cfg.model} ({cfg.weights} weights) on {cfg.backend}...", flush=True)
    options = BackendOptions(cfg.device, cfg.precision, batch, cfg.cache_dir, cfg.threads, cfg.trt_converter)
    backend = backend_cls(ModelRequest(cfg.model, cfg.weights), options)
    model = backend.model
    try:
        warmup_s = backend.warmup(batch, cfg.warmup)
        if batch > 1:  # the last, partial batch of a file must not pay for a new shape
            warmup_s += backend.warmup(1, min(cfg.warmup, 2))
        info = RunInfo(info_src, model.name, model.weights, model.random_weights, backend.name,
                       backend.device, backend.precision, batch, policy, cfg.resize, model.preprocess.interpolation)
        sinks = _open_sinks(cfg, info_src)
        live_ui = cfg.dashboard == "on" or (cfg.dashboard == "auto" and sys.stdout.isatty())
        ui = LiveDashboard(info) if live_ui else StatusPrinter(cfg.status_every)
        load = LoadTimes(backend.load, warmup_s, time.perf_counter() - process_start)
        opts = PipelineOptions(cfg.queue_size, policy, batch, cfg.max_frames, cfg.loop, target_fps, cfg.pace,
                               cfg.latency_budget_ms)
        preprocessor = make_preprocessor(model.preprocess, backend.input_device, cfg.resize)
        outcome = run_pipeline(source, backend, preprocessor, list(model.categories),
                               Renderer(model.random_weights), sinks, ui, opts)
        written = next((s.written for s in sinks if isinstance(s, VideoFileSink)), None)
        report = build_report(info, outcome, load, written, process_start, backend.cuda_peak_mb())
    finally:
        backend.close()
    if getattr(source, "skipped", None):
        report["warnings"].append(f"{len(source.skipped)} unreadable image(s) skipped: {source.skipped[:3]}")
    if cfg.resize == "fast":
        report["warnings"].append("--resize fast: frames were resized without antialiasing, so labels can differ "
                                  "from what the model gives on its weights' own transform")
    truncated = _check_truncated(cfg, source, outcome, report)
    if cfg.report:
        write_report(report, cfg.report)
    print(summary(report))
    return _exit_status(outcome, report, truncated)


def _open_sinks(cfg: Config, info_src) -> list:
    from stream.sinks import PredictionsLog, VideoFileSink, WindowSink, display_available

    sinks = []
    try:
        if cfg.output:
            sinks.append(VideoFileSink(cfg.output, info_src.fps or 30.0, info_src.width, info_src.height))
        if cfg.predictions:
            sinks.append(PredictionsLog(cfg.predictions))
        if cfg.display == "on" or (cfg.display == "auto" and display_available()):
            sinks.append(WindowSink())
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def _check_truncated(cfg: Config, source, outcome, report: dict) -> str | None:
    """A file whose decoding stopped well before its container's end: the decodable part was processed.
    Returns the fault's message; a mere note (a nominal frame count) becomes a warning."""
    from stream.truncation import check_decoded

    info = source.info
    if outcome.status != "completed" or cfg.loop or cfg.max_frames is not None or info.kind != "file":
        return None
    check = check_decoded(info.uri, info.frame_count, info.fps, outcome.frames_read, source.last_pts_s)
    if check.message:
        report["warnings"].append(check.message)
    if check.truncated:
        report["status"] = "incomplete input"
        return check.message
    return None


def _exit_status(outcome, report: dict, truncated: str | None) -> int:
    from stream.pipeline import END_SIGTERM

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
