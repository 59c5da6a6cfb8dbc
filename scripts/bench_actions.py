"""What rules, events, MQTT, webhooks and clips cost the pipeline: the sample clip run with each, interleaved.

    .venv/bin/python scripts/bench_actions.py [--frames 1800] [--rounds 2] [--pace]

Each configuration is one `run_stream.py` process on the bundled sample clip (`--loop --max-frames`), with
EfficientNet-Lite0 and the annotated H.264 video written; the rounds interleave the configurations so the
machine's drift falls on all of them alike. The rules fire an event on each of the clip's three photos every
6 s loop (clip = true, 3 s pre-roll, 2 s post-roll). A mosquitto on loopback and a webhook receiver in this
process take the events. Prints pipeline fps, events, peak RSS, and the clips' pre-roll buffer figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = (("cat", '"*cat*", "tabby"'), ("coffee", '"espresso"'), ("rocket", '"missile", "projectile"'))
RULES = '[smoothing]\nenter = 0.3\nexit = 0.2\n' + "".join(
    f'[[rule]]\nname = "{name}"\nlabels = [{labels}]\nmin_duration_s = 0.5\nclip = true\npre_roll_s = 3\n'
    'post_roll_s = 2\n' for name, labels in PHOTOS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hook(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self):  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Hook.received += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def configurations(work: Path, mqtt_port: int, hook_port: int) -> dict[str, list[str]]:
    rules = work / "rules.toml"
    rules.write_text(RULES)
    events = ["--rules", str(rules), "--events", str(work / "{name}-events.jsonl")]
    return {
        "no rules (steady labels only)": [],
        "rules + events file": events,
        "+ MQTT": [*events, "--mqtt", f"mqtt://127.0.0.1:{mqtt_port}/bench"],
        "+ webhook": [*events, "--webhook", f"http://127.0.0.1:{hook_port}/hook"],
        "+ clips": [*events, "--clips", str(work / "{name}-clips")],
        "all of them": [*events, "--mqtt", f"mqtt://127.0.0.1:{mqtt_port}/bench", "--webhook",
                        f"http://127.0.0.1:{hook_port}/hook", "--clips", str(work / "{name}-clips")],
    }


def run(name: str, args: list[str], work: Path, frames: int, pace: bool) -> dict:
    slug = "".join(c if c.isalnum() else "-" for c in name)
    args = [a.replace("{name}", slug) for a in args]
    report = work / f"{slug}.json"
    cmd = [sys.executable, str(ROOT / "run_stream.py"), "--model", "efficientnet_lite0", "--loop", "--max-frames",
           str(frames), "--output", str(work / f"{slug}.mp4"), "--report", str(report), "--no-display", *args]
    if pace:
        cmd.append("--pace")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}: {done.stderr.strip()[-400:]}")
    doc = json.loads(report.read_text())
    decisions = doc.get("decisions", {})
    events = sum(s["events"] for s in decisions.get("streams", {}).values())
    for folder in work.glob(f"{slug}-clips"):
        shutil.rmtree(folder)
    return {"fps": doc["fps"]["pipeline"], "events": events, "rss": doc["memory"]["peak_rss_mb"],
            "clips": decisions.get("clips"), "delivery": decisions.get("delivery", [])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1800)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pace", action="store_true", help="read the clip at its own 30 fps, like a camera")
    opts = parser.parse_args()
    mqtt_port, hook_port = free_port(), free_port()
    broker = subprocess.Popen(["mosquitto", "-p", str(mqtt_port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    hooks = ThreadingHTTPServer(("127.0.0.1", hook_port), Hook)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    time.sleep(0.5)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            configs = configurations(work, mqtt_port, hook_port)
            results: dict[str, list[dict]] = {name: [] for name in configs}
            for round_ in range(opts.rounds):
                for name, args in configs.items():
                    results[name].append(run(name, args, work, opts.frames, opts.pace))
                    print(f"round {round_ + 1}: {name}: {results[name][-1]['fps']:.1f} fps", flush=True)
    finally:
        broker.terminate()
        hooks.shutdown()
    base = statistics.median(r["fps"] for r in results["no rules (steady labels only)"])
    print(f"\n{opts.frames} frames of the sample clip, {opts.rounds} rounds, medians"
          f"{' (paced at 30 fps)' if opts.pace else ''}:\n")
    print("| configuration | pipeline fps | × no rules | events per run | peak RSS MB |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        fps = statistics.median(r["fps"] for r in rows)
        print(f"| {name} | {fps:.1f} | {fps / base:.2f} | {rows[-1]['events']} | "
              f"{statistics.median(r['rss'] for r in rows):.0f} |")
    clips = results["+ clips"][-1]["clips"]
    if clips:
        print(f"\nclips (last run): {json.dumps(clips)}")
    for row in results["all of them"][-1]["delivery"]:
        print(f"delivery: {row}")
    print(f"webhook requests received: {Hook.received}")


if __name__ == "__main__":
    main()
