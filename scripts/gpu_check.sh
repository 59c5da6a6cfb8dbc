#!/usr/bin/env bash
# Verify the whole GPU side on a machine with an NVIDIA GPU, in one command, into one folder to send back:
#   bash scripts/venv.sh --gpu && bash scripts/gpu_check.sh [OUT]      (OUT default: gpu-check-<time>/)
# It runs the `gpu`-marked tests, then `bench` on AlexNet and EfficientNet-Lite0 with torch, onnxruntime
# and tensorrt at fp32, fp16 and int8 (int8 rows: onnxruntime and tensorrt). Without an importable
# TensorRT it still runs the CUDA parts (PyTorch CUDA fp32/fp16, GPU preprocessing, onnxruntime) and says
# what it skipped.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${STREAM_PYTHON:-.venv/bin/python}
out=${1:-gpu-check-$(date +%Y%m%d-%H%M%S)}
py=$(command -v "$py" || echo "$py")  # STREAM_PYTHON may be a command's name (python3), not a path
if [ ! -x "$py" ]; then
  echo "error: no $py: make the GPU environment first with bash scripts/venv.sh --gpu" >&2
  exit 2
fi
if ! "$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "error: scripts/gpu_check.sh needs a CUDA GPU visible to PyTorch (torch.cuda.is_available() is False" \
       "here); run it on the GPU machine, in the environment made by bash scripts/venv.sh --gpu" >&2
  exit 2
fi
mkdir -p "$out"
summary="$out/SUMMARY.txt"
: > "$summary"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not found" > "$out/nvidia-smi.txt"
"$py" - > "$out/environment.json" 2>&1 <<'PY'
import importlib.util, json, platform, torch
env = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
       "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
for name in ("tensorrt", "onnxruntime", "torch2trt"):
    env[name] = None
    if importlib.util.find_spec(name):
        try:
            module = __import__(name)
            env[name] = getattr(module, "__version__", "present")
        except Exception as exc:  # a broken install is worth reporting, not fatal
            env[name] = f"import failed: {type(exc).__name__}: {exc}"
if env["onnxruntime"] and not str(env["onnxruntime"]).startswith("import failed"):
    import onnxruntime
    env["onnxruntime_providers"] = onnxruntime.get_available_providers()
print(json.dumps(env, indent=1))
PY
backends=torch,onnxruntime
if "$py" -c "import tensorrt" >/dev/null 2>&1; then
  backends=$backends,tensorrt
else
  echo "SKIPPED: TensorRT (tensorrt does not import here): its gpu tests skip and bench has no tensorrt rows" \
    | tee -a "$summary"
fi
echo "gpu tests → $out/gpu-tests.log" >&2
# A test module that cannot be collected (a dev package missing where the GPU machine's own Python is used, such as
# ray or import-linter's grimp) is reported, not a reason to run none of the GPU tests.
"$py" -m pytest -m gpu -rs -p no:cacheprovider --continue-on-collection-errors --junitxml "$out/gpu-tests.xml" > "$out/gpu-tests.log" 2>&1
tests_rc=$?
echo "gpu tests: exit $tests_rc; $(tail -n 1 "$out/gpu-tests.log")" | tee -a "$summary"
echo "bench ($backends, fp32, fp16, int8) → $out/bench/" >&2
"$py" run_stream.py bench --models alexnet,efficientnet_lite0:imagenet --weights random --backends "$backends" \
  --precision fp32,fp16,int8 --batch 1,8 --device cuda --out "$out/bench" > "$out/bench.log" 2>&1
bench_rc=$?
echo "bench: exit $bench_rc (0: every row measured; 1: some rows failed, see $out/bench/report.md)" | tee -a "$summary"
echo "send back the folder $out (for example: tar czf $out.tgz $out)" >&2
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
