"""Runs one worker process (a measured start, or a whole pipeline run) and never raises for its failure."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from stream.lab.worker import Job

ROOT = Path(__file__).resolve().parents[2]


def _last_line(text: str) -> str | None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else None


def _run(cmd: list[str], log: Path, timeout: float) -> tuple[int | None, str, float]:
    """(return code or None on timeout, stderr, wall seconds); stdout and stderr are kept in `log`."""
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              stdin=subprocess.DEVNULL)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:  # run() has killed the child
        code = None
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
    log.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{out}\n--- stderr\n{err}")
    return code, err, time.perf_counter() - started


def slug(model: str) -> str:
    """A model as part of a file name: a card's or ONNX file's path becomes its file name and a hash of the path
    (two cards of one name in different folders stay apart)."""
    if re.fullmatch(r"[A-Za-z0-9_.-]+", model) and not model.startswith("."):
        return model
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model).name).lstrip(".") or "model"
    return f"{safe}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"


def run_job(job: Job, work: Path, name: str, timeout: float) -> dict:
    """One fresh worker process for `job`; its result dict, with status 'failed' and a reason if it failed."""
    job_path, result_path = work / f"{name}.job.json", work / f"{name}.result.json"
    result_path.unlink(missing_ok=True)
    job.save(job_path)
    code, err, wall = _run([sys.executable, "-m", "stream.lab.worker", str(job_path), str(result_path)],
                           work / f"{name}.log", timeout)
    if result_path.is_file():
        result = json.loads(result_path.read_text())
    else:  # killed, crashed in native code, or timed out before it could write
        why = (f"timed out after {timeout:g} s" if code is None
               else f"worker exited with {code} ({_last_line(err) or 'no message'})")
        result = {"status": "failed", "reason": why}
    result["wall_s"] = wall
    return result


# A worker's whole-pipeline run shows nothing while it runs (its report is what bench reads).
PIPELINE_FLAGS = ("--no-display", "--no-dashboard", "--status-every", "100000")


def run_pipeline(args: list[str], work: Path, name: str, timeout: float) -> dict:
    """A whole `run_stream.py` run in its own process; its JSON report, or status 'failed' and why."""
    report = work / f"{name}.report.json"
    report.unlink(missing_ok=True)
    cmd = [sys.executable, str(ROOT / "run_stream.py"), *args, "--report", str(report), *PIPELINE_FLAGS]
    code, err, wall = _run(cmd, work / f"{name}.log", timeout)
    if code == 0 and report.is_file():
        run = json.loads(report.read_text())
        return {**run, "run_status": run["status"], "status": "ok", "wall_s": wall}
    why = f"timed out after {timeout:g} s" if code is None else (_last_line(err) or f"exited with {code}")
    return {"status": "failed", "reason": why, "wall_s": wall}


@contextlib.contextmanager
def job_cache(cache_dir: str | None, out: Path):
    """The export/engine cache the jobs share: `cache_dir` as given, or a fresh one inside `out`, deleted
    afterwards, so that first starts measure the build rather than find it done."""
    if cache_dir:
        yield cache_dir
        return
    scratch = out / ".cache"
    try:
        yield str(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
