#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and link it as .venv.
# The venv lives outside the checkout, keyed on the requirements' hash, so CI and fresh clones
# reuse one multi-GB torch install instead of rebuilding it on every run.
#   bash scripts/venv.sh          CPU: requirements.txt + requirements-dev.txt
#   bash scripts/venv.sh --gpu    + requirements-gpu.txt (TensorRT, onnxruntime-gpu), in its own venv.
#                                 TensorRT's wheels come from NVIDIA's package index (named in that
#                                 file); where that index is out of reach, point STREAM_WHEELHOUSE at a folder
#                                 of the GPU extras' wheels made with `pip download -r requirements-gpu.txt -d
#                                 wheels` on a machine that reaches it (the CPU requirements still use PyPI).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
gpu=${1:-}
files="requirements.txt requirements-dev.txt"
[ "$gpu" = "--gpu" ] && files="$files requirements-gpu.txt"
hash=$(cat $files | sha256sum | cut -c1-16)
base=${STREAM_VENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/stream-classifier}
venv="$base/venv-$hash"
if [ ! -f "$venv/.complete" ]; then
  echo "Creating virtual environment $venv (first time only; torch is several GB)..." >&2
  rm -rf "$venv"
  mkdir -p "$base"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -r requirements-dev.txt >&2
  if [ "$gpu" = "--gpu" ]; then
    log="$base/venv-$hash-gpu-install.log"
    # onnxruntime-gpu and onnxruntime both own the `onnxruntime` module: keep only the GPU build.
    "$venv/bin/python" -m pip uninstall -q -y onnxruntime >"$log" 2>&1
    if [ -n "${STREAM_WHEELHOUSE:-}" ]; then
      source_args=(--no-index --find-links "$STREAM_WHEELHOUSE")
    else
      source_args=()
    fi
    if ! "$venv/bin/python" -m pip install "${source_args[@]}" -r requirements-gpu.txt >>"$log" 2>&1; then
      echo "error: the GPU extras did not install: TensorRT's wheels come from NVIDIA's package index" \
           "(--extra-index-url in requirements-gpu.txt), which pip could not reach or use here; offline, make" \
           "a wheelhouse on a connected machine (pip download -r requirements-gpu.txt -d wheels) and run" \
           "STREAM_WHEELHOUSE=wheels bash scripts/venv.sh --gpu; pip's output is in $log" >&2
      exit 1
    fi
  fi
  touch "$venv/.complete"
fi
ln -sfn "$venv" .venv
