"""The rules file (`--rules rules.toml`): how labels are smoothed, and which steady labels fire events.

```toml
[smoothing]                 # for every stream
method = "ema"              # ema | majority | none
alpha = 0.3                 # ema: weight of the newest frame
window = 9                  # majority: frames voted over
enter = 0.6                 # smoothed probability to take a label
exit = 0.4                  # ... below which it is left (hysteresis)
min_dwell_s = 0.5           # a label held at least this long before it counts

[[rule]]
name = "bird-at-feeder"
labels = ["goldfinch", "house finch", "junco"]   # any of these steady labels (globs, any case)
streams = ["feeder*"]       # globs on stream names; default all
min_duration_s = 1.0
cooldown_s = 30
clip = true
pre_roll_s = 3
post_roll_s = 2
```
Every mistake is one line naming the file, the table and the key.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field

from stream.errors import UserError

METHODS = ("ema", "majority", "none")
RULE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # it names MQTT topics, clip files and metric labels
MAX_ROLL_S = 60.0


@dataclass(frozen=True)
class Smoothing:
    method: str = "ema"
    alpha: float = 0.3
    window: int = 9
    enter: float = 0.6
    exit: float = 0.4
    min_dwell_s: float = 0.5


@dataclass(frozen=True)
class Rule:
    name: str
    labels: tuple[str, ...]
    streams: tuple[str, ...] = ("*",)
    min_duration_s: float = 1.0
    cooldown_s: float = 0.0
    clip: bool = False
    pre_roll_s: float = 3.0
    post_roll_s: float = 2.0

    def watches(self, stream: str) -> bool:
        return any(fnmatch.fnmatchcase(stream, pattern) for pattern in self.streams)

    def matches(self, label: str) -> bool:
        label = label.casefold()
        return any(fnmatch.fnmatchcase(label, pattern.casefold()) for pattern in self.labels)


@dataclass(frozen=True)
class RuleSet:
    smoothing: Smoothing = field(default_factory=Smoothing)
    rules: tuple[Rule, ...] = ()

    def for_stream(self, stream: str) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.watches(stream))

    def max_pre_roll_s(self, stream: str) -> float:
        return max((r.pre_roll_s for r in self.for_stream(stream) if r.clip), default=0.0)


def _number(where: str, key: str, value, low: float, high: float, integer: bool = False) -> float:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or not low <= value <= high:
        what = "a whole number" if integer else "a number"
        raise UserError(f"{where}: {key} = {value!r}; use {what} from {low:g} to {high:g}")
    return value if integer else float(value)


def _strings(where: str, key: str, value) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v.strip() for v in items):
        raise UserError(f"{where}: {key} = {value!r}; use a non-empty list of strings")
    return tuple(v.strip() for v in items)


def _unknown(where: str, table: dict, known: set[str]) -> None:
    extra = sorted(set(table) - known)
    if extra:
        raise UserError(f"{where}: unknown key(s) {', '.join(extra)}; valid keys: {', '.join(sorted(known))}")


def parse_smoothing(table, where: str) -> Smoothing:
    if not isinstance(table, dict):
        raise UserError(f"{where}: [smoothing] must be a table")
    _unknown(where, table, {"method", "alpha", "window", "enter", "exit", "min_dwell_s"})
    d = Smoothing()
    method = table.get("method", d.method)
    if method not in METHODS:
        raise UserError(f"{where}: method = {method!r}; choose one of {', '.join(METHODS)}")
    enter = _number(where, "enter", table.get("enter", d.enter), 0.0, 1.0)
    exit_ = _number(where, "exit", table.get("exit", d.exit), 0.0, 1.0)
    if exit_ > enter:
        raise UserError(f"{where}: exit = {exit_:g} is above enter = {enter:g}; exit must be at most enter")
    alpha = _number(where, "alpha", table.get("alpha", d.alpha), 0.0, 1.0)
    if alpha == 0.0:
        raise UserError(f"{where}: alpha = 0 would never change the label; use a number above 0, up to 1")
    return Smoothing(method, alpha, int(_number(where, "window", table.get("window", d.window), 1, 1000, True)),
                     enter, exit_, _number(where, "min_dwell_s", table.get("min_dwell_s", d.min_dwell_s), 0, 3600))


def parse_rule(table, where: str) -> Rule:
    if not isinstance(table, dict):
        raise UserError(f"{where}: each [[rule]] must be a table")
    _unknown(where, table, {"name", "labels", "streams", "min_duration_s", "cooldown_s", "clip", "pre_roll_s",
                            "post_roll_s"})
    name = table.get("name")
    if not isinstance(name, str) or not RULE_NAME.fullmatch(name):
        raise UserError(f"{where}: name = {name!r}; give each rule a name of letters, digits, '_', '.', '-'")
    where = f"{where} ({name})"
    if "labels" not in table:
        raise UserError(f"{where}: labels is missing; list the steady labels that fire it")
    clip = table.get("clip", False)
    if not isinstance(clip, bool):
        raise UserError(f"{where}: clip = {clip!r}; use true or false")
    return Rule(name, _strings(where, "labels", table["labels"]), _strings(where, "streams", table.get("streams", "*")),
                _number(where, "min_duration_s", table.get("min_duration_s", 1.0), 0, 86_400),
                _number(where, "cooldown_s", table.get("cooldown_s", 0.0), 0, 86_400 * 7), clip,
                _number(where, "pre_roll_s", table.get("pre_roll_s", 3.0), 0, MAX_ROLL_S),
                _number(where, "post_roll_s", table.get("post_roll_s", 2.0), 0, MAX_ROLL_S))


def parse_rules(data: dict, where: str) -> RuleSet:
    _unknown(where, data, {"smoothing", "rule"})
    smoothing = parse_smoothing(data.get("smoothing", {}), f"{where} [smoothing]")
    tables = data.get("rule", [])
    if not isinstance(tables, list):
        raise UserError(f"{where}: rule must be [[rule]] tables")
    rules = tuple(parse_rule(t, f"{where} [[rule]] #{i + 1}") for i, t in enumerate(tables))
    names = [r.name for r in rules]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"{where}: rule name(s) given twice: {', '.join(twice)}; give each rule its own name")
    return RuleSet(smoothing, rules)


def unknown_labels(rules: RuleSet, categories: list[str]) -> list[str]:
    """Label patterns no class of the model matches: a typo would silently never fire."""
    folded = [c.casefold() for c in categories]
    return [p for r in rules.rules for p in r.labels
            if not any(fnmatch.fnmatchcase(c, p.casefold()) for c in folded)]
