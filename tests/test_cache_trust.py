"""The cache is the user's own: model names never become paths unchecked, a cache other users can write to is
not used, and ONNX Runtime's TensorRT engine folder is keyed and sidecar-checked like every artifact."""

import json
import os
from pathlib import Path

import pytest

import stream.backends.cache as cache_module
from models.spec import ModelInfo, ModelRequest, PreprocessSpec
from stream.backends.cache import ArtifactCache
from stream.backends.onnx_model import OnnxModel
from stream.backends.onnxruntime_backend import OnnxRuntimeBackend
from stream.errors import UserError
from tests.conftest import run_cli

FIELDS = {"artifact": "onnx", "model": "alexnet", "weights": "random-seed0", "precision": "fp32"}
SPEC = PreprocessSpec(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def store(cache: ArtifactCache) -> Path:
    return cache.store("onnx", FIELDS, ".onnx", lambda tmp: tmp.write_bytes(b"graph"), meta={})


def warnings_in(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]


@pytest.mark.parametrize("mode, where", [(0o777, ""), (0o770, ""), (0o755, "onnx")])
def test_a_cache_other_users_can_write_to_is_bypassed_with_one_warning(tmp_path, capsys, mode, where):
    shared = tmp_path / "shared"
    (shared / "onnx").mkdir(parents=True)
    exposed = shared / where if where else shared
    exposed.chmod(mode if where == "" else 0o777)
    cache = ArtifactCache(shared)
    assert cache.root != shared and (cache.root.stat().st_mode & 0o777) == 0o700
    store(cache)
    assert not list((shared / "onnx").iterdir())  # nothing read from or written to the shared folder
    lines = warnings_in(capsys)
    assert len(lines) == 1 and f"not using the cache {shared}" in lines[0] and f"chmod go-w {exposed}" in lines[0]
    assert ArtifactCache(shared).root == cache.root and warnings_in(capsys) == []  # once per process


def test_a_cache_owned_by_another_user_is_bypassed(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "theirs"
    mine.mkdir(mode=0o700)
    me = os.getuid()
    monkeypatch.setattr(cache_module.os, "getuid", lambda: me + 1)
    cache = ArtifactCache(mine)
    assert cache.root != mine
    (line,) = warnings_in(capsys)
    assert f"owned by uid {me}, not by you (uid {me + 1})" in line
    assert "pass a --cache-dir of your own" in line


def test_a_private_cache_and_a_sticky_shared_one_are_used(tmp_path, capsys):
    new = tmp_path / "new" / "cache"
    assert ArtifactCache(new).root == new and (new.stat().st_mode & 0o777) == 0o700  # made private
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # as /tmp: others cannot remove or rename what this user put there
    assert ArtifactCache(sticky).root == sticky and warnings_in(capsys) == []


@pytest.mark.parametrize("name", ["../evil", "a/b", "/abs", "Alexnet", "", "x" * 65, "resnet50\n"])
def test_a_path_like_model_name_never_reaches_a_path(tmp_path, name):
    with pytest.raises(UserError, match="not a model name"):
        ModelRequest(name)
    with pytest.raises(UserError, match="not a model name"):
        ArtifactCache(tmp_path / "cache").paths("onnx", dict(FIELDS, model=name), ".onnx")
    for ok in ("alexnet", "vit_b_16", "regnet_y_128gf", "efficientnet_lite0"):
        assert ModelRequest(ok).name == ok


def test_model_dotdot_on_the_command_line_is_one_line_and_creates_nothing(tmp_path):
    result = run_cli("--model", "../evil", "--cache-dir", str(tmp_path / "cache"), "--source", str(tmp_path),
                     "--no-dashboard", timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --model ../evil: not a model name"), lines
    assert list(tmp_path.iterdir()) == []  # neither the cache nor anything beside it


# ---------------------------------------------------------------- ONNX Runtime's TensorRT engine folder

ENGINE = "TensorrtExecutionProvider_graph_1_sm90.engine"
ENGINE_FIELDS = {"artifact": "ort-tensorrt", "model": "alexnet", "onnx": "alexnet-0123.onnx", "precision": "fp16",
                 "onnxruntime": "1.32.0", "tensorrt": "10.13.3", "device": "cuda:0"}


def filled(cache: ArtifactCache, payload: bytes = b"engine") -> Path:
    folder = cache.folder("ort-tensorrt", ENGINE_FIELDS)
    (folder / ENGINE).write_bytes(payload)
    return folder


def test_the_engine_folder_is_kept_as_sealed_and_emptied_when_anything_changed(tmp_path):
    folder = filled(ArtifactCache(tmp_path))
    assert folder.parent == tmp_path / "ort-tensorrt" and folder.name.startswith("alexnet-")
    ArtifactCache(tmp_path).seal("ort-tensorrt", ENGINE_FIELDS)  # another process never held it: no sidecar
    assert not folder.with_name(folder.name + ".json").exists()
    cache = ArtifactCache(tmp_path)
    assert cache.folder("ort-tensorrt", ENGINE_FIELDS) == folder and not any(folder.iterdir())  # unsealed: emptied

    filled(cache)
    cache.seal("ort-tensorrt", ENGINE_FIELDS)
    sidecar = json.loads(folder.with_name(folder.name + ".json").read_text())
    assert sidecar["fields"] == ENGINE_FIELDS and list(sidecar["files"]) == [ENGINE]
    again = ArtifactCache(tmp_path)
    assert [p.read_bytes() for p in again.folder("ort-tensorrt", ENGINE_FIELDS).iterdir()] == [b"engine"]
    again.seal("ort-tensorrt", ENGINE_FIELDS)

    (folder / ENGINE).write_bytes(b"swapped")
    assert not any(ArtifactCache(tmp_path).folder("ort-tensorrt", ENGINE_FIELDS).iterdir())


def test_a_second_process_while_the_folder_is_filled_gets_its_own(tmp_path):
    first = ArtifactCache(tmp_path)
    held = filled(first)
    other = ArtifactCache(tmp_path).folder("ort-tensorrt", ENGINE_FIELDS)  # flock is per open file: as another process
    assert other != held and not other.is_relative_to(tmp_path) and (held / os.listdir(held)[0]).exists()
    first.seal("ort-tensorrt", ENGINE_FIELDS)


def test_onnx_runtime_is_given_the_keyed_folder_and_seals_it_at_close(tmp_path):
    backend = OnnxRuntimeBackend.__new__(OnnxRuntimeBackend)  # the provider settings alone, without a GPU
    backend._cache, backend._engines = ArtifactCache(tmp_path), None
    backend.precision, backend.device = "fp16", "cuda:0"
    onnx = OnnxModel(tmp_path / "onnx" / "alexnet-0123.onnx", ModelInfo("alexnet", ("cat",), SPEC, "random", True),
                     (3, 224, 224), 0.0, None, "hit")
    assert backend._provider_options("CPUExecutionProvider", onnx, "1.32.0") == {}
    options = backend._provider_options("TensorrtExecutionProvider", onnx, "1.32.0")
    folder = Path(options["trt_engine_cache_path"])
    assert options["trt_engine_cache_enable"] == "True" and folder.parent == tmp_path / "ort-tensorrt"
    (folder / "engine").write_bytes(b"built by onnxruntime")
    backend.close()
    sidecar = json.loads(folder.with_name(folder.name + ".json").read_text())
    assert sidecar["fields"]["onnx"] == "alexnet-0123.onnx" and "engine" in sidecar["files"]
