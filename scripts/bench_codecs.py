"""What each output codec costs per 720p frame on this machine, as the run's video sink writes it.

    python scripts/bench_codecs.py [--frames 300] [--rounds 3] [--pipeline 1080]

Frames are the sample clip's (real photographs, 1280×720). Each codec writes the same frames through
stream.outputs.video_writer (H.264: PyAV's libx264, preset ultrafast, yuv420p, +faststart; mp4v and Motion-JPEG:
OpenCV), closing included (the H.264 encoder's delayed frames are flushed there). Wall time and process
CPU time per frame (libx264 runs threads of its own, so CPU can exceed wall), and bytes per frame; rounds
are interleaved so drift hits every codec alike. The preview's JPEG (quality 70) is timed beside them.
`--pipeline N` also runs the whole pipeline (`run_stream.py`, EfficientNet-Lite0 on ONNX Runtime, the
sample clip looped to N frames, a fresh process each) writing each codec, in interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream.media.sample import sample_clip  # noqa: E402
from stream.outputs.video_writer import open_encoder  # noqa: E402
from stream.web.preview import JPEG_QUALITY  # noqa: E402

CODECS = {"h264": ".mp4", "mp4v": ".mp4", "mjpg": ".avi"}


def frames(count: int) -> list:
    cap = cv2.VideoCapture(str(sample_clip()))
    out = []
    while len(out) < count:
        ok, frame = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        out.append(frame)
    cap.release()
    return out


def encode(codec: str, images: list, folder: Path) -> tuple[float, float, int]:
    path = folder / f"bench-{codec}{CODECS[codec]}"
    h, w = images[0].shape[:2]
    wall, cpu = time.perf_counter(), time.process_time()
    encoder = open_encoder(str(path), codec, 30.0, w, h)
    for image in images:
        encoder.write(image)
    encoder.close()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall * 1000 / len(images), cpu * 1000 / len(images), path.stat().st_size // len(images)


def jpeg(images: list) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), time.process_time()
    size = sum(len(cv2.imencode(".jpg", i, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1]) for i in images)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall * 1000 / len(images), cpu * 1000 / len(images), size // len(images)


def pipeline_fps(codec: str, frames: int, folder: Path) -> float:
    report = folder / "report.json"
    subprocess.run([sys.executable, str(ROOT / "run_stream.py"), "--model", "efficientnet_lite0", "--backend",
                    "onnxruntime", "--loop", "--max-frames", str(frames), "--no-display", "--codec", codec,
                    "--output", str(folder / f"pipeline-{codec}{CODECS[codec]}"), "--report", str(report)],
                   check=True, capture_output=True, cwd=ROOT)
    return json.loads(report.read_text())["fps"]["pipeline"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pipeline", type=int, default=0, help="frames per whole-pipeline run (0: none)")
    args = parser.parse_args()
    images = frames(args.frames)
    results: dict[str, list[tuple[float, float, int]]] = {k: [] for k in (*CODECS, "preview jpeg q70")}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for codec in CODECS:
                results[codec].append(encode(codec, images, Path(folder)))
            results["preview jpeg q70"].append(jpeg(images))
    print(f"{len(images)} frames of {images[0].shape[1]}x{images[0].shape[0]}, {args.rounds} interleaved rounds, "
          "median of the rounds")
    print("| codec | wall ms/frame | CPU ms/frame | kB/frame |")
    print("|---|---|---|---|")
    for name, rows in results.items():
        wall, cpu, size = (statistics.median(r[i] for r in rows) for i in range(3))
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {size / 1000:.1f} |")
    if args.pipeline:
        fps: dict[str, list[float]] = {c: [] for c in CODECS}
        with tempfile.TemporaryDirectory() as folder:
            pipeline_fps("h264", 60, Path(folder))  # untimed: the ONNX export into the cache
            for _ in range(args.rounds):
                for codec in CODECS:
                    fps[codec].append(pipeline_fps(codec, args.pipeline, Path(folder)))
        print(f"\nwhole pipeline, {args.pipeline} frames, EfficientNet-Lite0 on onnxruntime, video written")
        print("| codec | pipeline fps per round | median |")
        print("|---|---|---|")
        for codec, values in fps.items():
            print(f"| {codec} | {' / '.join(f'{v:.1f}' for v in values)} | {statistics.median(values):.1f} |")


if __name__ == "__main__":
    main()
