"""The usual CPU choice, measured beside the project in one run: an Open Model Zoo-style OpenVINO loop.

    python scripts/peer_openvino.py                      # peer vs project, AlexNet, sample clip, 3 rounds
    python scripts/peer_openvino.py --model efficientnet_lite0 --weights imagenet --rounds 5
    python scripts/peer_openvino.py --peer-only          # just the peer loop, one JSON line

The peer does what Open Model Zoo's `classification_demo` does with model_api: frames read by a reader
thread into a small queue, resized on the host (shorter side to 256, centre crop 224, bilinear, no
antialiasing), colour conversion and mean/std folded into the model with OpenVINO's PrePostProcessor,
batch-1 requests kept in flight through an `AsyncInferQueue` compiled with the THROUGHPUT hint, results
drawn in frame order and written with OpenCV's mp4v writer. It runs the project's own fp32 ONNX export
of the same weights, so only the loops differ.

The project runs `run_stream.py` on the same clip, video written (mp4v like the peer unless `--codec h264`),
for each backend/precision, at batch 1 (as a live camera is run) and batch 8 (a file's default). Peer and
project runs alternate in rounds, each a fresh process, the peer first in odd rounds and last in even ones,
so the machine's drift hits both; the table gives medians, the ratio to the peer's median, and the median
(and range) of each round's own project/peer ratio, which a slow spell shared by a round's runs does not
move. Project fps is the report's `fps.pipeline` (frames over wall time, warm-up excluded); the peer's is
frames over the wall time of its loop, the same span.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PEER = "peer: OpenVINO async, batch 1"
CONFIGS = [(backend, precision, batch) for batch in (1, 8) for backend in ("onnxruntime", "openvino")
           for precision in ("fp32", "int8")]


def peer(clip: str, onnx_path: str, spec, categories: list[str], frames: int, out_path: str,
         threads: int | None) -> dict:
    import cv2
    import numpy as np
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints
    from openvino.preprocess import ColorFormat, PrePostProcessor

    core = ov.Core()
    started = time.perf_counter()
    model = core.read_model(onnx_path)
    model.reshape([1, 3, spec.crop, spec.crop])
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB) \
        .mean([m * 255 for m in spec.mean]).scale([s * 255 for s in spec.std])
    config = {hints.performance_mode: hints.PerformanceMode.THROUGHPUT,
              hints.inference_precision: ov.Type.f32, hints.dynamic_quantization_group_size: 0}
    if threads:
        config[props.inference_num_threads] = threads
    compiled = core.compile_model(ppp.build(), "CPU", config)
    jobs = int(compiled.get_property(props.optimal_number_of_infer_requests))
    load_s = time.perf_counter() - started

    frames_q: queue.Queue = queue.Queue(maxsize=4)

    def reader() -> None:
        cap = cv2.VideoCapture(clip)
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                cap.release()
                cap = cv2.VideoCapture(clip)  # looped, as the project's --loop does
                continue
            frames_q.put(frame)
            n += 1
            if n >= frames:
                break
        cap.release()
        frames_q.put(None)

    results: dict[int, tuple] = {}
    lock = threading.Condition()

    def done(request, userdata) -> None:
        index, frame = userdata
        with lock:
            results[index] = (frame, request.get_output_tensor(0).data[0].copy())
            lock.notify()

    infer_queue = ov.AsyncInferQueue(compiled, jobs)
    infer_queue.set_callback(done)
    threading.Thread(target=reader, daemon=True).start()
    first = frames_q.get()
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (width, height))
    scale = spec.resize / min(height, width)
    size = (round(width * scale), round(height * scale))
    top, left = (size[1] - spec.crop) // 2, (size[0] - spec.crop) // 2

    def submit(index: int, frame) -> None:
        small = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
        crop = np.ascontiguousarray(small[top:top + spec.crop, left:left + spec.crop])
        infer_queue.start_async({0: crop[None]}, (index, frame))

    def show(index: int) -> None:
        frame, logits = results.pop(index)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        for row, k in enumerate(np.argsort(-p)[:5]):
            cv2.putText(frame, f"{categories[k]} {p[k]:.2f}", (10, 30 + 28 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.8,
                        (0, 255, 0), 2)
        writer.write(frame)

    # The demo's own order (classification_demo.py's main loop): show every completed result first, then read and
    # submit a frame when a request is free, else wait for one. Submitting first would, on a live camera whose
    # frames come slower than the model runs, leave every result to the end of the run.
    loop_start = time.perf_counter()
    submitted, shown, pending, ended = 0, 0, first, False
    while True:
        with lock:
            ready = shown in results
        if ready:
            show(shown)
            shown += 1
            continue
        if not ended and infer_queue.is_ready():
            frame = pending if pending is not None else frames_q.get()
            pending = None
            if frame is None:
                ended = True
            else:
                submit(submitted, frame)
                submitted += 1
            continue
        if ended and shown == submitted:
            break
        with lock:
            lock.wait_for(lambda i=shown: i in results, timeout=0.01)
    infer_queue.wait_all()
    writer.release()
    wall = time.perf_counter() - loop_start
    return {"fps": shown / wall, "frames": shown, "wall_s": wall, "load_s": load_s, "requests": jobs}


def project(clip: str, model: str, weights: str, backend: str, precision: str, batch: int, frames: int,
            cache: str, work: Path, codec: str) -> dict:
    report = work / f"{backend}-{precision}-b{batch}.json"
    cmd = [sys.executable, str(ROOT / "run_stream.py"), "--source", clip, "--loop", "--max-frames", str(frames),
           "--model", model, "--weights", weights, "--backend", backend, "--precision", precision,
           "--batch", str(batch), "--drop-policy", "block", "--output", str(work / "project.mp4"), "--codec", codec,
           "--report", str(report), "--cache-dir", cache, "--no-display", "--no-dashboard"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    r = json.loads(report.read_text())
    return {"fps": r["fps"]["pipeline"], "frames": r["frames"]["shown"], "first_frame_s": r["load"]["first_frame_s"],
            "peak_rss_mb": r["memory"]["peak_rss_mb"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="alexnet")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--clip", help="video (default: the sample clip, 720p)")
    ap.add_argument("--frames", type=int, default=540)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache-dir", help="artifact cache (default: a fresh one, built before the first round)")
    ap.add_argument("--threads", type=int, help="OpenVINO threads for the peer (default: its own choice)")
    ap.add_argument("--codec", default="mp4v", choices=("mp4v", "h264"),
                    help="the project's video codec (default mp4v, the peer's own, so only the loops differ)")
    ap.add_argument("--peer-only", action="store_true")
    ap.add_argument("--project", action="append", metavar="BACKEND:PRECISION:BATCH",
                    help="the project's configurations to run (repeatable; default: all eight)")
    ap.add_argument("--peer-precision", default="fp32", choices=("fp32", "int8"),
                    help="the peer's model: the project's fp32 export (default) or its own int8 model (the same "
                         "cached Q/DQ ONNX the project runs, calibrated the same way)")
    args = ap.parse_args()

    from models.spec import ModelRequest
    from stream.backends.cache import ArtifactCache
    from stream.backends.onnx_model import get_onnx_model
    from stream.media.sample import sample_clip

    configs = CONFIGS
    if args.project:
        configs = [(b, p, int(n)) for b, p, n in (c.split(":") for c in args.project)]
    clip = args.clip or str(sample_clip())
    with tempfile.TemporaryDirectory(prefix="peer-") as tmp:
        work = Path(tmp)
        cache = args.cache_dir or str(work / "cache")
        request = ModelRequest(args.model, args.weights)
        if args.peer_precision == "int8":
            from stream.backends.quantize import get_int8_model
            from stream.backends.settings import BackendSettings

            onnx = get_int8_model(request, ArtifactCache(cache), BackendSettings().calibration_request(), "u8s8")
        else:
            onnx = get_onnx_model(request, "fp32", ArtifactCache(cache))
        if args.peer_only:
            print(json.dumps(peer(clip, str(onnx.path), onnx.info.preprocess, list(onnx.info.categories),
                                  args.frames, str(work / "peer.mp4"), args.threads)))
            return 0
        for backend, precision, batch in configs:  # first starts (export, quantization, compile) out of the rounds
            project(clip, args.model, args.weights, backend, precision, batch, 16, cache, work, args.codec)
        runs: dict[str, list[float]] = {}
        errors: dict[str, str] = {}
        peer_cmd = [sys.executable, __file__, "--peer-only", "--model", args.model, "--weights", args.weights,
                    "--clip", clip, "--frames", str(args.frames), "--cache-dir", cache,
                    "--peer-precision", args.peer_precision]
        if args.threads:
            peer_cmd += ["--threads", str(args.threads)]
        paired: dict[str, list[float]] = {}  # each round's project fps over the same round's peer fps

        def run_peer(this_round: dict[str, float]) -> None:
            out = subprocess.run(peer_cmd, capture_output=True, text=True, timeout=900)
            try:
                this_round[PEER] = json.loads(out.stdout.splitlines()[-1])["fps"]
                runs.setdefault(f"{PEER}, {args.peer_precision}", []).append(this_round[PEER])
            except (IndexError, ValueError, KeyError):
                errors["peer"] = out.stderr.strip()[-300:]

        for rnd in range(args.rounds):
            this_round: dict[str, float] = {}
            if rnd % 2 == 0:  # who goes first alternates: a drift within a round favours neither side
                run_peer(this_round)
            for backend, precision, batch in configs:
                key = f"project: {backend} {precision}, batch {batch}"
                r = project(clip, args.model, args.weights, backend, precision, batch, args.frames, cache, work,
                            args.codec)
                if "error" in r:
                    errors[key] = r["error"]
                else:
                    runs.setdefault(key, []).append(r["fps"])
                    this_round[key] = r["fps"]
            if rnd % 2 == 1:
                run_peer(this_round)
            for key, fps in this_round.items():
                if key != PEER and PEER in this_round:
                    paired.setdefault(key, []).append(fps / this_round[PEER])
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    base = statistics.median(runs.get(f"{PEER}, {args.peer_precision}", [float("nan")]))
    print(f"{args.model} ({args.weights}), {args.frames} frames of {Path(clip).name}, video written (peer mp4v, "
          f"project {args.codec}), "
          f"{args.rounds} rounds, medians; 'paired' is the median of each round's project/peer ratio (range)")
    print(f"{'configuration':45} {'fps':>7} {'× peer':>7} {'paired':>7} {'range':>11}   runs")
    for key, values in runs.items():
        med = statistics.median(values)
        ratios = paired.get(key)
        pair = (f"{statistics.median(ratios):7.2f} {min(ratios):5.2f}-{max(ratios):4.2f}" if ratios
                else f"{'':7} {'':>11}")
        print(f"{key:45} {med:7.1f} {med / base:7.2f} {pair}   {', '.join(f'{v:.1f}' for v in values)}")
    for key, err in errors.items():
        print(f"{key}: FAILED ({err})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
