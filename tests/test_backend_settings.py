"""What each backend can do (its capabilities) and the one record of backend settings, from the flags of the
run and the lab to what the backend is told."""

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from stream.backends import BACKEND_NAMES, BackendOptions, capabilities
from stream.backends.settings import BackendSettings
from stream.config import load_toml, merge
from stream.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("torch", "torchvision", "onnxruntime", "openvino", "tensorrt", "onnx")


def test_capabilities_and_help_load_no_runtime():
    """Config validation and --help run before any runtime is imported: in a fresh process they load none."""
    code = ("import json, sys\n"
            "from stream.backends import BACKEND_NAMES, capabilities\n"
            "from stream.cli import build_parser\n"
            "from stream.lab.cli import build_parsers\n"
            "from stream.config import merge\n"
            "caps = {n: capabilities(n).precisions for n in BACKEND_NAMES}\n"
            "build_parser().format_help(); [p.format_help() for p in build_parsers().values()]\n"
            "merge({'backend': 'openvino', 'precision': 'int8'}, {})\n"
            f"print(json.dumps([caps, [m for m in {RUNTIMES!r} if m in sys.modules]]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    caps, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(caps) == set(BACKEND_NAMES) and "int8" in caps["openvino"]
    assert loaded == []


def test_each_backend_declares_its_capabilities_on_its_class():
    from stream.backends import backend_class

    for name in ("torch", "onnxruntime", "openvino"):  # importable here; tensorrt's class needs a GPU to pass
        assert backend_class(name).capabilities is capabilities(name)
    assert capabilities("tensorrt").default_precision == "fp16" and capabilities("torch").default_precision == "fp32"
    assert capabilities("onnxruntime").cpu_bound and not capabilities("tensorrt").cpu_bound
    assert "torch2trt" in capabilities("tensorrt").converters and capabilities("openvino").hints


@pytest.mark.parametrize("values, message", [
    ({"backend": "openvino", "precision": "fp16"}, "not on openvino (it runs fp32 or int8)"),
    ({"backend": "torch", "precision": "int8"}, "int8 runs on onnxruntime, openvino, tensorrt"),
    ({"backend": "tensorrt", "trt_converter": "tf-trt"}, "trt-converter: 'tf-trt'; choose one of onnx, torch2trt"),
    ({"backend": "tensorrt", "device": "cpu"}, "tensorrt runs on cuda"),
    ({"backend": "openvino", "device": "cuda:1"}, "openvino runs on cpu"),
])
def test_config_refuses_what_the_backend_does_not_offer_in_one_line(tmp_path, values, message):
    toml = tmp_path / "c.toml"
    toml.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    with pytest.raises(UserError) as caught:
        merge(load_toml(str(toml)), {})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_config_accepts_what_the_backend_offers_and_other_backends_options():
    assert merge({"backend": "openvino", "precision": "int8", "openvino_hint": "throughput"}, {}).precision == "int8"
    assert merge({"backend": "torch", "trt_converter": "onnx", "openvino_hint": "latency"}, {}).backend == "torch"


def test_backend_options_from_settings_follow_the_live_rule():
    live = BackendOptions.from_settings(BackendSettings(), batch=1, live=True, threads=None, calibration=None)
    files = BackendOptions.from_settings(BackendSettings(device="cpu", precision="int8", cache_dir="c"), batch=8,
                                         live=False, threads=1, calibration=None)
    forced = BackendOptions.from_settings(BackendSettings(openvino_hint="throughput"), batch=1, live=True,
                                          threads=None, calibration=None)
    assert live.hint == "latency" and forced.hint == "throughput" and files.hint == "auto"
    assert (files.device, files.precision, files.max_batch, files.cache_dir, files.threads) == ("cpu", "int8", 8,
                                                                                                "c", 1)


def _flags(parser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def test_the_lab_takes_every_backend_flag_of_the_run():
    from stream.cli import build_parser
    from stream.lab.cli import build_parsers

    wanted = {f"--{f.name.replace('_', '-')}" for f in fields(BackendSettings)}
    assert wanted <= _flags(build_parser())
    for parser in build_parsers().values():
        assert wanted <= _flags(parser)


def test_the_lab_passes_the_openvino_hint_through_its_job_to_the_backend(tmp_path):
    from stream.lab.bench import BenchSettings, Combo, _job, _pipeline_args
    from stream.lab.cli import _backend, build_parsers
    from stream.lab.worker import Job, backend_options

    args = build_parsers()["bench"].parse_args(["--backends", "openvino", "--openvino-hint", "throughput",
                                                "--threads", "1", "--trt-converter", "onnx"])
    settings = BenchSettings(combos=[], out=tmp_path, inputs="clip.mp4", backend=_backend(args))
    combo = Combo("alexnet", "random", "openvino", "fp32", 1)
    job = _job(settings, combo, str(tmp_path / "cache"))
    job.save(tmp_path / "job.json")
    loaded = Job.load(tmp_path / "job.json")  # as the worker process reads it
    options = backend_options(loaded)
    assert (options.hint, options.threads, options.precision, options.max_batch) == ("throughput", 1, "fp32", 1)
    assert options.cache_dir == str(tmp_path / "cache")
    pipeline = _pipeline_args(settings, combo, "cache", tmp_path)
    assert pipeline[pipeline.index("--openvino-hint") + 1] == "throughput"
    from stream.cli import build_parser

    parsed = vars(build_parser().parse_args(pipeline))  # the run takes every flag the lab hands it
    assert parsed["openvino_hint"] == "throughput" and parsed["precision"] == "fp32"


def test_the_lab_refuses_bad_backend_values_in_one_line():
    from stream.lab.cli import _backend, build_parsers

    args = build_parsers()["eval"].parse_args(["--threads", "0"])
    with pytest.raises(UserError, match="bad value for threads"):
        _backend(args)
