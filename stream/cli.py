"""Command line: parse and merge settings, open the stages, run, report. Errors become one line."""

from __future__ import annotations

import argparse
import os
import sys
import time

from models.card import CHANNELS, INTERPOLATIONS
from stream.argparsing import OneLineParser
from stream.backends import auto_precisions, offering, precision_choices
from stream.backends.settings import add_backend_flags
from stream.config import (
    BACKEND_CHOICES,
    CODECS,
    DROP_POLICIES,
    ENGINES,
    Config,
    load_toml,
    merge,
)
from stream.errors import Terminated, UserError
from stream.interrupts import EXIT_SIGINT, EXIT_SIGTERM, Interrupts
from stream.redact import install_log_filter, remember, scrub

LAB_COMMANDS = ("bench", "eval")  # `run_stream.py bench|eval ...`: see stream/lab


def build_parser() -> argparse.ArgumentParser:
    d = Config()
    p = OneLineParser(prog="run_stream.py", argument_default=argparse.SUPPRESS,
                description="Classify every frame of a camera, stream, video or images in real time.",
                epilog="Also: `run_stream.py bench --help` (speed, load, memory, numeric change) and "
                       "`run_stream.py eval --help` (top-1/top-5 accuracy on a labelled image set).")
    p.add_argument("--config", help="TOML file with the same keys as these flags (flags win)")
    p.add_argument("--source", action="append",
                   help="camera index (0), video file, rtsp/http URL, image or image folder; repeat it for several "
                        "streams; default: a sample clip of real photographs")
    p.add_argument("--sources", help="TOML file of [[source]] tables (uri, name, target_fps): one stream each")
    p.add_argument("--output", help="annotated video to write (.mp4, .avi, ...); with several streams put {stream} "
                                    "in the path (out/{stream}.mp4)")
    p.add_argument("--codec", choices=CODECS,
                   help="--output's codec (default auto: h264 for .mp4/.mov/.mkv, browser-playable, when PyAV has "
                        "libx264, else mp4v; mjpg for .avi, playable up to its last frame if the process is killed)")
    p.add_argument("--serve", metavar="[HOST:]PORT",
                   help="serve a live preview page, /api/status and Prometheus /metrics over HTTP (default host "
                        "127.0.0.1; any other host is reachable from elsewhere: add --serve-token)")
    p.add_argument("--serve-token", help="require this token of every --serve request but /healthz "
                                         "(Authorization: Bearer TOKEN, or ?token=TOKEN)")
    p.add_argument("--serve-allow-host", metavar="NAMES",
                   help="comma-separated host names the --serve server answers besides loopback names and the "
                        "address it listens on (a request naming any other Host is refused: DNS rebinding)")
    p.add_argument("--report", help="run report JSON to write (a summary is always printed)")
    p.add_argument("--predictions", help="JSON lines file, one line per processed frame (with its stream); "
                                         "{stream} in the path gives one file per stream")
    act = p.add_argument_group("labels you can act on (see README, Rules and events)")
    act.add_argument("--rules", metavar="FILE", help="TOML: how labels are smoothed into a steady label, and the "
                                                     "[[rule]]s whose labels fire events")
    act.add_argument("--events", metavar="FILE", help="JSON lines, one per event (start/end of a rule on a stream); "
                                                      "the durable record")
    act.add_argument("--segments", metavar="FILE", help="JSON lines, one per steady-label segment when it closes")
    act.add_argument("--mqtt", metavar="URL", help="mqtt://[user:pass@]host:port/prefix: events to PREFIX/events, "
                                                   "each stream's steady label retained at PREFIX/STREAM/label")
    act.add_argument("--webhook", action="append", metavar="URL",
                     help="POST each event as JSON to this URL, with retries (repeatable)")
    act.add_argument("--clips", metavar="DIR", help="folder for each event's clip (mp4 with pre- and post-roll, "
                                                    "rules with clip = true) and snapshot (JPEG)")
    act.add_argument("--clip-buffer-mb", type=float,
                     help=f"each stream's pre-roll buffer bound in MB of JPEG frames (default {d.clip_buffer_mb:g})")
    p.add_argument("--model", help=f"torchvision classification model, efficientnet_lite0, an ONNX file (x.onnx) or a "
                                   f"model card (x.toml; see README, Your own model) (default {d.model})")
    p.add_argument("--weights", help="imagenet (download once, cached), random, or a local state_dict file (a "
                                     "fine-tune with any number of classes: the head is built to fit)")
    own = p.add_argument_group("your own model (override the card's or the weights' own values)")
    own.add_argument("--labels", metavar="FILE", help="class names in output order: one per line, or a JSON list "
                                                      "(default: the weights' own, or class 0..N-1)")
    own.add_argument("--input-size", type=int, metavar="N",
                     help="the model's input size (default: read from the ONNX graph); resize = N / 0.875")
    own.add_argument("--mean", metavar="R,G,B", help="normalisation mean on the 0..1 scale, in the model's channel "
                                                     "order (default: ImageNet's)")
    own.add_argument("--std", metavar="R,G,B", help="normalisation std, as --mean (default: ImageNet's)")
    own.add_argument("--interpolation", choices=INTERPOLATIONS, help="resize filter (default bilinear for ONNX)")
    own.add_argument("--channels", choices=CHANNELS, help="the model's input channel order (default rgb)")
    p.add_argument("--backend", choices=BACKEND_CHOICES,
                   help="inference backend (default auto: the fastest installed for the device, OpenVINO then ONNX "
                        "Runtime then PyTorch on a CPU, TensorRT then PyTorch on an NVIDIA GPU; said at the start)")
    p.add_argument("--trt", dest="backend", action="store_const", const="tensorrt",
                   help="= --backend tensorrt (NVIDIA GPU; see requirements-gpu.txt)")
    p.add_argument("--precision", choices=precision_choices(),
                   help=f"fp16 needs a CUDA GPU; int8 ({', '.join(offering('precisions', 'int8'))}) is calibrated on "
                        f"real frames (default auto: {auto_precisions()})")
    add_backend_flags(p)
    p.add_argument("--batch", type=int, help="batch size for the model, filled across streams (default: 8 for "
                                             "files read losslessly; for live sources one per stream, up to 8)")
    p.add_argument("--batch-timeout-ms", type=float,
                   help="how long a partly filled batch waits for more frames (default: about one frame period "
                        "of the fastest live stream, at most 50 ms; 50 ms for files)")
    p.add_argument("--max-staleness-ms", type=float,
                   help="live frames older than this are dropped before inference (default 500)")
    p.add_argument("--reconnect", action=argparse.BooleanOptionalAction,
                   help="reconnect a lost or stalled live stream with backoff (default: on with several streams)")
    p.add_argument("--max-reconnects", type=int,
                   help="failed reconnect attempts in a row before a stream is given up (default: no limit)")
    p.add_argument("--frozen-after-s", type=float,
                   help=f"a live stream whose picture has not changed for this long is reported frozen, its labels "
                        f"flagged (default {d.frozen_after_s:g}; 0: never)")
    p.add_argument("--blank-after-s", type=float,
                   help=f"a live stream whose picture has had no contrast (black, covered) this long is reported "
                        f"blank, its labels flagged (default {d.blank_after_s:g}; 0: never)")
    p.add_argument("--reconnect-frozen", action="store_true",
                   help="reconnect a stream once it is frozen, as if it had stalled (with reconnecting on)")
    p.add_argument("--queue-size", type=int,
                   help="frames buffered per stream (default: 2 for live streams, 8 for files)")
    p.add_argument("--max-buffer-mb", type=float,
                   help=f"bound on the frames buffered by all streams together, in MB (default {d.max_buffer_mb:g})")
    p.add_argument("--max-image-pixels", type=int,
                   help=f"refuse images larger than this (width x height) before decoding them "
                        f"(default {d.max_image_pixels})")
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
    p.add_argument("--keep-running", action="store_true",
                   help="stay up with no stream at all, until Ctrl-C or SIGTERM (a service waiting for cameras); "
                        "without it the run ends when its last stream does")
    p.add_argument("--persist", action="store_true",
                   help="rewrite the --sources file after each stream added or removed over the REST API, so a "
                        "restart finds the same cameras")
    p.add_argument("--engine", choices=ENGINES,
                   help="local (default): threads in this process; ray: the classifier as Ray Serve replicas "
                        "batching every stream's frames, each stream an actor (see README, Scaling out)")
    p.add_argument("--ray-address", help="--engine ray: join this cluster (auto, HOST:PORT, ray://HOST:PORT); "
                                         "default: start Ray on this machine for the run")
    p.add_argument("--replicas", type=int, help=f"--engine ray: classifier replicas (default {d.replicas})")
    p.add_argument("--replica-cpus", type=float,
                   help=f"--engine ray: CPUs reserved per replica (default {d.replica_cpus:g})")
    p.add_argument("--replica-gpus", type=float,
                   help=f"--engine ray: GPUs per replica, e.g. 1 with --trt (default {d.replica_gpus:g})")
    return p


