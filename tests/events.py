"""Shared by the event output tests: rules that fire on the sample clip, and the records a run leaves."""

from __future__ import annotations

import json
import socket
from pathlib import Path

# The sample clip shows a cat, an espresso and a missile, two seconds each: six events per pass.
RULES = """
[smoothing]
enter = 0.3
exit = 0.2
[[rule]]
name = "cat"
labels = ["*cat*", "tabby"]
min_duration_s = 0.5
[[rule]]
name = "coffee"
labels = ["espresso", "*coffee*", "cup"]
min_duration_s = 0.5
[[rule]]
name = "missile"
labels = ["missile", "projectile*"]
min_duration_s = 0.5
"""
MODEL = ["--model", "efficientnet_lite0", "--no-display"]
SOURCE_FPS = 30.0  # the sample clip's


def rules_file(folder: Path) -> Path:
    path = folder / "rules.toml"
    path.write_text(RULES)
    return path


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def delivery(report: Path, prefix: str) -> dict:
    """The report's delivery counts of the output whose name starts with `prefix`."""
    found = [d for d in json.loads(report.read_text())["decisions"]["delivery"] if d["output"].startswith(prefix)]
    assert len(found) == 1, found
    return found[0]


def pipeline_fps(report: Path) -> float:
    return json.loads(report.read_text())["fps"]["pipeline"]
