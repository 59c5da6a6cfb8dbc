"""One run from settings to exit status, whichever engine: prepare, launch, observe, conclude.

- prepare: the streams and their output paths, every check a user can fail (as one line, before any model
  loads: stream.errors), the sources opened, the plan, int8's calibration and the backend options;
- launch: the engine loads the model (stream.session.launch: in this process, or on Ray Serve) and says what
  it loaded;
- observe: the session (stream.session.session) runs the engine and feeds the dashboard or status line and
  the web preview;
- conclude: outcome → report → warnings → exit status, by the same rules for both engines.

Streams can join (`add_stream`) and leave (`remove_stream`) while the run goes on, by the same checks; under
`--serve` the REST API calls them (stream.session.service), and `--persist` keeps the sources file listing them.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from stream.config import Config
from stream.errors import NameTaken, NotReady, UserError
from stream.media.sources import Source
from stream.media.streams import StreamSpec, sources_toml, stream_specs
from stream.observe.runinfo import RunInfo
from stream.outputs.kinds import Outputs
from stream.outputs.staged import write_text
from stream.redact import mask_uri, remember, scrub, secrets_in
from stream.session.launch import Launched, Launcher, launch_local, open_stream
from stream.session.plan import RunPlan, buffer_left, plan_run, plan_stream
from stream.session.records import RunOutcome, StreamSlot
from stream.session.report import LoadTimes, build_report, summary, write_report
from stream.session.session import Session
from stream.session.waiting import Waiting, WaitingStreams, waits_when_down

EXIT_INCOMPLETE = 4
REMOVE_TIMEOUT_S = 30.0  # a removal waits this long for its stream's last frames and finalised outputs


def run_streams(cfg: Config, process_start: float, interrupts=None, launcher: Launcher = launch_local) -> int:
    return Run(cfg, process_start, launcher).execute(interrupts)


class Run:
    """The one orchestrator: what both engines share, in order."""

    def __init__(self, cfg: Config, process_start: float, launcher: Launcher = launch_local) -> None:
        self.cfg, self.process_start, self.launcher = cfg, process_start, launcher
        self.specs: list[StreamSpec] = []
        self.sources: list[Source] = []  # opened by prepare, handed to the engine (or closed, for Ray)
        self.outputs = Outputs({"output": cfg.output, "predictions": cfg.predictions}, cfg.codec)
        self.server = None
        self.session: Session | None = None
        self.plan: RunPlan | None = None
        self.backend_choice = None  # stream.backends.BackendChoice under --backend auto
        self._changes = threading.Lock()  # streams joining and leaving, the sources file rewritten
        self._joining: set[str] = set()  # names held by streams whose source is being opened
        self._unlisted: set[int] = set()  # streams given with --source: --persist keeps them out of the sources file
        self._given: set[str] = set()  # the names of the streams given with --source
        self.waiting = WaitingStreams()  # a service's cameras that did not answer at start (stream.session.waiting)
        self.rules = None  # stream.decisions.rules.RuleSet
        self.decisions = None  # stream.decisions.hub.Decisions, local engine only
        self.decision_warnings: list[str] = []

    # ---- prepare

    def prepare(self) -> None:
        from stream.backends import available_cores, backend_class
        from stream.outputs.sinks import WindowSink, display_available

        cfg = self.cfg
        self.specs = stream_specs(list(cfg.source), cfg.sources, allow_empty=cfg.keep_running)
        if cfg.persist:
            check_persistable(cfg.sources)
        if not self.specs and not cfg.keep_running:
            from stream.media.sample import sample_clip

            uri = str(sample_clip(cfg.cache_dir))
            print(f"no --source given: using the sample clip {uri}")
            self.specs = [StreamSpec(uri, "sample")]
        names = [s.name for s in self.specs]
        from stream.outputs import actions

        self.rules = actions.load_rules(cfg)
        self.outputs.check(self.specs, [("--report", cfg.report), *actions.run_files(cfg)])
        actions.check(cfg, self.rules)
        if cfg.report:
            from stream.outputs.sinks import check_writable

            check_writable(cfg.report, "--report")
        self._codec_notes(names)
        cfg = self._choose_backend()
        backend_class(cfg.backend)  # fails fast, before any model is loaded
        if cfg.display == "on":
            WindowSink.check()
        window = cfg.engine == "local" and (cfg.display == "on" or (cfg.display == "auto" and display_available()))
        self.outputs.settings = {**self.outputs.settings, "display": window}
        self._given = {s.name for s in self.specs[:len(cfg.source)]}
        self.specs = [spec for spec in self.specs if self._open_or_wait(spec)]
        self.plan = plan_run(cfg, self.specs, [s.info for s in self.sources], available_cores(), cfg.keep_running)
        for note in self.plan.notes:
            print(f"note: {note}", file=sys.stderr)

    def _open_or_wait(self, spec: StreamSpec) -> bool:
        """Open a stream given at start; a service's camera that does not answer waits outside the run."""
        try:
            self.sources.append(open_stream(spec.uri, max_image_pixels=self.cfg.max_image_pixels))
            return True
        except UserError as exc:
            if not (self.cfg.keep_running and waits_when_down(spec.uri)):
                raise
            self.waiting.add(spec, str(exc), listed=spec.name not in self._given)
            return False

    def _choose_backend(self) -> Config:
        from dataclasses import replace

        from stream.backends import AUTO, check_offered, choose_backend

        cfg = self.cfg
        if cfg.backend != AUTO:
            return cfg
        from stream.config import model_request

        onnx_only = model_request(cfg).onnx_only  # PyTorch runs torchvision architectures only
        self.backend_choice = choose_backend(cfg.device, cfg.precision, exclude=("torch",) if onnx_only else ())
        print(f"backend: {self.backend_choice.name} ({self.backend_choice.reason})", flush=True)
        self.cfg = cfg = replace(cfg, backend=self.backend_choice.name)
        check_offered(cfg.backend, precision=cfg.precision, device=cfg.device, hint=cfg.openvino_hint,
                      converter=cfg.trt_converter)
        return cfg

    def _codec_notes(self, names: list[str]) -> None:
        from stream.outputs.video_writer import choose_codec

        for name in names:
            path = next((t for kind, t in self.outputs.targets(name, len(names)) if kind.key == "output"), None)
            note = choose_codec(path, self.cfg.codec).note if path else None
            if note:
                print(f"note: {note}", file=sys.stderr)

    def _serve(self) -> None:
        """The --serve server, listening before the model loads (a busy port fails fast)."""
        cfg = self.cfg
        if cfg.serve is None:
            return
        from stream.web.address import exposure_warning, parse_serve
        from stream.web.server import PreviewServer

        address = parse_serve(cfg.serve)
        warning = exposure_warning(address, cfg.serve_token)
        if warning:
            print(warning, file=sys.stderr)
        self.server = PreviewServer(address, [s.name for s in self.specs], cfg.serve_token, cfg.serve_allow_host,
                                    clips_dir=cfg.clips)
        self.server.start()
        self.outputs.settings = {**self.outputs.settings, "serve": self.server}
        from stream.session.service import ServiceControl

        self.server.control = ServiceControl(self)  # refuses changes (503) until the run's loop is under way
        print(f"serving {self.server.url} (live preview, /api/status, /metrics)", flush=True)

    # ---- run

    def execute(self, interrupts=None) -> int:
        try:
            self.prepare()
            self._serve()
            with self.launcher(self.cfg, self.specs, self.sources, self.plan) as launched:
                self._launched = launched
                outcome = self._observe(launched, interrupts)
                return self._conclude(outcome, launched)
        finally:
            self._close_decisions(None)
            if self.server is not None:
                self.server.stop()
            for source in self.sources:  # those never handed to an engine; the engine closes its own
                source.close()

    def _observe(self, launched: Launched, interrupts) -> RunOutcome:
        cfg, plan = self.cfg, self.plan
        loaded = launched.loaded
        model = loaded.model
        self.info = RunInfo(self.sources[0].info if self.sources else None, model.name, model.weights,
                            model.random_weights, loaded.backend, loaded.device, loaded.precision,
                            plan.batching.size, plan.streams[0].policy if plan.streams else "latest", cfg.resize,
                            model.preprocess.interpolation, cfg.engine, loaded.threads, loaded.calls)
        session = Session(plan.batching.size, self._ui(), launched.device_peak_mb, cfg.keep_running)
        if self.server is not None:
            session.on_gone = self.server.forget_stream
        self.session = session
        try:
            if cfg.engine == "local":
                self._decide(model)
            session.engine = launched.engine(session.totals, self.outputs, self.decisions)
            self.load = LoadTimes(loaded.load, loaded.warmup_s, time.perf_counter() - self.process_start)
            sources, self.sources = self.sources, []
            for i, (spec, stream_plan) in enumerate(zip(self.specs, plan.streams, strict=True)):
                try:
                    slot = session.add(spec, sources[i].info, stream_plan, launched.owned(sources[i]))
                    if spec.name in self._given:
                        self._unlisted.add(slot.id)
                except BaseException:
                    self.sources = sources[i + 1:]
                    raise
        except BaseException:  # nothing ran: still leave finalised files and a usable terminal
            if session.engine is not None:
                session.engine.finish(drain=False)
            session.ui.close()
            raise
        self.waiting.start(self._join_waiting, self.remove_stream)
        try:
            outcome = session.run(interrupts)
        finally:
            self.waiting.stop()
        self._close_decisions(outcome)
        for w in self.waiting.listing():
            outcome.warnings.append(f"stream {w['name']!r} never answered ({w['attempts']} attempt(s)); the last "
                                    f"error: {w['error']}")
        return outcome

    def _decide(self, model) -> None:
        """The decisions hub and its outputs (opened with the model known: a rule's labels are checked against
        its classes), fed from the run loop to the web page."""
        from stream.decisions.rules import unknown_labels
        from stream.outputs.actions import open_decisions

        unknown = unknown_labels(self.rules, list(model.categories))
        if unknown:
            self.decision_warnings.append(f"--rules: no class of {model.name} matches {', '.join(map(repr, unknown))}"
                                          "; those labels never fire (check the spelling against the labels)")
            print(f"warning: {self.decision_warnings[-1]}", file=sys.stderr)
        self.decisions = open_decisions(self.cfg, self.rules)
        if self.server is not None:
            hub, server = self.decisions, self.server
            self.session.on_refresh = lambda: server.update_decisions(hub.view())

    def _close_decisions(self, outcome: RunOutcome | None) -> None:
        """Every stream's decisions finished and their outputs flushed and closed, before the report."""
        if self.decisions is None or self.decisions.closed:
            return
        failures = self.decisions.close()
        if outcome is not None:
            for exc in failures:
                outcome.warnings.append(f"an event output failed to close: {type(exc).__name__}: {exc}")

    def _ui(self):
        from stream.observe.dashboard import LiveDashboard, StatusPrinter

        cfg = self.cfg
        live_ui = cfg.dashboard == "on" or (cfg.dashboard == "auto" and sys.stdout.isatty())
        ui = LiveDashboard(self.info) if live_ui else StatusPrinter(cfg.status_every)
        if self.server is not None:
            from stream.web.server import ServedUi

            ui = ServedUi(ui, self.server)
        return ui

    # ---- streams that join and leave

    def present(self) -> list[StreamSlot]:
        return self.session.present() if self.session is not None else []

    def leaving(self, slot: StreamSlot) -> bool:
        return self.session is not None and self.session.leaving(slot)

    def add_stream(self, spec: StreamSpec, rename: bool = False) -> StreamSlot:
        """A stream joins the run in progress, by the checks a stream given at start passes (from any thread but
        the run's own; it blocks while its source opens, up to 10 s for a dead URL). Its name is held from the
        start, so a second request for it is refused at once; `rename`: take the first free of NAME-2, NAME-3,
        ... instead (a name made from the URI). A stream that cannot join leaves nothing behind."""
        return self._add_stream(spec, rename)

    def _join_waiting(self, entry: Waiting) -> StreamSlot:
        return self._add_stream(entry.spec, waited=entry, unlisted=not entry.listed)

    def _add_stream(self, spec: StreamSpec, rename: bool = False, waited: Waiting | None = None,
                    unlisted: bool = False) -> StreamSlot:
        session = self._running()
        with self._changes:
            spec = self._hold_name(spec, rename, waited)
        try:
            for secret in secrets_in(spec.uri):
                remember(secret)
            with self._changes:
                claimed = self.outputs.check([spec])
            try:
                slot = self._join(session, spec)
            except BaseException:
                with self._changes:
                    self.outputs.release(claimed)
                raise
            if unlisted:
                self._unlisted.add(slot.id)
        finally:
            with self._changes:
                self._joining.discard(spec.name)
        self._persist()
        return slot

    def _hold_name(self, spec: StreamSpec, rename: bool, waited: Waiting | None = None) -> StreamSpec:
        """Under `_changes`. A waiting stream's name is taken but by its own attempt (`waited`), which is refused
        once it is no longer waited for."""
        waiting = self.waiting.names()
        if waited is not None:
            if self.waiting.entry(spec.name) is not waited:
                raise NameTaken(f"stream {spec.name!r} is no longer waited for")
            waiting.discard(spec.name)
        taken = self._joining | waiting | {s.name for s in self.present()}
        name, n = spec.name, 1
        while rename and name in taken:
            n += 1
            name = f"{spec.name[:60]}-{n}"
        if name in taken:
            raise NameTaken(f"a stream named {name!r} is already in this run; give another name")
        self._joining.add(name)
        return StreamSpec(spec.uri, name, spec.target_fps)

    def _join(self, session: Session, spec: StreamSpec) -> StreamSlot:
        try:
            source = open_stream(spec.uri, max_image_pixels=self.cfg.max_image_pixels)
        except (OSError, ValueError) as exc:  # a name too long for the file system, a path it cannot read
            why = getattr(exc, "strerror", None) or exc
            raise UserError(f"{mask_uri(spec.uri)}: cannot be opened ({why})") from None
        try:
            with self._changes:  # one plan at a time: the buffers of streams joining together share the bound
                left = buffer_left(self.cfg, [(s.plan, s.info) for s in session.present()])
                plan = plan_stream(self.cfg, spec, source.info, left)
                slot = session.add(spec, source.info, plan, self._launched.owned(source))
        except BaseException:
            source.close()
            raise
        if plan.note:
            print(f"note: {plan.note}", file=sys.stderr)
        return slot

    def remove_stream(self, name: str, timeout_s: float = REMOVE_TIMEOUT_S) -> list:
        """A stream leaves the run; returns its sinks' summaries once its outputs are finalised (from any thread but
        the run's own). Its report row stays. A stream still waiting to join is just no longer tried."""
        if self.waiting.drop(name):
            self._persist()
            return []
        removal = self._running().remove(name)
        try:
            summaries = removal.result(timeout_s)
        except TimeoutError:
            raise NotReady(f"stream {name!r} is still finishing its outputs after {timeout_s:.0f} s; "
                           "ask again") from None
        self._persist()
        return summaries

    def _running(self) -> Session:
        session = self.session
        if session is None or not session.running:
            raise NotReady("the run is not under way (its model is loading, or it has ended); give streams at "
                           "start with --source or --sources, or retry")
        return session

    def _persist(self) -> None:
        """--persist: the sources file lists the streams in the run now (but those given with --source), rewritten
        whole and atomically. A write that fails is one line: the run goes on."""
        if not self.cfg.persist:
            return
        with self._changes:
            present = self.present()
            joined = {s.name for s in present}  # a waiting stream that has just joined is dropped after this
            specs = ([s.spec for s in present if s.id not in self._unlisted]
                     + [spec for spec in self.waiting.listed() if spec.name not in joined])
            try:
                write_text(sources_toml(specs), self.cfg.sources)
            except OSError as exc:
                print(f"warning: --persist: {self.cfg.sources} could not be rewritten ({exc.strerror}); "
                      "a restart will not find the latest streams", file=sys.stderr)

    # ---- conclude

    def _conclude(self, outcome: RunOutcome, launched: Launched) -> int:
        cfg = self.cfg
        report = build_report(self.info, outcome, self.load, self.process_start, launched.device_peak_mb())
        launched.add_to_report(report, outcome)
        if self.decisions is not None:
            report["decisions"] = self.decisions.report()
        report["warnings"] += self.decision_warnings
        if self.backend_choice is not None:
            report["backend_choice"] = {"asked": "auto", "chosen": self.backend_choice.name,
                                        "reason": self.backend_choice.reason}
        for stream in outcome.streams:
            report["warnings"] += stream.warnings
        if cfg.resize == "fast":
            report["warnings"].append("--resize fast: frames were resized without antialiasing, so labels can "
                                      "differ from what the model gives on its weights' own transform")
        truncated = check_truncated(cfg, outcome, report)
        if cfg.report:
            write_report(report, cfg.report)
        print(scrub(summary(report)))
        for line in launched.summary_lines(report):
            print(line)
        return exit_status(outcome, report, truncated)


