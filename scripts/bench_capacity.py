"""Cameras per box: how many live 720p cameras one process keeps real-time, against one OpenVINO loop per camera.

    .venv/bin/python scripts/bench_capacity.py --model efficientnet_lite0 --weights imagenet --precision int8
    .venv/bin/python scripts/bench_capacity.py --max-cameras 8 --seconds 20 --backend openvino --precision fp32

The cameras: GStreamer's RTSP server on loopback (tests/rtsp_server.py, run by the system Python), its `/pan720`
mount (a real photograph panned and zoomed, 1280x720 at 30 fps, H.264), shared, so that N clients cost one
encode. N goes up from 1 until a stream fails: below 0.95 × the camera's fps, or its real-time verdict is not
met (its p95 end-to-end latency beyond the run's budget, or more than 5 % dropped). At each N:

- the project: one `run_stream.py` process with N `--source`s (batch as the run plans it for live sources),
  each stream writing its annotated video (mp4v, as the peer); every stream's fps and e2e p95 from the report,
  and the run's CPU per frame;
- the peer: N processes of scripts/peer_openvino.py's loop (an Open Model Zoo-style OpenVINO loop, fp32, or the
  project's int8 model with `--peer-precision int8`; one per camera, as such deployments run), each reading the
  camera for the same number of frames; a peer loop keeps up when it shows ≥ 0.95 × 30 frames per second of its
  wall time (it reads losslessly, so one that falls behind shows fewer).

Prints a table per side and the largest N each keeps real-time. Run it alone: the machine's other load counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.rtsp import RtspServer, server_missing, write_frames  # noqa: E402

CAMERA_FPS = 30.0
KEEP_UP = 0.95


def project(urls: list[str], a, work: Path) -> dict:
    report = work / f"project-{len(urls)}.json"
    cmd = [sys.executable, str(ROOT / "run_stream.py"), *[x for u in urls for x in ("--source", u)],
           "--model", a.model, "--weights", a.weights, "--backend", a.backend, "--precision", a.precision,
           "--max-frames", str(int(CAMERA_FPS * a.seconds)), "--cache-dir", a.cache_dir, "--codec", "mp4v",
           "--output", str(work / "project-{stream}.mp4" if len(urls) > 1 else work / "project.mp4"),
           "--report", str(report), "--no-display", "--no-dashboard", *a.project_args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=a.seconds * 4 + 300)
    if not report.is_file():
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    r = json.loads(report.read_text())
    streams = r.get("streams") or [r]
    rows = [{"fps": s["fps"]["pipeline"], "e2e_p95_ms": s["latency_ms"]["end_to_end"]["p95"],
             "budget_ms": s["realtime"].get("budget_ms"), "verdict": s["realtime"]["verdict"],
             "dropped": s["frames"]["dropped"], "read": s["frames"]["read"]} for s in streams]
    ok = all(x["fps"] >= KEEP_UP * CAMERA_FPS and x["verdict"] == "real-time" for x in rows)
    cpu = r.get("cpu") or {}
    return {"ok": ok, "streams": rows, "batch": r["model"]["batch"], "cpu": cpu,
            "cpu_ms_per_frame": cpu.get("process_ms_per_frame"), "cores_busy": cpu.get("cores_busy")}


def peer(urls: list[str], a, work: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "scripts" / "peer_openvino.py"), "--peer-only", "--model", a.model,
           "--weights", a.weights, "--frames", str(int(CAMERA_FPS * a.seconds)), "--cache-dir", a.cache_dir,
           "--peer-precision", a.peer_precision]
    # RTSP over TCP, as the project reads it (FFmpeg's own default tries UDP first, which loses packets under load).
    env = {**os.environ, "OPENCV_FFMPEG_CAPTURE_OPTIONS": "rtsp_transport;tcp"}
    procs = [subprocess.Popen([*cmd, "--clip", u], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for u in urls]
    rows = []
    for p in procs:
        out, err = p.communicate(timeout=a.seconds * 4 + 300)
        try:
            rows.append(json.loads(out.strip().splitlines()[-1]))
        except (IndexError, ValueError):
            rows.append({"error": (err.strip().splitlines() or ["no output"])[-1]})
    ok = all("fps" in x and x["fps"] >= KEEP_UP * CAMERA_FPS for x in rows)
    return {"ok": ok, "streams": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", default="imagenet")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--seconds", type=float, default=15.0, help="each run's length (frames = 30 × seconds)")
    ap.add_argument("--max-cameras", type=int, default=12)
    ap.add_argument("--cache-dir", help="artifact cache (default: a fresh one)")
    ap.add_argument("--project-args", nargs=argparse.REMAINDER, default=[],
                    help="the rest of the line goes to the project's run_stream.py (e.g. --threads 1)")
    ap.add_argument("--peer-precision", default="fp32", choices=("fp32", "int8"),
                    help="the peer's model: fp32 (as the Open Model Zoo demo runs it) or the project's own int8 one")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--no-project", action="store_true")
    a = ap.parse_args()
    missing = server_missing()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="capacity-") as tmp:
        work = Path(tmp)
        a.cache_dir = a.cache_dir or str(work / "cache")
        frames = write_frames(work / "frames")
        with RtspServer(frames, work / "rtsp.log") as server:
            url = server.url("pan720")
            warm = project([url], argparse.Namespace(**{**vars(a), "seconds": 1.0}), work)  # export, quantize
            if "error" in warm:
                print(f"project run failed: {warm['error']}", file=sys.stderr)
                return 1
            sides = ([] if a.no_project else [("project", project)]) + ([] if a.no_peer else [("peer", peer)])
            results: dict[str, dict[int, dict]] = {side: {} for side, _ in sides}
            for side, fn in sides:
                for n in range(1, a.max_cameras + 1):
                    started = time.perf_counter()
                    r = results[side][n] = fn([url] * n, a, work)
                    verdict = "keeps up" if r.get("ok") else "FAILS"
                    print(f"{side} N={n}: {verdict} ({time.perf_counter() - started:.0f} s) {_brief(r)}",
                          file=sys.stderr, flush=True)
                    if not r.get("ok"):
                        break
    print(f"{a.model} ({a.weights}) {a.backend} {a.precision}, peer OpenVINO {a.peer_precision}; cameras: 1280x720 "
          f"H.264 at {CAMERA_FPS:g} fps over "
          f"RTSP on loopback; {a.seconds:g} s per run; a stream keeps up at ≥ {KEEP_UP} × {CAMERA_FPS:g} fps "
          f"(and, for the project, its real-time verdict: e2e p95 within budget, ≤ 5 % dropped)")
    print("| side | cameras | kept up | fps per stream (min / max) | e2e p95 ms (max) | CPU ms per frame | "
          "cores busy |")
    print("|---|---|---|---|---|---|---|")
    for side, runs in results.items():
        for n, r in runs.items():
            fps = [s["fps"] for s in r.get("streams", []) if "fps" in s]
            p95 = [s["e2e_p95_ms"] for s in r.get("streams", []) if s.get("e2e_p95_ms") is not None]
            print(f"| {side} | {n} | {'yes' if r.get('ok') else 'no'} | "
                  f"{f'{min(fps):.1f} / {max(fps):.1f}' if fps else r.get('error', '--')} | "
                  f"{f'{max(p95):.0f}' if p95 else '--'} | "
                  f"{_num(r.get('cpu_ms_per_frame'))} | {_num(r.get('cores_busy'), '.2f')} |")
    best = {side: max((n for n, r in runs.items() if r.get("ok")), default=0) for side, runs in results.items()}
    line = ", ".join(f"{side} {n}" for side, n in best.items())
    ratio = f"; × peer {best['project'] / best['peer']:.2f}" if best.get("peer") and "project" in best else ""
    print(f"\ncameras kept real-time: {line}{ratio}")
    last = max((n for n, r in results.get("project", {}).items() if r.get("cpu")), default=None)
    if last is not None:
        cpu = results["project"][last]["cpu"]
        print(f"\nproject CPU per frame at {last} camera(s): {cpu['process_ms_per_frame']:.2f} ms")
        for stage, v in cpu["stages"].items():
            if v["seconds"] > 0 or stage == "unattributed":
                print(f"  {stage:16} {v['ms_per_frame']:6.2f} ms  {v['share']:6.1%}")
    return 0


def _brief(r: dict) -> str:
    fps = [s.get("fps") for s in r.get("streams", []) if s.get("fps") is not None]
    return f"fps {min(fps):.1f}-{max(fps):.1f}" if fps else str(r.get("error", ""))


def _num(value, fmt: str = ".1f") -> str:
    return "--" if value is None else format(value, fmt)


if __name__ == "__main__":
    sys.exit(main())
