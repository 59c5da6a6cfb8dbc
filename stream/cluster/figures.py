"""The report's `ray` section: where the work ran, how it was batched, what was restarted."""

from __future__ import annotations

from collections import Counter, defaultdict

from stream.cluster.wire import BatchTally

INPUT_BYTES = 3 * 224 * 224  # one request's pixels; the logits come back as 1000 float32 (4 KB)


def _batches(frames: int, size: int) -> float:
    """Every frame of a batch reports it once; a stream that died mid-run may leave a fraction."""
    count = frames / size
    return int(count) if count.is_integer() else round(count, 2)


def ray_section(cluster, tracks, starts: list[tuple[str, str]], stream_starts: dict[str, int],
                replicas: int) -> dict:
    """`tracks`: the driver's stream.cluster.engine.ActorTrack of every stream."""
    tally = BatchTally()
    for state in tracks:
        tally.merge(state.tally)
    by_replica: dict[str, dict] = {}
    sizes: Counter = Counter()
    for (replica, node, size), frames in sorted(tally.frames.items()):
        row = by_replica.setdefault(replica, {"replica": replica, "node": node, "frames": 0, "batch_sizes": {}})
        row["frames"] += frames
        row["batch_sizes"][str(size)] = _batches(frames, size)
        sizes[size] += frames
    for replica, row in by_replica.items():
        row["frames_in_multi_stream_batches"] = tally.multi_stream[replica]
        model_s = tally.model_s[replica]
        row["model_fps"] = row["frames"] / model_s if model_s > 0 else None
        row["batches"] = sum(row["batch_sizes"].values())
    nodes: dict[str, dict] = defaultdict(lambda: {"streams": [], "replicas": [], "frames_classified": 0})
    for replica, node in starts:
        nodes[node]["replicas"].append(replica)
    for row in by_replica.values():
        nodes[row["node"]]["frames_classified"] += row["frames"]
    streams = []
    for state in tracks:
        last = state.last
        if last is not None:
            nodes[last.node]["streams"].append(state.name)
        streams.append({"name": state.name, "node": last.node if last else None,
                        "actor_restarts": max(stream_starts.get(state.name, 1) - 1, 0),
                        "retried_requests": state.total("retried")})
    return {
        "address": cluster.address,
        "replicas": list(by_replica.values()),
        "nodes": [{"node": node, **row} for node, row in nodes.items()],
        "streams": streams,
        "batch_sizes": {str(n): _batches(f, n) for n, f in sorted(sizes.items())},
        "frames_in_multi_stream_batches": sum(tally.multi_stream.values()),
        "restarts": {"replicas": max(len(starts) - replicas, 0),
                     "stream_actors": sum(s["actor_restarts"] for s in streams)},
        "retried_requests": sum(s["retried_requests"] for s in streams),
        "request_bytes": INPUT_BYTES,
    }


def ray_summary(section: dict) -> str:
    sizes = ", ".join(f"{n}: {b}" for n, b in section["batch_sizes"].items()) or "none"
    r = section["restarts"]
    return (f"ray     {len(section['nodes'])} node(s), {len(section['replicas'])} replica(s) served; batches by size "
            f"{{{sizes}}}; {section['frames_in_multi_stream_batches']} frames in batches mixing streams; restarts: "
            f"{r['replicas']} replica(s), {r['stream_actors']} stream actor(s); "
            f"{section['retried_requests']} request(s) retried")
