#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and link it as .venv.
# The venv lives outside the checkout, keyed on the requirements' hash, so CI and fresh clones
# reuse one multi-GB torch install instead of rebuilding it on every run.
#   bash scripts/venv.sh          CPU: requirements.txt + requirements-dev.txt
#   bash scripts/venv.sh --gpu    + requirements-gpu.txt (TensorRT, onnxruntime-gpu), in its own venv
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
    # onnxruntime-gpu and onnxruntime both own the `onnxruntime` module: keep only the GPU build.
    "$venv/bin/python" -m pip uninstall -q -y onnxruntime >&2
    "$venv/bin/python" -m pip install -q -r requirements-gpu.txt >&2
  fi
  touch "$venv/.complete"
fi
ln -sfn "$venv" .venv
