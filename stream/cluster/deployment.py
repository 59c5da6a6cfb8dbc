"""The classifier as a Ray Serve deployment: the project's own backends behind `@serve.batch`.

Requests are a frame or a few of one stream (`wire.ModelInput`, uint8) from any number of stream
actors; Serve's batch queue gathers up to `--batch` frames of them (`batch_size_fn` counts frames),
waiting at most `--batch-timeout-ms` after the first. The
replica normalises the whole-valued pixels exactly as `stream.pipeline.preprocess` does (the same float32
`pixel * scale + shift`), so the backend sees bit for bit the local engine's input.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import math
import time
from dataclasses import dataclass

import numpy as np
import ray
from ray import serve

from models.spec import ModelRequest
from stream.backends import BackendOptions, backend_class
from stream.backends.cache import ArtifactCache
from stream.cluster.ledger import ledger
from stream.cluster.wire import ModelCard, ModelInput, Reply, frames_in
from stream.pipeline.resample import normalisation

DEPLOYMENT = "Classifier"


@dataclass(frozen=True)
class ReplicaJob:
    request: ModelRequest
    backend: str
    options: BackendOptions
    batch: int
    batch_timeout_s: float
    warmup: int
    ledger: str  # the run's ledger actor (stream.cluster.ledger), told of every replica start


@dataclass(frozen=True)
class Placement:
    replicas: int
    cpus: float
    gpus: float
    max_ongoing_requests: int


def placement(replicas: int, cpus: float, gpus: float, batch: int, in_flight_total: int) -> Placement:
    """`max_ongoing_requests` caps what a replica holds at once, and so silently caps @serve.batch's batch
    (ray-project/ray#43288): at least two batches (one running, one filling), and enough that every
    stream's requests in flight, spread over the replicas, are admitted rather than queued at the caller."""
    return Placement(replicas, cpus, gpus, max(2 * batch, math.ceil(in_flight_total / replicas)))


def normalise(pixels: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """N×3×H×W uint8 → the float32 input, by the very operations stream.pipeline.preprocess applies to its
    rounded pixels."""
    batch = pixels.astype(np.float32)
    batch *= scale
    batch += shift
    return batch


def serve_grpc_on_loopback() -> bool:
    """On a node that lives on loopback (the Ray a run starts here: stream.cluster.connect.loopback_only), Serve's
    gRPC server for calls between deployments listens on loopback too; whether it was arranged.

    Ray 2.60's replica binds that server to every interface ("[::]:0") whatever the node's address. It does so
    after the deployment's constructor has run, through a name of its replica module, which is replaced here
    in this replica's process. tests/test_ray_loopback.py fails if a Ray upgrade changes this."""
    if not ipaddress.ip_address(ray.util.get_node_ip_address()).is_loopback:
        return False  # a cluster's node: other nodes' deployments may call it
    from ray.serve._private import replica

    bind = getattr(replica, "add_port_to_grpc_server", None)
    if bind is None or getattr(bind, "loopback", False):
        return bind is not None

    def on_loopback(server, address: str):
        return bind(server, "127.0.0.1" + address[len("[::]"):] if address.startswith("[::]:") else address)

    on_loopback.loopback = True
    replica.add_port_to_grpc_server = on_loopback
    return True


@serve.deployment(name=DEPLOYMENT)
class Classifier:
    def __init__(self, job: ReplicaJob) -> None:
        serve_grpc_on_loopback()
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id
        self.node = ray.get_runtime_context().get_node_id()
        cls = backend_class(job.backend)
        # Replicas on one node share its cache: the first exports (ONNX, engine), the others wait and load it.
        lock_path = ArtifactCache(job.options.cache_dir).root / ".replica-build.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.backend = cls(job.request, job.options)
        warmup_s = self.backend.warmup(job.batch, job.warmup)
        if job.batch > 1:  # partial batches (a quiet moment) must not pay for a new shape
            warmup_s += self.backend.warmup(1, min(job.warmup, 2))
        b = self.backend
        self.card = ModelCard(b.model, b.name, b.device, b.precision, b.load, warmup_s)
        self.scale, self.shift = normalisation(b.model.preprocess)
        self.classify.set_max_batch_size(job.batch)
        self.classify.set_batch_wait_timeout_s(job.batch_timeout_s)
        ray.get(ledger(job.ledger).replica_started.remote(self.replica, self.node))

    def describe(self) -> ModelCard:
        return self.card

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05, batch_size_fn=frames_in)  # both reset in __init__
    async def classify(self, inputs: list[ModelInput]) -> list[Reply]:
        batch = normalise(np.concatenate([i.pixels for i in inputs]), self.scale, self.shift)
        if self.backend.input_device != "cpu":
            import torch

            batch = torch.from_numpy(batch).to(self.backend.input_device)
        # In a thread: the event loop keeps taking requests, so the next batch fills while this one runs.
        started = time.perf_counter()
        logits = await asyncio.to_thread(self.backend.infer, batch)
        model_ms = (time.perf_counter() - started) * 1000
        streams, n = len({i.stream for i in inputs}), len(batch)
        bounds = np.cumsum([len(i.pixels) for i in inputs])[:-1]
        return [Reply(rows, n, streams, model_ms, self.replica, self.node) for rows in np.split(logits, bounds)]

    def __del__(self) -> None:
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.close()
