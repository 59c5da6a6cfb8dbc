"""Many streams in one process: are 4 live cameras all real-time, and do 8 files keep one file's pace?

    .venv/bin/python scripts/bench_streams.py [--seconds 30] [--model efficientnet_lite0] [--backend onnxruntime]

Live: 4 loopback MJPEG cameras (640×480, 30 fps, real photographs) for `--seconds`; each stream's fps
and end-to-end p95 from the run's report. Files: the 720p sample clip as 1 stream and as 8 streams at
the same batch size, total frames per second of wall time (no video written: the streams' own cost).
Each run is a fresh `run_stream.py` process; the figures are the reports' own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cameras import LoopbackCameras  # noqa: E402


def run(args: list[str], report: Path) -> tuple[dict, float]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(ROOT / "run_stream.py"), *args, "--report", str(report),
                             "--no-display", "--no-dashboard"], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"run failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return json.loads(report.read_text()), wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--file-streams", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        common = ["--model", a.model, "--backend", a.backend, "--cache-dir", str(tmp / "cache")]
        run(["--source", str(Path(_sample())), *common, "--max-frames", "8"], tmp / "warm.json")  # export once

        with LoopbackCameras(4, 640, 480, 30.0) as cameras:
            sources = [x for i in range(4) for x in ("--source", cameras.url(i))]
            live, _ = run([*sources, *common, "--max-frames", str(int(30 * a.seconds))], tmp / "live.json")
        print(f"4 live 640×480 cameras at 30 fps, {a.model} on {a.backend}, batch {live['model']['batch']}:")
        print("| stream | fps (capture) | fps (pipeline) | e2e p50 ms | e2e p95 ms | dropped full/stale | verdict |")
        print("|---|---|---|---|---|---|---|")
        for s in live["streams"]:
            e2e = s["latency_ms"]["end_to_end"]
            print(f"| {s['name']} | {s['fps']['capture']:.1f} | {s['fps']['pipeline']:.1f} | {e2e['p50']:.0f} | "
                  f"{e2e['p95']:.0f} | {s['drops']['full']}/{s['drops']['stale']} | {s['realtime']['verdict']} |")
        print(f"run verdict: {live['realtime']['verdict']} ({live['realtime']['reason']})\n")

        clip = _sample()
        frames = 180 * 4
        one, _ = run(["--source", clip, "--loop", "--max-frames", str(frames * a.file_streams), *common,
                      "--batch", str(a.batch)], tmp / "one.json")
        many, _ = run([x for _ in range(a.file_streams) for x in ("--source", clip)]
                      + ["--loop", "--max-frames", str(frames), *common, "--batch", str(a.batch)], tmp / "many.json")
        ratio = many["fps"]["pipeline"] / one["fps"]["pipeline"]
        print(f"720p sample clip, batch {a.batch}, {frames * a.file_streams} frames in all, no video written:")
        print("| streams | total fps | × one stream |")
        print("|---|---|---|")
        print(f"| 1 | {one['fps']['pipeline']:.1f} | 1.00 |")
        print(f"| {a.file_streams} | {many['fps']['pipeline']:.1f} | {ratio:.2f} |")
    return 0


def _sample() -> str:
    from stream.media.sample import sample_clip

    return str(sample_clip())


if __name__ == "__main__":
    sys.exit(main())
