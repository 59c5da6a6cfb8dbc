"""Live terminal dashboard: a pure function from a stats snapshot to a rich renderable,
plus a plain status line for when stdout is not a terminal."""

from __future__ import annotations

from rich.columns import Columns
from rich.console import Group
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from stream.observe.cpu import LABELS, CpuSnapshot
from stream.observe.runinfo import RANDOM_WARNING, RunInfo
from stream.observe.stats import StatsSnapshot

VERDICT_STYLE = {"real-time": "bold green", "not real-time": "bold red", "undecided": "yellow"}


def _ms(value: float) -> str:
    return "--" if value != value else f"{value:.1f}"


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


def build_dashboard(snap: StatsSnapshot, info: RunInfo) -> Panel:
    # Whatever the user named (URIs, paths, stream names, labels) goes in as Text: a string would be read as
    # rich markup, and `x[/y].mp4` is a markup error that would end the run.
    header = Table.grid(padding=(0, 2))
    if len(snap.streams) > 1:
        header.add_row("sources", Text(", ".join(f"{row.name} ({row.policy})" for row in snap.streams)))
    elif info.source is not None:
        header.add_row("source", Text(f"{info.source.uri} ({info.source.kind}, {info.drop_policy})"))
    else:
        header.add_row("source", "none yet: waiting for streams to join")
    header.add_row("model", Text(f"{info.model}  weights: {info.weights}"))
    calls = f", {info.calls} model calls side by side" if info.calls > 1 else ""
    header.add_row("backend", f"{info.backend} on {info.device}, {info.precision}, batch {info.batch}{calls}")
    resize = "faithful to the weights" if info.resize == "faithful" else "FAST (no antialiasing: labels may differ)"
    header.add_row("resize", f"{info.interpolation}, {resize}")

    stages = Table(title="throughput (fps) and latency (ms, last 10 s)", title_justify="left")
    for col in ("stage", "fps 1 s", "fps 10 s", "fps run", "p50 ms", "p95 ms"):
        stages.add_column(col, justify="left" if col == "stage" else "right")
    rates = {k: [f"{getattr(r, k):.1f}" for r in (snap.fps_1s, snap.fps_10s, snap.fps_total)]
             for k in ("capture", "inference", "pipeline")}
    lat = {k: [_ms(p.p50), _ms(p.p95)] for k, p in snap.latency_ms.items()}
    stages.add_row("capture", *rates["capture"], "", "")
    stages.add_row("preprocess", "", "", "", *lat["preprocess"])
    stages.add_row("inference", *rates["inference"], *lat["inference"])
    stages.add_row("  model only", "", "", f"{snap.model_fps:.1f}", "", "")
    stages.add_row("postprocess", "", "", "", *lat["postprocess"])
    stages.add_row("render+sinks", "", "", "", *lat["render"])
    stages.add_row("end to end", *rates["pipeline"], *lat["end_to_end"], style="bold")

    steady = f" · steady: {snap.steady.label}" if snap.steady is not None else ""
    top = Table(title=f"top-5{steady}", title_justify="left")
    top.add_column("label")
    top.add_column("prob", justify="right")
    for t in snap.top:
        top.add_row(Text(t.label), f"{t.prob * 100:.1f}%")

    state = Table.grid(padding=(0, 2))
    state.add_row("frames", f"read {snap.frames_read}  processed {snap.frames_processed}  "
                            f"shown {snap.frames_rendered}  dropped {snap.frames_dropped}")
    state.add_row("queue", f"{snap.queue_fill}/{snap.queue_size}")
    cuda = "" if snap.device_mb is None else f"  device peak {snap.device_mb:.0f} MB"
    state.add_row("memory", f"RSS {snap.rss_mb:.0f} MB  peak {snap.peak_rss_mb:.0f} MB{cuda}")
    if snap.total_frames:
        done = min(snap.frames_rendered, snap.total_frames)
        state.add_row("progress", Group(ProgressBar(total=snap.total_frames, completed=done, width=30),
                                        Text(f"{done}/{snap.total_frames}  ETA {_eta(snap.eta_s)}")))
    if snap.verdict is not None:
        v = snap.verdict
        state.add_row("verdict", Text(f"{v.verdict.upper()}: {v.reason}", style=VERDICT_STYLE[v.verdict]))

    parts = [header]
    if info.random_weights:
        parts.append(Text(RANDOM_WARNING, style="bold white on red"))
    if len(snap.streams) > 1:
        parts.append(streams_table(snap))
    parts += [Columns([stages, top], padding=(0, 4)), state]
    if snap.cpu is not None and snap.cpu.frames:
        parts.append(cpu_table(snap.cpu))
    return Panel(Group(*parts), title="stream classifier", subtitle=f"{snap.elapsed_s:.1f} s")


