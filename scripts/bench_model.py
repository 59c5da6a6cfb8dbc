#!/usr/bin/env python3
"""Model-only throughput of a backend on real frames: the ceiling the pipeline is compared with.

    python scripts/bench_model.py --model alexnet --weights random --batch 4

Warm-up iterations are run and reported apart; the figures are over `--repeats` timed batches.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.spec import ModelRequest  # noqa: E402
from stream.backends import BackendOptions, load_backend  # noqa: E402
from stream.preprocess import make_preprocessor  # noqa: E402
from stream.sample import sample_clip  # noqa: E402
from stream.sources import open_source  # noqa: E402
from stream.stats import Percentiles  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="alexnet")
    p.add_argument("--weights", default="random")
    p.add_argument("--backend", default="torch")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--cache-dir")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--source", help="video whose frames are used (default: the sample clip)")
    args = p.parse_args()

    source = open_source(args.source or str(sample_clip()))
    images = []
    while len(images) < args.batch * 4 and (frame := source.read()) is not None:
        images.append(frame.image)
    source.close()
    options = BackendOptions(args.device, args.precision, args.batch, args.cache_dir, args.threads)
    backend = load_backend(args.backend, ModelRequest(args.model, args.weights), options)
    model = backend.model
    pre = make_preprocessor(model.preprocess, backend.input_device)
    batches = [pre(images[i:i + args.batch]) for i in range(0, len(images) - args.batch + 1, args.batch)]
    warmup_s = backend.warmup(args.batch, args.warmup)
    times = []
    for i in range(args.repeats):
        started = time.perf_counter()
        backend.infer(batches[i % len(batches)])
        times.append((time.perf_counter() - started) * 1000)
    backend.close()
    stats = Percentiles.of(times)
    print(f"{args.model} [{model.weights}] {backend.name}/{backend.device} {backend.precision} batch {args.batch}")
    build = "" if backend.load.build_s is None else f", build {backend.load.build_s:.2f} s"
    print(f"  load {backend.load.weights_s:.2f} s{build} (cache {backend.load.cache}), "
          f"warm-up {warmup_s:.2f} s ({args.warmup} iterations, excluded)")
    print(f"  per batch over {args.repeats} repeats: mean {stats.mean:.1f} ms (std {statistics.stdev(times):.1f}), "
          f"p50 {stats.p50:.1f}, p95 {stats.p95:.1f}, p99 {stats.p99:.1f} ms")
    print(f"  model-only throughput: {1000 * args.batch / stats.mean:.1f} img/s "
          f"({stats.mean / args.batch:.1f} ms per image)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
