"""The artifact cache: keys, sidecars, and every way a cached file can be unusable."""

import json

import pytest

from stream.backends.cache import ArtifactCache, cache_key
from stream.errors import UserError

FIELDS = {"artifact": "tensorrt", "model": "alexnet", "weights": "sha256:ab", "input": [3, 224, 224],
          "batch": [1, 4, 4], "precision": "fp16", "converter": "onnx", "tensorrt": "10.13.3",
          "cuda": "12.8", "gpu": "NVIDIA H100", "compute_capability": "9.0"}


def store(cache, fields=FIELDS, payload=b"engine-bytes"):
    return cache.store("tensorrt", fields, ".engine", lambda tmp: tmp.write_bytes(payload), meta={"build_s": 1.5})


@pytest.mark.parametrize("key", sorted(FIELDS))
def test_a_change_of_any_field_gives_a_new_key(key):
    changed = dict(FIELDS, **{key: "something else"})
    assert cache_key(changed) != cache_key(FIELDS)
    assert cache_key(dict(reversed(list(FIELDS.items())))) == cache_key(FIELDS)  # order does not matter


def test_miss_then_hit_with_the_sidecar_recording_every_field(tmp_path):
    cache = ArtifactCache(tmp_path)
    first = cache.lookup("tensorrt", FIELDS, ".engine")
    assert not first.hit and not first.stale and first.reason == "not cached yet"
    path = store(cache)
    assert path.read_bytes() == b"engine-bytes"
    hit = cache.lookup("tensorrt", FIELDS, ".engine")
    assert hit.hit and hit.artifact == path and hit.meta == {"build_s": 1.5}
    sidecar = json.loads(hit.sidecar.read_text())
    assert sidecar["fields"] == FIELDS and sidecar["files"][path.name]["size"] == len(b"engine-bytes")
    assert not list(path.parent.glob(".tmp-*"))  # no temporary files left behind


def test_companion_files_are_published_and_checked_with_the_artifact(tmp_path):
    cache = ArtifactCache(tmp_path)

    def write(path):  # an ONNX graph with its weights in a separate file beside it
        path.write_bytes(b"graph")
        path.with_name(path.name + ".data").write_bytes(b"weights")

    path = cache.store("onnx", FIELDS, ".onnx", write, meta={})
    data = path.with_name(path.name + ".data")
    assert data.read_bytes() == b"weights" and cache.lookup("onnx", FIELDS, ".onnx").hit
    data.write_bytes(b"weightz")
    look = cache.lookup("onnx", FIELDS, ".onnx")
    assert not look.hit and ".onnx.data is corrupt" in look.reason


def test_other_settings_are_a_plain_miss_and_leave_the_first_engine_alone(tmp_path):
    cache = ArtifactCache(tmp_path)
    path = store(cache)
    other = cache.lookup("tensorrt", dict(FIELDS, gpu="NVIDIA A100"), ".engine")
    assert not other.hit and other.reason == "not cached yet" and other.artifact != path
    assert cache.lookup("tensorrt", FIELDS, ".engine").hit


def test_a_sidecar_whose_fields_do_not_match_is_a_stale_miss_naming_the_difference(tmp_path):
    cache = ArtifactCache(tmp_path)
    store(cache)
    look = cache.lookup("tensorrt", FIELDS, ".engine")
    record = json.loads(look.sidecar.read_text())
    record["fields"]["tensorrt"] = "10.3.0"  # e.g. an engine copied in from another machine
    look.sidecar.write_text(json.dumps(record))
    again = cache.lookup("tensorrt", FIELDS, ".engine")
    assert not again.hit and again.stale
    assert "tensorrt '10.3.0' != '10.13.3'" in again.reason


@pytest.mark.parametrize("damage, reason", [
    (lambda look: look.sidecar.write_text("{not json"), "sidecar is corrupt"),
    (lambda look: look.sidecar.write_text('{"format": 3}'), "sidecar is corrupt"),
    (lambda look: look.sidecar.write_text('{"format": 1}'), "sidecar has format 1"),
    (lambda look: look.sidecar.unlink(), "sidecar is missing"),
    (lambda look: look.artifact.write_bytes(b"engine-bytez"), "corrupt (checksum mismatch)"),
    (lambda look: look.artifact.write_bytes(b"engine"), "corrupt (checksum mismatch)"),
    (lambda look: look.artifact.unlink(), ".engine is missing"),
])
def test_a_damaged_entry_is_never_a_hit_and_a_rebuild_replaces_it(tmp_path, damage, reason):
    cache = ArtifactCache(tmp_path)
    store(cache)
    damage(cache.lookup("tensorrt", FIELDS, ".engine"))
    look = cache.lookup("tensorrt", FIELDS, ".engine")
    assert not look.hit and look.stale and reason in look.reason
    store(cache, payload=b"rebuilt")
    fixed = cache.lookup("tensorrt", FIELDS, ".engine")
    assert fixed.hit and fixed.artifact.read_bytes() == b"rebuilt"


def test_a_failed_write_publishes_nothing(tmp_path):
    cache = ArtifactCache(tmp_path)

    def crash(tmp):
        tmp.write_bytes(b"half an engine")
        raise RuntimeError("build died")

    with pytest.raises(RuntimeError):
        cache.store("tensorrt", FIELDS, ".engine", crash, meta={})
    look = cache.lookup("tensorrt", FIELDS, ".engine")
    assert not look.hit and look.reason == "not cached yet"
    assert not list(look.artifact.parent.iterdir())


def test_an_unwritable_cache_is_a_one_line_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="cannot write to the cache.*--cache-dir"):
        store(ArtifactCache(blocker))


def test_the_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAM_CLASSIFIER_CACHE", str(tmp_path / "mine"))
    assert ArtifactCache().root == tmp_path / "mine"
    monkeypatch.delenv("STREAM_CLASSIFIER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ArtifactCache().root == tmp_path / "xdg" / "stream-classifier"
    assert ArtifactCache(tmp_path / "flag").root == tmp_path / "flag"
