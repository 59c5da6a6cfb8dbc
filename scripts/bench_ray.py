"""The price of `--engine ray` on one box: 4 file streams through the Ray engine against the local engine.

    .venv/bin/python scripts/bench_ray.py [--frames 300] [--streams 4] [--rounds 2] [--video]

The 720p sample clip as `--streams` file streams (each looped to `--frames`), efficientnet_lite0 on
onnxruntime, batch 8; local and ray runs interleaved for `--rounds`, each a fresh `run_stream.py`
process. Figures are the reports' own: total pipeline fps (first frame to last, start-up excluded),
and from the ray runs the batch sizes, per-stream network bytes and the replica's model fps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.bench_streams import run  # noqa: E402  (a fresh run_stream.py process, its report)

LOGITS_BYTES = 1000 * 4  # a reply's row of float32 logits, before Ray's own framing


def main() -> int:
    from stream.media.sample import sample_clip

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300, help="frames per stream")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--video", action="store_true", help="also write each stream's annotated video")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = str(sample_clip(tmp / "cache"))
        common = ["--model", "efficientnet_lite0", "--backend", "onnxruntime", "--cache-dir", str(tmp / "cache"),
                  "--batch", "8", "--loop", "--max-frames", str(a.frames),
                  *[x for _ in range(a.streams) for x in ("--source", clip)]]
        if a.video:
            common += ["--output", str(tmp / "{stream}.avi")]
        run(["--source", clip, "--model", "efficientnet_lite0", "--backend", "onnxruntime", "--cache-dir",
             str(tmp / "cache"), "--max-frames", "8"], tmp / "warm.json")  # the ONNX export, once
        fps: dict[str, list[float]] = {"local": [], "ray": []}
        last_ray = None
        for r in range(a.rounds):
            for engine in ("local", "ray"):
                report, wall = run([*common, "--engine", engine], tmp / f"{engine}-{r}.json")
                fps[engine].append(report["fps"]["pipeline"])
                print(f"round {r + 1} {engine:5s}: {report['fps']['pipeline']:6.1f} fps pipeline "
                      f"({report['frames']['processed']} frames; process wall {wall:.1f} s)", flush=True)
                if engine == "ray":
                    last_ray = report
    local, ray = statistics.median(fps["local"]), statistics.median(fps["ray"])
    print(f"\n{a.streams} file streams of the 720p sample clip, efficientnet_lite0/onnxruntime, batch 8"
          f"{', video written' if a.video else ''}:")
    print(f"local {local:.1f} fps, ray {ray:.1f} fps (medians of {a.rounds}): ray/local = {ray / local:.2f}")
    section = last_ray["ray"]
    per_stream = last_ray["fps"]["pipeline"] / a.streams
    request = section["request_bytes"]
    print(f"ray batches by size: {section['batch_sizes']}; frames in batches mixing streams: "
          f"{section['frames_in_multi_stream_batches']} of {last_ray['frames']['processed']}")
    for replica in section["replicas"]:
        print(f"replica {replica['replica']}: {replica['frames']} frames, model-only {replica['model_fps']:.1f} fps")
    print(f"network per stream: {request} B up + {LOGITS_BYTES} B down per frame; at 30 fps "
          f"{30 * request * 8 / 1e6:.1f} Mbit/s up, {30 * LOGITS_BYTES * 8 / 1e6:.2f} Mbit/s down "
          f"(this run: {per_stream:.1f} fps per stream)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
