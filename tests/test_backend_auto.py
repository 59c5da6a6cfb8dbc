"""`--backend auto`, the default: the fastest backend that is installed and can run the model on the device."""

import importlib.util
import json

import pytest

from stream.backends import choose_backend
from stream.backends import registry as registry_module
from stream.errors import UserError
from tests.conftest import run_cli

INSTALLED = {m: importlib.util.find_spec(m) is not None for m in ("openvino", "onnxruntime")}


def hide(monkeypatch, *modules: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a))


@pytest.mark.skipif(not INSTALLED["openvino"], reason="OpenVINO is in requirements.txt; this checks the order")
def test_on_this_cpu_auto_is_openvino_then_onnxruntime_then_torch(monkeypatch):
    monkeypatch.setattr(registry_module, "nvidia_gpu_present", lambda: False)
    first = choose_backend("auto", "auto")
    assert first.name == "openvino" and "CPU" in first.reason and "(" not in first.reason
    hide(monkeypatch, "openvino")
    second = choose_backend("auto", "auto")
    assert second.name == "onnxruntime" and "not openvino: the openvino package is not installed" in second.reason
    hide(monkeypatch, "openvino", "onnxruntime")
    assert choose_backend("cpu", "auto").name == "torch"


def test_auto_passes_over_a_backend_without_the_precision_or_that_cannot_run_the_model(monkeypatch):
    monkeypatch.setattr(registry_module, "nvidia_gpu_present", lambda: False)
    assert choose_backend("cpu", "int8", exclude=("openvino",)).name == "onnxruntime"
    choice = choose_backend("cpu", "auto", exclude=("openvino", "onnxruntime"))
    assert choice.name == "torch" and "it cannot run this model" in choice.reason
    with pytest.raises(UserError, match="no backend can run this here") as err:
        choose_backend("cpu", "int8", exclude=("openvino", "onnxruntime"))
    assert "not torch: no int8" in str(err.value) and "\n" not in str(err.value)


def test_a_cuda_device_without_a_gpu_is_one_line():
    if registry_module.nvidia_gpu_present():
        pytest.skip("this machine has an NVIDIA driver")
    with pytest.raises(UserError, match="not tensorrt") as err:
        choose_backend("cuda", "auto")
    assert "not torch: no CUDA GPU is visible to PyTorch" in str(err.value)


@pytest.mark.slow
def test_a_run_without_backend_says_what_it_chose_and_why(tmp_path, cat_clip):
    result = run_cli("--source", str(cat_clip), "--model", "efficientnet_lite0", "--cache-dir", str(tmp_path / "c"),
                     "--report", str(tmp_path / "r.json"), "--max-frames", "16")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    choice = report["backend_choice"]
    assert choice["asked"] == "auto" and choice["chosen"] == report["model"]["backend"]
    assert f"backend: {choice['chosen']} (--backend auto" in result.stdout.splitlines()[0]
