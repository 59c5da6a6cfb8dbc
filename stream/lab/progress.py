"""Progress over the bench/eval jobs: a rich bar on a terminal, one plain line per job otherwise."""

from __future__ import annotations

import sys
import time


def _outcome(result: dict) -> str:
    if result.get("status") != "ok":
        return f"FAILED: {result.get('reason')}"
    return f"ok ({result.get('wall_s', 0.0):.1f} s)"


class JobProgress:
    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self._started = time.perf_counter()
        self._bar = None
        if sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), transient=False)
            self._task = self._bar.add_task("starting", total=total)
            self._bar.start()

    def add(self, jobs: int) -> None:
        """Jobs added to the plan (a reference run), or taken off it (negative: a combination failed)."""
        self.total += jobs
        if self._bar:
            self._bar.update(self._task, total=self.total)

    def advance(self, label: str, result: dict) -> None:
        self.done += 1
        line = f"[{self.done}/{self.total}] {label}: {_outcome(result)}"
        if self._bar:
            self._bar.console.print(line, highlight=False, markup=False)
            self._bar.update(self._task, completed=self.done, description=label)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self._bar:
            self._bar.stop()