def check_persistable(path: str) -> None:
    """--persist rewrites the sources file beside itself (a temporary file renamed over it)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.access(folder, os.W_OK | os.X_OK) or not os.access(path, os.W_OK):
        raise UserError(f"--persist: {path} cannot be rewritten (its folder or the file is not writable); "
                        "give a sources file in a folder this user can write")


def check_truncated(cfg: Config, outcome: RunOutcome, report: dict) -> str | None:
    """A file whose decoding stopped well before its container's end: the decodable part was processed.
    Returns the fault's message; a mere note (a nominal frame count) becomes a warning."""
    if outcome.status != "completed" or cfg.loop or cfg.max_frames is not None:
        return None
    faults = []
    for stream in outcome.streams:
        check = stream.decode
        if check is None:
            continue
        if check.message:
            report["warnings"].append(check.message)
        if check.truncated:
            faults.append(check.message)
    if faults:
        report["status"] = "incomplete input"
        return "; ".join(faults)
    return None


def exit_status(outcome: RunOutcome, report: dict, truncated: str | None) -> int:
    from stream.interrupts import END_SIGTERM, EXIT_SIGINT, EXIT_SIGTERM

    if outcome.status == "interrupted":
        print(f"interrupted ({outcome.end_reason}): outputs hold the {report['frames']['shown']} frames "
              "processed so far", file=sys.stderr)
        return EXIT_SIGTERM if outcome.end_reason == END_SIGTERM else EXIT_SIGINT
    if outcome.error is not None:
        err = outcome.error
        if isinstance(err, UserError):
            print(f"error: {scrub(str(err))}", file=sys.stderr)
            return err.exit_code
        print(f"error during the run: {type(err).__name__}: {scrub(str(err))} "
              "(outputs hold the frames processed so far)", file=sys.stderr)
        return 1
    if truncated:
        print(f"error: {scrub(truncated)}", file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0
