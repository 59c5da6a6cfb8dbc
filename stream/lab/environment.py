"""What the figures were measured on: CPU, GPU, driver, library versions, thread settings.

Read without importing torch or the runtimes (package metadata, /proc, nvidia-smi), so the parent
process stays light; the workers report the thread counts they actually ran with.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

import psutil

from models.spec import package_version

PACKAGES = ("torch", "torchvision", "onnxruntime", "onnxruntime-gpu", "onnx", "tensorrt", "tensorrt-cu13",
            "torch2trt", "opencv-python", "numpy", "efficientnet-lite-pytorch", "timm")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpus() -> list[dict]:
    """One entry per NVIDIA GPU that nvidia-smi reports; empty without a driver."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    return [{"name": r[0], "driver": r[1], "memory": r[2]} for r in rows if len(r) == 3]


def fingerprint(threads: int | None) -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": gpus(),
        "packages": {p: v for p in PACKAGES if (v := package_version(p)) != "unknown"},
        "threads_option": threads,
        "thread_variables": {v: os.environ[v] for v in THREAD_VARIABLES if v in os.environ},
    }


def one_line(env: dict) -> str:
    gpu = ", ".join(g["name"] for g in env["gpus"]) or "no GPU"
    pk = env["packages"]
    libs = ", ".join(f"{p} {pk[p]}" for p in ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt") if p in pk)
    return f"{env['cpu']} ({env['usable_cores']} cores), {env['memory_gb']} GB, {gpu}; {libs}"
