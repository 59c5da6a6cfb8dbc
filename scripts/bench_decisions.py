"""What the decisions stage costs per frame (steady label, rules, segments), on synthetic top-5 sequences.

    .venv/bin/python scripts/bench_decisions.py [--frames 20000]

One stream; the label changes every 10 s (300 frames) among five classes, each frame's top-5 holding the
current class at 0.6–0.9 and four random others. Prints microseconds per frame without rules and with five.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream.decisions.hub import Decisions  # noqa: E402
from stream.decisions.rules import Rule, RuleSet, Smoothing  # noqa: E402
from stream.frames import Classified, Frame, Prediction, StageTimes, TopK  # noqa: E402


def frames(count: int) -> list[Classified]:
    labels = [f"class{i}" for i in range(1000)]
    rng = random.Random(0)
    items = []
    for i in range(count):
        base = (i // 300) % 5
        top = [TopK(base, labels[base], 0.6 + rng.random() * 0.3)]
        top += [TopK(j, labels[j], 0.02) for j in rng.sample(range(5, 1000), 4)]
        items.append(Classified(Frame(i, None, 0.0, i / 30), Prediction(i, top, StageTimes(0, 0, 0, 1), 0.0)))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    items = frames(parser.parse_args().frames)
    five = tuple(Rule(f"r{k}", (f"class{k}",), min_duration_s=1.0) for k in range(5))
    for rules in (RuleSet(), RuleSet(Smoothing(), five)):
        hub = Decisions(rules)
        decider = hub.open("s")
        started = time.perf_counter()
        for item in items:
            decider.rendered(decider.decide(item), None)
        spent = time.perf_counter() - started
        events = sum(n for *_, n in hub.view().counts)
        print(f"{len(rules.rules)} rules: {spent / len(items) * 1e6:.1f} µs per frame ({events} events)")


if __name__ == "__main__":
    main()
