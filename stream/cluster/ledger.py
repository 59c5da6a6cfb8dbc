"""A run's ledger: one small actor that every replica and stream actor reports its start to.

Serve restarts a dead replica as a new one and Ray restarts a dead actor by running its constructor
again; neither keeps a count the driver can read, so each start is counted here. A stream actor's
start number is also its incarnation: outputs of a restarted stream go to files of their own.
"""

from __future__ import annotations

from collections import Counter

import ray

NAMESPACE = "stream-classifier"


@ray.remote(num_cpus=0)
class Ledger:
    def __init__(self) -> None:
        self.replicas: list[tuple[str, str]] = []  # (replica, node), in order of start
        self.streams: Counter = Counter()

    def replica_started(self, replica: str, node: str) -> None:
        self.replicas.append((replica, node))

    def stream_started(self, name: str) -> int:
        """This start's incarnation: 0 the first time, n after the n-th restart."""
        self.streams[name] += 1
        return self.streams[name] - 1

    def starts(self) -> tuple[list[tuple[str, str]], dict[str, int]]:
        return list(self.replicas), dict(self.streams)


def ledger(name: str):
    return ray.get_actor(name, namespace=NAMESPACE)
