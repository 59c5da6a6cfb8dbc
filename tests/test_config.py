import pytest

from stream.config import Config, load_toml, merge
from stream.errors import UserError


def write(tmp_path, text: str) -> str:
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return str(path)


def test_flags_override_config_which_overrides_defaults(tmp_path):
    values = load_toml(write(tmp_path, 'model = "resnet50"\nbatch = 4\nqueue_size = 16\ndashboard = false\n'))
    cfg = merge(values, {"batch": 2})
    assert cfg.model == "resnet50"  # from the file
    assert cfg.batch == 2  # the flag wins
    assert cfg.queue_size == 16
    assert cfg.dashboard == "off"  # TOML booleans map onto on/off
    assert cfg.weights == Config().weights  # untouched default


def test_shipped_configs_are_valid():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.toml"))
    assert configs, "configs/ should ship example configs"
    for path in configs:
        merge(load_toml(str(path)), {})


@pytest.mark.parametrize(
    "text,message",
    [
        ("batch = 0", "batch"),
        ('batch = "four"', "batch"),
        ('drop_policy = "newest"', "drop-policy"),
        ('device = "tpu"', "device"),
        ("colour = 3", "unknown key"),
        ("batch = ", "not valid TOML"),
        ('precision = "fp16"\ndevice = "cpu"', "fp16 needs a CUDA GPU"),
        ("target_fps = -5", "target-fps"),
    ],
)
def test_bad_config_values_are_user_errors(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        merge(load_toml(write(tmp_path, text)), {})


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_toml(str(tmp_path / "nope.toml"))