def main(argv: list[str] | None = None, process_start: float | None = None) -> int:
    process_start = time.perf_counter() if process_start is None else process_start
    argv = sys.argv[1:] if argv is None else argv
    interrupts = Interrupts()
    install_log_filter()
    if threading_is_main():
        interrupts.install()
    try:
        if argv and argv[0] in LAB_COMMANDS:
            from stream.lab.cli import main as lab_main

            return lab_main(argv[0], argv[1:])
        return run(vars(build_parser().parse_args(argv)), process_start, interrupts)
    except UserError as exc:
        print(f"error: {scrub(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print("interrupted before the run started; nothing was processed", file=sys.stderr)
        return EXIT_SIGTERM if isinstance(exc, Terminated) else EXIT_SIGINT
    except Exception as exc:  # noqa: BLE001 - one line for users; STREAM_DEBUG=1 for the traceback
        if os.environ.get("STREAM_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {scrub(str(exc))} (rerun with STREAM_DEBUG=1 for details)",
              file=sys.stderr)
        return 1


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def run(args: dict, process_start: float, interrupts=None) -> int:
    config_path = args.pop("config", None)
    for key in ("display", "dashboard", "reconnect"):
        value = args.pop(key, None)
        if value is not None:
            args[key] = "on" if value else "off"
    cfg = merge(load_toml(config_path) if config_path else {}, args)
    remember(cfg.serve_token)
    from stream.session.orchestrator import run_streams

    if cfg.engine == "ray":
        from stream.cluster.engine import launch_on_ray

        return run_streams(cfg, process_start, interrupts, launch_on_ray)
    return run_streams(cfg, process_start, interrupts)
