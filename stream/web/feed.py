"""Viewers of one stream at one rate and size share a feed: one clock, one JPEG per tick, handed to all.

Ten viewers then cost the pipeline's process one wake-up and one encode per tick, not ten; each viewer
writes at its own pace and, when it falls behind, simply gets the newest JPEG next (frames it missed
are skipped, never queued). A requested rate snaps to whole frames a second (tenths below one), and its
size to preview.HEIGHTS, so viewers asking nearly the same share one feed.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

from stream.web.preview import Encoded, LatestFrame


def snap_fps(fps: float) -> float:
    return float(round(fps)) if fps >= 1 else max(round(fps, 1), 0.1)


class Feed:
    def __init__(self, frame: LatestFrame, height: int | None, period_s: float, pool: Executor,
                 stopping: asyncio.Event) -> None:
        self.frame, self.height, self.period_s = frame, height, period_s
        self.viewers = 0
        self._ready = 0  # viewers waiting for a frame: one stuck in a write costs no encodes
        self._pool, self._stopping = pool, stopping
        self._next: asyncio.Future[Encoded | None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task | None = None

    def join(self) -> None:
        self.viewers += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._tick())

    def leave(self) -> None:
        self.viewers -= 1

    async def next(self) -> Encoded | None:
        """The next new frame; None when the server stops or the stream was removed. Shielded: one viewer leaving
        cancels nobody else."""
        if self._stopping.is_set() or self.frame.retired:
            return None
        self._ready += 1
        try:
            return await asyncio.shield(self._next)
        finally:
            self._ready -= 1

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        sent = 0
        try:
            while self.viewers > 0 and not self._stopping.is_set() and not self.frame.retired:
                # On the loop's clock, so feeds at one rate (different sizes) still tick together.
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.period_s - loop.time() % self.period_s)
                    break
                except TimeoutError:
                    pass
                if self.frame.seq == sent or not self._ready:
                    continue
                encoded = await loop.run_in_executor(self._pool, self.frame.jpeg, self.height)
                if encoded is None or encoded.seq == sent:
                    continue
                sent = encoded.seq
                self._publish(encoded)
        finally:
            # Not when the task is destroyed with a loop the server already stopped: no viewer is left to tell, and
            # there is no running loop to tell them on.
            if (self._stopping.is_set() or self.frame.retired) and loop.is_running():
                self._publish(None)

    def _publish(self, encoded: Encoded | None) -> None:
        done, self._next = self._next, asyncio.get_running_loop().create_future()
        if not done.done():
            done.set_result(encoded)
