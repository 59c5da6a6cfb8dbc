#!/usr/bin/env python3
"""Whole-pipeline speed of the backends compared in one run, on the same 720p clip.

    python scripts/bench_backends.py --model alexnet --weights random --backends torch,onnxruntime --batches 1,4

Each configuration is a fresh `run_stream.py` process (its own start-up, memory and cache state)
reading the clip in lossless file mode and writing an annotated video, as a user would run it.
Configurations are interleaved over `--rounds` so that the shared machine's drift hits all of them
alike; the table shows the median of the rounds and the ratios to the first backend at equal batch.
Caches are warmed by one untimed run per backend first, so "first frame" is a warm start.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_once(backend: str, batch: int, args, out: Path) -> dict:
    report = out / f"{backend}-b{batch}.json"
    cmd = [sys.executable, str(ROOT / "run_stream.py"), "--model", args.model, "--weights", args.weights,
           "--backend", backend, "--batch", str(batch), "--loop", "--max-frames", str(args.frames),
           "--report", str(report), "--no-display", "--no-dashboard", "--status-every", "1000"]
    if args.video:
        cmd += ["--output", str(out / f"{backend}-b{batch}.mp4")]
    if args.source:
        cmd += ["--source", args.source]
    if args.cache_dir:
        cmd += ["--cache-dir", args.cache_dir]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if run.returncode != 0:
        raise SystemExit(f"{backend} batch {batch} failed: {run.stderr.strip()}")
    return json.loads(report.read_text())


def median(rows: list[dict], *path: str) -> float:
    values = []
    for row in rows:
        for key in path:
            row = row[key]
        values.append(row)
    return statistics.median(values)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="alexnet")
    p.add_argument("--weights", default="random")
    p.add_argument("--backends", default="torch,onnxruntime")
    p.add_argument("--batches", default="1,4")
    p.add_argument("--frames", type=int, default=540, help="frames per run (the 180-frame clip is looped)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--source", help="video to use (default: the 720p sample clip)")
    p.add_argument("--cache-dir")
    p.add_argument("--video", action=argparse.BooleanOptionalAction, default=True,
                   help="write the annotated video (mp4v encode costs about 5 ms per 720p frame)")
    p.add_argument("--json", help="write every run's report here")
    args = p.parse_args()
    backends = args.backends.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    configs = [(b, n) for n in batches for b in backends]

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for backend in backends:  # exports/engines built here, outside the timed runs
            run_once(backend, batches[0], argparse.Namespace(**{**vars(args), "frames": 8}), out)
        results: dict[tuple[str, int], list[dict]] = {c: [] for c in configs}
        for r in range(args.rounds):
            for backend, batch in configs:
                report = run_once(backend, batch, args, out)
                results[(backend, batch)].append(report)
                print(f"round {r + 1}: {backend:12s} batch {batch}: {report['fps']['pipeline']:.1f} fps",
                      file=sys.stderr, flush=True)

    first = results[configs[0]][0]
    video = "annotated video written" if args.video else "no video written"
    print(f"\n{args.model} [{first['model']['weights']}], {args.frames} frames of "
          f"{first['source']['width']}x{first['source']['height']} per run ({video}), "
          f"median of {args.rounds} rounds\n")
    print("| backend | batch | pipeline fps | × first backend | model-only fps | e2e p50 ms | "
          "first frame s | load s | peak RSS MB | cache |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for backend, batch in configs:
        rows = results[(backend, batch)]
        fps = median(rows, "fps", "pipeline")
        base = median(results[(backends[0], batch)], "fps", "pipeline")
        print(f"| {backend} | {batch} | {fps:.1f} | {fps / base:.2f} | {median(rows, 'fps', 'model_only'):.1f} | "
              f"{median(rows, 'latency_ms', 'end_to_end', 'p50'):.0f} | {median(rows, 'load', 'first_frame_s'):.2f} | "
              f"{median(rows, 'load', 'weights_s'):.2f} | {median(rows, 'memory', 'peak_rss_mb'):.0f} | "
              f"{rows[-1]['load']['cache']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{b}-b{n}": v for (b, n), v in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
