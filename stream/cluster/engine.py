"""The driver of `--engine ray`: plan as the local engine does, deploy, run the stream actors, report.

The run's decisions come from the same `stream.session.plan.plan_run`; the streams' statistics are replayed
into the project's own collectors (stream.cluster.recording), so the dashboard, the verdicts and the
report are the local engine's, with a `ray` section added (stream.cluster.figures). Ctrl-C asks every
stream actor to stop between two frames; the actors finish their sinks and return, and everything
this run started on Ray is removed.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from dataclasses import dataclass, field

from stream.cluster.connect import Cluster, connect, leave, start_serve
from stream.cluster.recording import event_time, replay
from stream.cluster.wire import BatchTally, StreamPoll, StreamResult, StreamStatus
from stream.config import Config
from stream.errors import StreamError, UserError

UI_EVERY_S = 0.25
POLL_TIMEOUT_S = 10.0
ACTOR_START_TIMEOUT_S = 120.0
STOP_GRACE_S = 60.0  # after a stop, how long the streams get to finish their sinks
LIVE_IN_FLIGHT = 2  # a live frame waits for at most this many of its stream's requests
ACTOR_RESTARTS = 3


@dataclass
class StreamState:
    """The driver's view of one stream: its collector, the last status of each incarnation, its clock."""

    stats: object  # stream.observe.stats.StatsCollector, fed by replay
    statuses: dict[int, StreamStatus] = field(default_factory=dict)
    offsets: dict[int, float] = field(default_factory=dict)  # incarnation → driver clock - actor clock
    result: StreamResult | None = None
    died: BaseException | None = None  # the actor died and was not restarted
    tally: BatchTally = field(default_factory=BatchTally)
    final_ingested: bool = False

    @property
    def last(self) -> StreamStatus | None:
        return self.statuses[max(self.statuses)] if self.statuses else None

    def total(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.statuses.values())

    def drops(self) -> dict[str, int]:
        out = {"full": 0, "stale": 0, "at_stop": 0}
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


def run_on_ray(cfg: Config, specs, process_start: float, interrupts=None) -> int:
    from stream.backends.onnxruntime_backend import available_cores
    from stream.session.orchestrator import _calibration, _open
    from stream.session.plan import plan_run

    sources = []
    try:
        for spec in specs:  # the driver opens each source once, for its one-line errors and its facts
            sources.append(_open(spec.uri))
        infos = [s.info for s in sources]
        calibration = _calibration(cfg, specs, sources)
    finally:
        for source in sources:
            source.close()
    plan = plan_run(cfg, specs, infos, available_cores())
    print(f"joining Ray ({cfg.ray_address or 'local, on this machine'})...", flush=True)
    cluster = connect(cfg.ray_address)
    app = None
    try:
        cluster = Cluster(cluster.address, cluster.started_here, start_serve())
        app = f"stream-classifier-{uuid.uuid4().hex[:8]}"
        return _Run(cfg, specs, infos, plan, calibration, app, cluster, process_start).execute(interrupts)
    finally:
        leave(cluster, app)