def cpu_table(cpu: CpuSnapshot) -> Columns:
    """Where the CPU goes, per frame rendered since the start; and how long each stage thread waits."""
    stages = Table(title=f"cpu per frame: {cpu.per_frame_ms():.1f} ms ({cpu.process_s / max(cpu.wall_s, 1e-9):.2f} "
                         f"cores busy), overhead {cpu.overhead_share:.0%}", title_justify="left")
    for col in ("stage", "ms/frame", "share"):
        stages.add_column(col, justify="left" if col == "stage" else "right")
    for stage, seconds in cpu.stages.items():
        if seconds > 0 or stage == "unattributed":
            stages.add_row(LABELS.get(stage, stage), f"{cpu.per_frame_ms(stage):.2f}", f"{cpu.share(stage):.0%}")
    threads = Table(title="stage threads", title_justify="left")
    for col in ("thread", "busy", "idle (waiting on neighbours)"):
        threads.add_column(col, justify="left" if col == "thread" else "right")
    for t in cpu.threads:
        threads.add_row(Text(t.name), f"{t.busy_share:.0%}", f"{t.idle_share:.0%}")
    return Columns([stages, threads], padding=(0, 4))


STATE_STYLE = {"running": "green", "reconnecting": "yellow", "stalled": "bold red", "failed": "bold red",
               "ended": "dim", "connecting": "yellow", "frozen": "bold magenta", "blank": "bold magenta"}


def streams_table(snap: StatsSnapshot) -> Table:
    """A row per stream; the panel below it holds the totals."""
    table = Table(title=f"{len(snap.streams)} streams (last 10 s)", title_justify="left")
    for col in ("stream", "state", "fps", "e2e p50/p95 ms", "dropped full/stale", "reconnects", "last frame",
                "top-1", "steady"):
        table.add_column(col, justify="left" if col in ("stream", "state", "top-1", "steady") else "right")
    for row in snap.streams:
        s, e2e = row.snap, row.snap.latency_ms["end_to_end"]
        age = "--" if row.last_frame_age_s is None else f"{row.last_frame_age_s:.1f} s ago"
        top = f"{s.top[0].label} {s.top[0].prob:.0%}" if s.top else ""
        table.add_row(Text(row.name), Text(row.state, style=STATE_STYLE.get(row.state, "")),
                      f"{s.fps_10s.pipeline:.1f}",
                      f"{_ms(e2e.p50)}/{_ms(e2e.p95)}", f"{row.drops['full']}/{row.drops['stale']}",
                      f"{row.reconnects}" + (f" ({row.stalls} stalls)" if row.stalls else ""), age, Text(top),
                      Text(s.steady.label if s.steady is not None else ""))
    return table


def status_line(snap: StatsSnapshot) -> str:
    progress = f"{snap.frames_rendered}"
    if snap.total_frames:
        progress += f"/{snap.total_frames} ({snap.frames_rendered / snap.total_frames:.0%}) ETA {_eta(snap.eta_s)}"
    e2e = snap.latency_ms["end_to_end"]
    top = f" | top: {snap.top[0].label} {snap.top[0].prob:.0%}" if snap.top else ""
    streams = ""
    if len(snap.streams) > 1:
        streams = " | " + ", ".join(f"{r.name} {r.state} {r.snap.fps_10s.pipeline:.1f} fps" for r in snap.streams)
    return (f"[{snap.elapsed_s:6.1f}s] frames {progress} | pipeline {snap.fps_10s.pipeline:.1f} fps "
            f"| e2e p50 {_ms(e2e.p50)} ms p95 {_ms(e2e.p95)} ms | dropped {snap.frames_dropped} "
            f"| RSS {snap.rss_mb:.0f} MB{top}{streams}")


class LiveDashboard:
    """rich Live, refreshed by the render loop (no refresh thread of its own)."""

    def __init__(self, info: RunInfo, console=None) -> None:
        from rich.live import Live

        self.info = info
        self._live = Live(console=console, auto_refresh=False, transient=False, redirect_stderr=False)
        self._live.start()

    def update(self, snap: StatsSnapshot) -> None:
        self._live.update(build_dashboard(snap, self.info), refresh=True)

    def close(self) -> None:
        self._live.stop()


class StatusPrinter:
    """A plain status line every few seconds, for logs and pipes."""

    def __init__(self, every_s: float = 5.0, print_fn=print) -> None:
        self.every_s = every_s
        self._print = print_fn
        self._next = 0.0

    def update(self, snap: StatsSnapshot) -> None:
        if snap.elapsed_s >= self._next:
            self._print(status_line(snap), flush=True)
            self._next = snap.elapsed_s + self.every_s

    def close(self) -> None:
        pass
