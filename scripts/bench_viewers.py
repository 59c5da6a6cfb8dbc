"""What browser viewers cost the pipeline: the same headless run with 0, 1 and 10 viewers and a never-reading one.

    python scripts/bench_viewers.py [--frames 1080] [--rounds 2] [-- extra run_stream.py flags]

Each configuration is a fresh `run_stream.py --serve 127.0.0.1:0` process on the sample clip (720p, read
losslessly, so the pipeline runs as fast as the machine lets it: any cost of the preview shows in its fps).
Viewers are threads of this process reading `/stream/sample.mjpg?height=540` (what the page asks) and
discarding the bytes; the never-reading viewer sends its request and never reads. Configurations are
interleaved in rounds; each row gives the run report's pipeline fps, its ratio to the run without viewers
in the same round, the run's own RSS (from /api/status, polled with /metrics every 0.25 s in every
configuration alike) after a tenth of its frames and last, its peak, and the preview's JPEG encodes.
Viewers run on the same two cores as the pipeline, so their own reading is in the figures too.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"no viewer": (0, False), "1 viewer": (1, False), "10 viewers": (10, False),
           "1 never-reading viewer": (0, True)}
DEFAULT_RUN = ["--model", "efficientnet_lite0", "--backend", "onnxruntime"]


def viewer(port: int, stop: threading.Event, read: bool, received: list[int]) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /stream/sample.mjpg?height=540 HTTP/1.1\r\nHost: bench\r\n\r\n")
        s.settimeout(0.5)
        while not stop.is_set():
            if not read:
                time.sleep(0.1)
                continue
            try:
                chunk = s.recv(1 << 16)
            except TimeoutError:
                continue
            if not chunk:
                return
            received.append(len(chunk))


def run(frames: int, viewers: int, stuck: bool, extra: list[str], folder: Path) -> dict:
    report = folder / "report.json"
    cmd = [sys.executable, str(ROOT / "run_stream.py"), "--loop", "--max-frames", str(frames), "--no-display",
           "--serve", "127.0.0.1:0", "--report", str(report), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    port = None
    for line in proc.stdout:
        match = re.search(r"serving http://127.0.0.1:(\d+)/", line)
        if match:
            port = int(match.group(1))
            break
    if port is None:
        raise SystemExit(f"the run did not start: {proc.communicate()[1][-2000:]}")
    stop, received = threading.Event(), []
    threads = [threading.Thread(target=viewer, args=(port, stop, True, received)) for _ in range(viewers)]
    if stuck:
        threads.append(threading.Thread(target=viewer, args=(port, stop, False, received)))
    for t in threads:
        t.start()
    rss, encodes = [], 0
    while proc.poll() is None:  # the run's own figures while it runs: RSS after the first tenth, JPEG encodes
        try:
            status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2).read())
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            break
        if status["state"] == "running" and status["frames"]["shown"] > frames // 10:
            rss.append(status["memory_mb"]["rss"])
        encodes = next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                       if s.name == "stream_preview_jpeg_encodes_total")
        time.sleep(0.25)
    stdout, stderr = proc.communicate()
    stop.set()
    for t in threads:
        t.join(5)
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}): {stderr[-2000:]}")
    data = json.loads(report.read_text())
    return {"fps": data["fps"]["pipeline"], "rss_first": rss[0] if rss else float("nan"),
            "rss_last": rss[-1] if rss else float("nan"), "peak": data["memory"]["peak_rss_mb"],
            "received_mb": sum(received) / 1e6, "encodes": encodes, "shown": data["frames"]["shown"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1080)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("extra", nargs="*", help=f"run_stream.py flags (default: {' '.join(DEFAULT_RUN)})")
    args = parser.parse_args()
    extra = args.extra or DEFAULT_RUN
    rows: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as folder:
        run(60, 0, False, extra, Path(folder))  # an untimed first start: the ONNX export into the cache
        for r in range(args.rounds):
            for name, (viewers, stuck) in CONFIGS.items():
                rows[name].append(run(args.frames, viewers, stuck, extra, Path(folder)))
                print(f"round {r + 1} {name}: {rows[name][-1]}", flush=True)
    print(f"\n{args.frames} frames of the 720p sample clip per run, {' '.join(extra)}, {args.rounds} rounds")
    print("| viewers | pipeline fps per round | × no viewer (same round) | RSS after 1/10 → last MB | peak RSS MB | "
          "MB sent to viewers | JPEG encodes |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in rows.items():
        ratios = [run_["fps"] / base["fps"] for run_, base in zip(runs, rows["no viewer"], strict=True)]
        fps = " / ".join(f"{x['fps']:.1f}" for x in runs)
        ratio = " / ".join(f"{x:.3f}" for x in ratios)
        rss = " / ".join(f"{x['rss_first']:.0f} → {x['rss_last']:.0f}" for x in runs)
        sent = " / ".join(f"{x['received_mb']:.1f}" for x in runs)
        encodes = " / ".join(f"{x['encodes']:.0f} of {x['shown']}" for x in runs)
        print(f"| {name} | {fps} | {ratio} (median {statistics.median(ratios):.3f}) | {rss} | "
              f"{max(x['peak'] for x in runs):.0f} | {sent} | {encodes} |")

if __name__ == "__main__":
    main()