class _Run:
    def __init__(self, cfg, specs, infos, plan, calibration, app: str, cluster: Cluster, process_start: float):
        self.cfg, self.specs, self.infos, self.plan = cfg, specs, infos, plan
        self.calibration, self.app, self.cluster, self.process_start = calibration, app, cluster, process_start
        self.actors: list = []
        self.ledger = None

    def execute(self, interrupts) -> int:
        import ray

        try:
            return self._execute(interrupts)
        finally:
            for actor in [*self.actors, self.ledger]:
                if actor is not None:
                    ray.kill(actor, no_restart=True)

    def _execute(self, interrupts) -> int:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from stream.cluster.ledger import NAMESPACE, Ledger

        plan = self.plan
        ledger_name = f"{self.app}-ledger"
        self.ledger = Ledger.options(name=ledger_name, namespace=NAMESPACE).remote()
        handle, card = self._deploy(ledger_name)
        jobs = self._jobs(card, ledger_name)
        info, ui, states, totals = self._views(card)
        startup_s = time.perf_counter() - self.process_start
        from stream.cluster.stream_actor import StreamActor

        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        for i, (job, stream_plan) in enumerate(zip(jobs, plan.streams, strict=True)):
            restarts = ACTOR_RESTARTS if stream_plan.live else 0
            # The nodes in turn: SPREAD, and soft affinity too, are only preferences (measured: two streams on two
            # nodes often shared one). Soft for a live stream, whose restarted actor must find a node if its own
            # is gone; a file stream is never restarted. Named, for operators and tests.
            where = NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=stream_plan.live)
            self.actors.append(StreamActor.options(name=f"{self.app}-stream-{job.name}", namespace=NAMESPACE,
                                                   num_cpus=0, scheduling_strategy=where, max_restarts=restarts,
                                                   max_task_retries=restarts).remote(job))
        # Every actor's process is up before any stream starts: started one by one (a worker process each,
        # seconds apart on a small box) short files were read one after another and no batch mixed them.
        try:
            ray.get([actor.clock.remote() for actor in self.actors], timeout=ACTOR_START_TIMEOUT_S)
        except (ray.exceptions.RayError, TimeoutError) as exc:
            raise UserError(f"the stream actors did not start on Ray ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:160] if str(exc) else 'no reason given'})") from None
        runs = {actor.run.remote(): i for i, actor in enumerate(self.actors)}
        status, end_reason = "completed", "end of input"
        stopped_at = None
        with interrupts.deferred() if interrupts else contextlib.nullcontext():
            try:
                while runs:
                    done, _ = ray.wait(list(runs), timeout=UI_EVERY_S)
                    for ref in done:
                        i = runs.pop(ref)
                        try:
                            states[i].result = ray.get(ref)
                        except ray.exceptions.RayError as exc:  # the actor died and was not restarted
                            states[i].died = exc
                    self._poll(states, totals, [i for i in runs.values()])
                    ui.update(self._snapshot(states, totals))
                    reason = interrupts.pending() if interrupts else None
                    if reason and stopped_at is None:
                        status, end_reason, stopped_at = "interrupted", reason, time.monotonic()
                        for actor in self.actors:
                            actor.stop.remote(reason)
                    if stopped_at is not None and time.monotonic() - stopped_at > STOP_GRACE_S:
                        break
            finally:
                ui.close()
        starts, restarts = ray.get(self.ledger.starts.remote(), timeout=POLL_TIMEOUT_S)
        return self._finish(info, card, states, totals, status, end_reason, startup_s, starts, restarts)

    def _deploy(self, ledger_name: str):
        from ray import serve

        from models.spec import ModelRequest
        from stream.cluster.deployment import Classifier, ReplicaJob, placement
        from stream.session.orchestrator import backend_options

        cfg, batching = self.cfg, self.plan.batching
        options = backend_options(cfg, self.plan, self.calibration)
        job = ReplicaJob(ModelRequest(cfg.model, cfg.weights), cfg.backend, options, batching.size,
                         batching.timeout_s, cfg.warmup, ledger_name)
        n = len(self.plan.streams)
        total = sum(in_flight(s.live, batching.size, n) for s in self.plan.streams)
        where = placement(cfg.replicas, cfg.replica_cpus, cfg.replica_gpus, batching.size, total)
        print(f"deploying {cfg.model} ({cfg.weights} weights) on {cfg.backend}: {where.replicas} replica(s), "
              f"batch {batching.size}, max_ongoing_requests {where.max_ongoing_requests}...", flush=True)
        deployment = Classifier.options(num_replicas=where.replicas, max_ongoing_requests=where.max_ongoing_requests,
                                        ray_actor_options={"num_cpus": where.cpus, "num_gpus": where.gpus})
        try:
            handle = serve.run(deployment.bind(job), name=self.app, route_prefix=None)
        except Exception as exc:  # noqa: BLE001 - Serve wraps the replica's error in its own text
            raise UserError(f"the classifier could not start on Ray: {_reason(exc, self.app)}") from None
        return handle, handle.describe.remote().result(timeout_s=POLL_TIMEOUT_S * 6)

    def _jobs(self, card, ledger_name: str):
        from stream.cluster.stream_actor import StreamJob
        from stream.media.streams import PLACEHOLDER, output_path

        cfg, n = self.cfg, len(self.specs)
        jobs = []
        for spec, stream_plan in zip(self.specs, self.plan.streams, strict=True):
            predictions = output_path(cfg.predictions, spec.name, n, "--predictions")
            if predictions and n > 1 and PLACEHOLDER not in cfg.predictions:
                predictions = part_path(predictions, spec.name)  # one log for all: merged at the end
            jobs.append(StreamJob(spec.name, spec.uri, stream_plan, self.plan.batching, self.plan.reconnect,
                                  in_flight(stream_plan.live, self.plan.batching.size, n),
                                  chunk(stream_plan.live, self.plan.batching.size, n),
                                  output_path(cfg.output, spec.name, n, "--output"), predictions, cfg.codec,
                                  cfg.resize, card, self.app, ledger_name))
        return jobs

    def _views(self, card):
        from stream.observe.dashboard import LiveDashboard, StatusPrinter
        from stream.observe.realtime import Target
        from stream.observe.runinfo import RunInfo
        from stream.observe.stats import StatsCollector

        cfg, plan, batch = self.cfg, self.plan, self.plan.batching.size
        policies = ["latest" if p.live else "block" for p in plan.streams]
        model = card.model
        info = RunInfo(self.infos[0], model.name, model.weights, model.random_weights, card.backend, card.device,
                       card.precision, batch, policies[0], cfg.resize, model.preprocess.interpolation,
                       tuple((s.name, i, p) for s, i, p in zip(self.specs, self.infos, policies, strict=True)))
        states: list[StreamState] = []
        for p in plan.streams:
            state = StreamState(None)
            state.stats = StatsCollector(lambda st=state: st.last.queue_fill if st.last else 0, p.buffer,
                                         lambda st=state: sum(st.drops().values()), lambda: None, p.total,
                                         Target(p.target_fps, p.judge_latency, batch, p.latency_budget_ms))
            states.append(state)
        total = None if any(p.total is None for p in plan.streams) else sum(p.total for p in plan.streams)
        fastest = max(plan.streams, key=lambda p: p.target_fps)
        totals = StatsCollector(lambda: sum(s.last.queue_fill for s in states if s.last), sum(p.buffer for p in
                                plan.streams), lambda: sum(sum(s.drops().values()) for s in states), lambda: None,
                                total, Target(fastest.target_fps, any(p.judge_latency for p in plan.streams), batch,
                                              fastest.latency_budget_ms))
        live_ui = cfg.dashboard == "on" or (cfg.dashboard == "auto" and sys.stdout.isatty())
        return info, LiveDashboard(info) if live_ui else StatusPrinter(cfg.status_every), states, totals

    def _poll(self, states: list[StreamState], totals, running: list[int]) -> None:
        import ray

        refs = {i: self.actors[i].poll.remote() for i in running}
        polls: dict[int, StreamPoll] = {}
        for i, ref in refs.items():
            try:
                polls[i] = ray.get(ref, timeout=POLL_TIMEOUT_S)
            except (ray.exceptions.RayError, TimeoutError):
                pass  # restarting, or busy: its events wait for the next poll
        for i, state in enumerate(states):
            if state.result is not None and not state.final_ingested:  # its run's last events come with it
                polls[i] = state.result.poll
                state.final_ingested = True
        self.ingest(states, totals, polls)

    def ingest(self, states: list[StreamState], totals, polls: dict[int, StreamPoll]) -> None:
        import ray

        timed = []
        for i, poll in polls.items():
            state, status = states[i], poll.status
            if status.incarnation not in state.offsets:
                t0 = time.perf_counter()
                try:
                    actor_now = ray.get(self.actors[i].clock.remote(), timeout=POLL_TIMEOUT_S)
                    state.offsets[status.incarnation] = (t0 + time.perf_counter()) / 2 - actor_now
                except (ray.exceptions.RayError, TimeoutError):
                    state.offsets[status.incarnation] = t0 - status.now  # at most one poll's delay off
            offset = state.offsets[status.incarnation]
            if status.started_at is not None and state.stats.started_at is None:
                state.stats.start(status.started_at + offset)
                if totals.started_at is None or status.started_at + offset < totals.started_at:
                    totals.start(status.started_at + offset)
            state.statuses[status.incarnation] = status
            state.tally.merge(poll.tally)
            timed += [(event_time(e) + offset, i, offset, e) for e in poll.events]
        for _, i, offset, event in sorted(timed, key=lambda t: t[0]):  # the run's rolling windows want time order
            replay([event], offset, i, [states[i].stats, totals])

    def _snapshot(self, states: list[StreamState], totals):
        from dataclasses import replace

        from stream.observe.realtime import combine
        from stream.observe.stats import StreamRow
        from stream.pipeline.capture import ENDED, FAILED

        now = time.perf_counter()
        snap = totals.snapshot(now)
        rows = []
        for spec, state in zip(self.specs, states, strict=True):
            last, stats = state.last, state.stats
            status = last.state if last else "connecting"
            ended = status in (ENDED, FAILED) and stats.last_rendered_at is not None
            s = stats.snapshot(min(now, stats.last_rendered_at) if ended else now)
            age = last.last_frame_age_s if last else None
            rows.append(StreamRow(spec.name, status, s, state.drops(), state.total("reconnects"),
                                  state.total("stalls"), age))
        snap = snap.with_streams(rows)
        if len(rows) > 1:
            snap = replace(snap, verdict=combine([(r.name, r.snap.verdict) for r in rows]))
        return snap

    def _finish(self, info, card, states, totals, status, end_reason, startup_s, starts, restarts) -> int:
        from stream.cluster.figures import ray_section, ray_summary
        from stream.observe.report import LoadTimes, build_report, summary, write_report
        from stream.session.local import RunOutcome, StreamOutcome
        from stream.session.orchestrator import _check_truncated, _exit_status

        cfg = self.cfg
        outcome = RunOutcome(status, end_reason, totals, sum(s.total("frames_read") for s in states),
                             sum(s.total("stale_discarded") for s in states))
        errors, written = [], []
        for spec, state in zip(self.specs, states, strict=True):
            r, last = state.result, state.last
            error = state.died if r is None else r.error
            if r is None and error is None:
                error = StreamError(f"{spec.name}: its actor did not finish within {STOP_GRACE_S:.0f} s of the stop")
            if error is not None:
                errors.append(error)
            outcome.warnings += r.warnings if r else []
            video = [s["written"] for s in (r.sinks if r else []) if s["kind"] == "video"]
            written.append(video[0] if video else None)
            outcome.streams.append(StreamOutcome(
                spec.name, state.stats, state.total("frames_read"), state.total("stale_discarded"),
                last.state if last and r else "failed", state.total("reconnects"), state.total("stalls"),
                state.total("backlog_skipped"), state.drops(), error, r.end_reason if r else f"{error}", _Decoded(r)))
        if errors:
            lost = len(errors)
            error = errors[0] if lost == 1 or not all(isinstance(e, StreamError) for e in errors) else StreamError(
                f"{lost} of {len(states)} streams lost: " + "; ".join(str(e) for e in errors))
            outcome.status, outcome.error = "error", error
            outcome.end_reason = f"{type(error).__name__}: {error}"
        load = LoadTimes(card.load, card.warmup_s, startup_s)
        report = build_report(info, outcome, load, written, self.process_start, None)
        report["ray"] = ray_section(self.cluster, self.specs, states, starts, restarts, cfg.replicas)
        truncated = _check_truncated(cfg, outcome, report)
        merge_predictions(cfg, self.specs, states)
        if cfg.report:
            write_report(report, cfg.report)
        print(summary(report))
        print(ray_summary(report["ray"]))
        return _exit_status(outcome, report, truncated)


def part_path(path: str, name: str) -> str:
    return f"{path}.{name}.part"


def merge_predictions(cfg: Config, specs, states: list[StreamState]) -> None:
    """One predictions log for several streams, as the local engine writes it: each actor wrote its own
    part (`path.NAME.part`, on its node: shared storage across nodes), joined here stream by stream."""
    import os

    from stream.cluster.stream_actor import restart_path
    from stream.media.streams import PLACEHOLDER

    if not cfg.predictions or len(specs) < 2 or PLACEHOLDER in cfg.predictions:
        return
    with open(cfg.predictions, "w", encoding="utf-8") as out:
        for spec, state in zip(specs, states, strict=True):
            for incarnation in sorted(state.statuses) or [0]:
                part = restart_path(part_path(cfg.predictions, spec.name), incarnation)
                if os.path.exists(part):
                    with open(part, encoding="utf-8") as f:
                        out.write(f.read())
                    os.unlink(part)


class _Decoded:
    """Stands for a stream's source in the outcome: its decode check ran in the actor, at the stream's end."""

    def __init__(self, result: StreamResult | None) -> None:
        self.check = result.decode if result else None

    def decode_check(self, frames_read: int):
        return self.check


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
