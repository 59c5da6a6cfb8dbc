"""The Ray engine: the classifier as Ray Serve replicas, each stream an actor (stream.cluster.stream_actor).

It implements only what differs from the local engine (stream.session.session.Engine): `launch_on_ray`
joins or starts Ray and deploys the replicas; `RayEngine` starts a stream actor per stream (one joining the
run in progress gets its own; one removed is asked to stop and finalise its files), polls them a few times
a second and replays what their collectors saw into the session's own (stream.cluster.recording), so the
dashboard, the verdicts and the report are the local engine's, with a `ray` section added
(stream.cluster.figures). A stop asks every actor to end between two frames; the actors finish their sinks
and return, and everything this run started on Ray is removed.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

from stream.cluster.connect import Cluster, connect, leave, start_serve
from stream.cluster.recording import event_time, replay
from stream.cluster.wire import ActorPoll, ActorResult, ActorStatus, BatchTally
from stream.errors import StreamError, UserError
from stream.media.streams import PLACEHOLDER
from stream.session.launch import Launched, backend_options, calibration_for
from stream.session.records import NO_DROPS, REMOVED, EngineResult, StreamLive, StreamOutcome, StreamSlot

POLL_TIMEOUT_S = 10.0
ACTOR_START_TIMEOUT_S = 120.0
STOP_GRACE_S = 60.0  # after a stop, how long the streams get to finish their sinks
LIVE_IN_FLIGHT = 2  # a live frame waits for at most this many of its stream's requests
ACTOR_RESTARTS = 3


@dataclass
class ActorTrack:
    """The driver's record of one stream actor: the last status of each incarnation, its clock, its result."""

    slot: StreamSlot
    actor: object
    statuses: dict[int, ActorStatus] = field(default_factory=dict)
    offsets: dict[int, float] = field(default_factory=dict)  # incarnation → driver clock - actor clock
    result: ActorResult | None = None
    died: BaseException | None = None  # the actor died and was not restarted
    tally: BatchTally = field(default_factory=BatchTally)
    final_ingested: bool = False
    run: object = None  # the ObjectRef of its `run`, while it runs
    removed: Future | None = None

    @property
    def name(self) -> str:
        return self.slot.name

    @property
    def last(self) -> ActorStatus | None:
        return self.statuses[max(self.statuses)] if self.statuses else None

    def total(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.statuses.values())

    def drops(self) -> dict[str, int]:
        out = dict(NO_DROPS)
        for s in self.statuses.values():
            for k, v in s.drops.items():
                out[k] += v
        return out


