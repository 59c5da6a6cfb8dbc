"""Before and after: the same pipeline configurations run from two checkouts, alternated, CPU per frame by stage.

    git worktree add ../before <commit>; ln -s "$PWD/.venv" ../before/.venv
    .venv/bin/python scripts/bench_trees.py ../before . --rounds 3

AlexNet (random weights) on ONNX Runtime, the 720p sample clip looped to 540 frames, H.264 (or --codec) written;
int8 and fp32, batch 1 and the file default (or --configs). Prints a markdown table of medians: fps (every round),
CPU ms per frame, the main stages ("inference" is the batch thread's and the runtime pool's), the pipeline's own
overhead, cores busy. Run it alone: the machine's other load counts.
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
CONFIGS = [("int8", 1), ("int8", None), ("fp32", 1), ("fp32", None)]
COLUMNS = ["decode", "preprocess", "inference", "encode", "render"]
OVERHEAD = ("capture", "batching", "session", "unattributed")


def run(tree: str, clip: str, precision: str, batch: int | None, work: str, codec: str = "h264") -> dict | None:
    report = f"{work}/report.json"
    cmd = [f"{tree}/.venv/bin/python", "run_stream.py", "--source", clip, "--loop", "--max-frames", "540",
           "--model", "alexnet", "--weights", "random", "--backend", "onnxruntime", "--precision", precision,
           "--output", f"{work}/out.mp4", "--codec", codec, "--report", report, "--no-display", "--no-dashboard",
           "--cache-dir", f"{work}/cache"]
    if batch:
        cmd += ["--batch", str(batch)]
    done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
    if done.returncode:
        print(f"{tree} {precision} batch {batch}: FAILED {done.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    r = json.loads(Path(report).read_text())
    stages = {k: v["ms_per_frame"] for k, v in r["cpu"]["stages"].items()}
    stages["inference"] = stages.get("inference", 0.0) + stages.get("inference_pool", 0.0)
    stages["overhead"] = sum(stages.get(k, 0.0) for k in OVERHEAD)
    return {"fps": r["fps"]["pipeline"], "cpu": r["cpu"]["process_ms_per_frame"], "busy": r["cpu"]["cores_busy"],
            **stages}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--codec", default="h264", choices=("h264", "mp4v"), help="the video written (default h264)")
    ap.add_argument("--configs", help="e.g. int8:1,int8:default (default: int8 and fp32, batch 1 and default)")
    args = ap.parse_args()
    configs = CONFIGS
    if args.configs:
        configs = [(p, None if b == "default" else int(b)) for p, b in (c.split(":") for c in args.configs.split(","))]
    trees = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    clip = subprocess.check_output([str(ROOT / ".venv/bin/python"), "-c",
                                    "from stream.media.sample import sample_clip; print(sample_clip())"],
                                   cwd=ROOT, text=True).strip()
    results: dict[tuple, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="trees-") as work:
        for rnd in range(args.rounds):
            for precision, batch in configs:
                for name, tree in trees.items():
                    figures = run(tree, clip, precision, batch, work, args.codec)
                    if figures is not None:
                        results.setdefault((precision, batch, name), []).append(figures)
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print("| run | tree | fps (rounds) | CPU ms/frame | " + " | ".join(COLUMNS) + " | overhead | cores busy |")
    print("|" + "---|" * (len(COLUMNS) + 6))
    for precision, batch in configs:
        for name in trees:
            runs = results.get((precision, batch, name), [])
            if not runs:
                continue
            med = {k: statistics.median(r[k] for r in runs) for k in ("fps", "cpu", "busy", *COLUMNS, "overhead")}
            rounds = ", ".join(f"{r['fps']:.1f}" for r in runs)
            cells = [f"{precision} batch {batch or 'default'}", name, f"{med['fps']:.1f} ({rounds})",
                     *(f"{med[k]:.2f}" for k in ("cpu", *COLUMNS, "overhead", "busy"))]
            print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