def chunk(live: bool, batch: int, streams: int) -> int:
    """Frames per request: a live frame goes alone, at once; a file stream sends half a batch, so that
    batches still mix streams while Serve's per-request cost (its router runs in every caller) is shared.
    Measured, 4 file streams on 2 cores: one frame a request 62 fps, two 80-86, four 92."""
    return 1 if live else max(1, batch // min(streams, 2))


def in_flight(live: bool, batch: int, streams: int) -> int:
    """Requests out at once: a file keeps two batches' worth of frames out (one computing, one filling);
    live frames must not queue behind each other."""
    return LIVE_IN_FLIGHT if live else max(2, -(-2 * batch // chunk(live, batch, streams)))


@contextmanager
def launch_on_ray(cfg, specs, sources, plan) -> Iterator[Launched]:
    """Join (or start) Ray, deploy the replicas; the stream actors open their own sources on their nodes."""
    from stream.cluster.figures import ray_section, ray_summary

    calibration = calibration_for(cfg, specs, sources)  # the driver opened each source once: errors and facts
    print(f"joining Ray ({cfg.ray_address or 'local, on this machine'})...", flush=True)
    cluster = connect(cfg.ray_address)
    app, ledger = None, None
    engines: list[RayEngine] = []
    try:
        cluster = Cluster(cluster.address, cluster.started_here, start_serve())
        app = f"stream-classifier-{uuid.uuid4().hex[:8]}"
        ledger, card = _deploy(cfg, plan, calibration, app)

        def engine(totals, outputs, decisions=None) -> RayEngine:  # decisions: refused by config
            engines.append(RayEngine(cfg, plan, card, app, ledger, totals))
            return engines[0]

        def add_to_report(report: dict, outcome) -> None:
            import ray

            starts, restarts = ray.get(ledger.starts.remote(), timeout=POLL_TIMEOUT_S)
            report["ray"] = ray_section(cluster, list(engines[0].tracks.values()), starts, restarts, cfg.replicas)

        def owned(source):
            source.close()  # probed only: the stream's actor opens it again on its node
            return None

        yield Launched(card, engine, owned=owned, add_to_report=add_to_report,
                       summary_lines=lambda report: [ray_summary(report["ray"])])
    finally:
        import ray

        for e in engines:
            e.kill()
        if ledger is not None:
            ray.kill(ledger, no_restart=True)
        leave(cluster, app)


def _deploy(cfg, plan, calibration, app: str):
    from ray import serve

    from stream.cluster.deployment import Classifier, ReplicaJob, placement
    from stream.cluster.ledger import NAMESPACE, Ledger
    from stream.config import model_request

    ledger = Ledger.options(name=f"{app}-ledger", namespace=NAMESPACE).remote()
    batching = plan.batching
    job = ReplicaJob(model_request(cfg), cfg.backend, backend_options(cfg, plan, calibration),
                     batching.size, batching.timeout_s, cfg.warmup, f"{app}-ledger")
    n = max(len(plan.streams), 1)
    total = sum(in_flight(s.live, batching.size, n) for s in plan.streams) or LIVE_IN_FLIGHT * batching.size
    where = placement(cfg.replicas, cfg.replica_cpus, cfg.replica_gpus, batching.size, total)
    print(f"deploying {job.request.describe()} on {cfg.backend}: {where.replicas} replica(s), "
          f"batch {batching.size}, max_ongoing_requests {where.max_ongoing_requests}...", flush=True)
    deployment = Classifier.options(num_replicas=where.replicas, max_ongoing_requests=where.max_ongoing_requests,
                                    ray_actor_options={"num_cpus": where.cpus, "num_gpus": where.gpus})
    try:
        handle = serve.run(deployment.bind(job), name=app, route_prefix=None)
    except Exception as exc:  # noqa: BLE001 - Serve wraps the replica's error in its own text
        raise UserError(f"the classifier could not start on Ray: {_reason(exc, app)}") from None
    return ledger, handle.describe.remote().result(timeout_s=POLL_TIMEOUT_S * 6)


class RayEngine:
    name = "ray"

    def __init__(self, cfg, plan, card, app: str, ledger, totals) -> None:
        self.cfg, self.plan, self.card, self.app, self.ledger, self.totals = cfg, plan, card, app, ledger, totals
        self.tracks: dict[int, ActorTrack] = {}
        self.started = False
        self.keep_open = cfg.keep_running
        self.stop_reason: str | None = None
        self._nodes: list[str] = []

    # ---- streams

    def add(self, slot: StreamSlot) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from stream.cluster.ledger import NAMESPACE
        from stream.cluster.stream_actor import StreamActor

        if not self._nodes:
            self._nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        live, i = slot.plan.live, len(self.tracks)
        restarts = ACTOR_RESTARTS if live else 0
        # The nodes in turn: SPREAD, and soft affinity too, are only preferences (measured: two streams on two
        # nodes often shared one). Soft for a live stream, whose restarted actor must find a node if its own
        # is gone; a file stream is never restarted. Named, for operators and tests.
        where = NodeAffinitySchedulingStrategy(self._nodes[i % len(self._nodes)], soft=live)
        actor = StreamActor.options(name=f"{self.app}-stream-{slot.name}", namespace=NAMESPACE, num_cpus=0,
                                    scheduling_strategy=where, max_restarts=restarts,
                                    max_task_retries=restarts).remote(self._job(slot))
        track = self.tracks[slot.id] = ActorTrack(slot, actor)
        if self.started:
            self._launch([track])

    def _job(self, slot: StreamSlot):
        from stream.cluster.stream_actor import StreamJob
        from stream.media.streams import output_path

        cfg, batching = self.cfg, self.plan.batching
        n = max(len(self.plan.streams), len(self.tracks) + 1)
        predictions = output_path(cfg.predictions, slot.name, n, "--predictions")
        if predictions and n > 1 and PLACEHOLDER not in cfg.predictions:
            predictions = part_path(predictions, slot.name)  # one log for all: merged at the end
        return StreamJob(slot.name, slot.spec.uri, slot.plan, batching, self.plan.reconnect,
                         in_flight(slot.plan.live, batching.size, n), chunk(slot.plan.live, batching.size, n),
                         output_path(cfg.output, slot.name, n, "--output"), predictions, cfg.codec, cfg.resize,
                         self.card, self.app, f"{self.app}-ledger", cfg.max_image_pixels, self.plan.health)

    def _launch(self, tracks: list[ActorTrack]) -> None:
        """Every actor's process is up before its stream starts: started one by one (a worker process each, seconds
        apart on a small box) short files were read one after another and no batch mixed them."""
        import ray

        try:
            ray.get([t.actor.clock.remote() for t in tracks], timeout=ACTOR_START_TIMEOUT_S)
        except (ray.exceptions.RayError, TimeoutError) as exc:
            raise UserError(f"the stream actors did not start on Ray ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:160] if str(exc) else 'no reason given'})") from None
        now = time.perf_counter()
        for t in tracks:
            t.slot.stats.start(now)
            t.run = t.actor.run.remote()

    def remove(self, stream_id: int) -> Future:
        track = self.tracks[stream_id]
        if track.removed is None:
            track.removed = Future()
            track.actor.stop.remote(REMOVED)
            if track.run is None:
                track.removed.set_result([])
        return track.removed

    def forget(self, stream_id: int) -> None:
        """Kept: a removed stream's predictions part is merged into the shared log at the end (merge_predictions)."""
        return None

    def live(self, stream_id: int, now: float) -> StreamLive:
        t = self.tracks[stream_id]
        last = t.last
        state = REMOVED if t.removed is not None else (last.state if last else "connecting")
        return StreamLive(state, t.drops(), t.total("reconnects"), t.total("stalls"),
                          last.last_frame_age_s if last else None, last.queue_fill if last else 0)

    # ---- the run

    def start(self) -> None:
        self.started = True
        self._launch(list(self.tracks.values()))

    def observe(self, snap) -> None:
        pass

    def step(self, timeout_s: float) -> str | None:
        import ray

        running = {t.run: t for t in self.tracks.values() if t.run is not None}
        if running:
            done, _ = ray.wait(list(running), timeout=timeout_s)
            for ref in done:
                track = running.pop(ref)
                track.run = None
                try:
                    track.result = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the actor died and was not restarted
                    track.died = exc
                if track.removed is not None and not track.removed.done():
                    track.removed.set_result(track.result.sinks if track.result else [])
            self._poll(list(running.values()))
        elif self.keep_open:
            time.sleep(timeout_s)
        if running or self.keep_open:
            return None
        reasons = {t.result.end_reason for t in self.tracks.values() if t.result is not None}
        return reasons.pop() if len(reasons) == 1 else "every stream ended"

    def _poll(self, running: list[ActorTrack]) -> None:
        import ray

        refs = {id(t): (t, t.actor.poll.remote()) for t in running}
        polls: list[tuple[ActorTrack, ActorPoll]] = []
        for track, ref in refs.values():
            try:
                polls.append((track, ray.get(ref, timeout=POLL_TIMEOUT_S)))
            except (ray.exceptions.RayError, TimeoutError):
                pass  # restarting, or busy: its events wait for the next poll
        for track in self.tracks.values():
            if track.result is not None and not track.final_ingested:  # its run's last events come with it
                polls.append((track, track.result.poll))
                track.final_ingested = True
        self._ingest(polls)

    def _ingest(self, polls: list[tuple[ActorTrack, ActorPoll]]) -> None:
        import ray

        timed = []
        for track, poll in polls:
            status = poll.status
            if status.incarnation not in track.offsets:
                t0 = time.perf_counter()
                try:
                    actor_now = ray.get(track.actor.clock.remote(), timeout=POLL_TIMEOUT_S)
                    track.offsets[status.incarnation] = (t0 + time.perf_counter()) / 2 - actor_now
                except (ray.exceptions.RayError, TimeoutError):
                    track.offsets[status.incarnation] = t0 - status.now  # at most one poll's delay off
            offset = track.offsets[status.incarnation]
            if status.started_at is not None and track.slot.stats.started_at is None:
                track.slot.stats.start(status.started_at + offset)
            track.statuses[status.incarnation] = status
            track.tally.merge(poll.tally)
            timed += [(event_time(e) + offset, id(track), track, offset, e) for e in poll.events]
        for _, _, track, offset, event in sorted(timed, key=lambda t: (t[0], t[1])):  # time order for the windows
            replay([event], offset, track.slot.id, [track.slot.stats, self.totals])

    # ---- the end

    def finish(self, drain: bool = True, reason: str = "stopped") -> EngineResult:
        """Ask the streams still running to stop, wait for them to finalise their sinks (a grace), merge a shared
        predictions log; every stream's outcome."""
        running = [t for t in self.tracks.values() if t.run is not None]
        for t in running:
            t.actor.stop.remote(reason)
        deadline = time.monotonic() + STOP_GRACE_S
        self.keep_open = False
        while any(t.run is not None for t in self.tracks.values()) and time.monotonic() < deadline:
            self.step(0.25)
        outcomes = [self._outcome(t) for t in self.tracks.values()]
        merge_predictions(self.cfg, list(self.tracks.values()))
        return EngineResult(outcomes)

    def _outcome(self, t: ActorTrack) -> StreamOutcome:
        r, last = t.result, t.last
        error = t.died if r is None else r.error
        if r is None and error is None and t.run is not None:
            error = StreamError(f"{t.name}: its actor did not finish within {STOP_GRACE_S:.0f} s of the stop")
        state = REMOVED if t.removed is not None else (last.state if last and r else "failed")
        return StreamOutcome(t.slot, state, t.total("frames_read"), t.total("stale_discarded"), t.total("reconnects"),
                             t.total("stalls"), t.total("backlog_skipped"), t.drops(), error,
                             r.end_reason if r else f"{error}", list(r.sinks) if r else [], r.decode if r else None,
                             list(r.warnings) if r else [], r.health if r else None)

    def kill(self) -> None:
        import ray

        for t in self.tracks.values():
            ray.kill(t.actor, no_restart=True)


def part_path(path: str, name: str) -> str:
    return f"{path}.{name}.part"


def merge_predictions(cfg, tracks: list[ActorTrack]) -> None:
    """One predictions log for several streams, as the local engine writes it: each actor wrote its own
    part (`path.NAME.part`, on its node: shared storage across nodes), joined here stream by stream."""
    from stream.cluster.stream_actor import restart_path

    if not cfg.predictions or len(tracks) < 2 or PLACEHOLDER in cfg.predictions:
        return
    with open(cfg.predictions, "w", encoding="utf-8") as out:
        for t in tracks:
            for incarnation in sorted(t.statuses) or [0]:
                part = restart_path(part_path(cfg.predictions, t.name), incarnation)
                if os.path.exists(part):
                    with open(part, encoding="utf-8") as f:
                        out.write(f.read())
                    os.unlink(part)


def _reason(exc: BaseException, app: str) -> str:
    """The replica's own one-line error (a UserError names the fix) out of Serve's status, where it has one."""
    from ray import serve

    try:
        texts = [d.message for d in serve.status().applications[app].deployments.values()]
    except Exception:  # noqa: BLE001 - the status is only a better message; Serve's own text will do
        texts = []
    for text in [*texts, str(exc)]:
        for line in reversed(text.splitlines()):
            if "UserError:" in line:
                return line.split("UserError:", 1)[1].strip()
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else type(exc).__name__
