"""Render stage: draw the top-5 labels and a rolling FPS/latency readout onto each frame."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stream.frames import UNCERTAIN, Classified, Steady
from stream.observe.runinfo import RANDOM_WARNING
from stream.pipeline.glyphs import FONT, GlyphText

WHITE, BLACK, RED, GREEN, GREY = (255, 255, 255), (0, 0, 0), (40, 40, 230), (90, 220, 90), (170, 170, 170)


@dataclass(frozen=True)
class Readout:
    """The rolling figures drawn on frames; refreshed a few times a second, not per frame."""

    fps: float = 0.0
    latency_p50_ms: float = float("nan")

    def text(self) -> str:
        latency = "--" if self.latency_p50_ms != self.latency_p50_ms else f"{self.latency_p50_ms:.0f} ms"
        return f"{self.fps:.1f} fps | latency {latency}"


class Renderer:
    def __init__(self, random_weights: bool) -> None:
        self.random_weights = random_weights
        self.text = GlyphText(FONT)

    def draw(self, item: Classified, readout: Readout) -> np.ndarray:
        """Annotate the frame in place (the frame is not used after this stage) and return it."""
        image = item.frame.image
        h = image.shape[0]
        scale = max(h / 720.0, 0.35)
        thick = max(int(round(2 * scale)), 1)
        line = int(32 * scale)
        size = 0.8 * scale
        lines = [(f"{t.label[:28]}  {t.prob * 100:5.1f}%", WHITE if i else GREEN)
                 for i, t in enumerate(item.prediction.top)]
        lines.append((readout.text(), WHITE))
        if self.random_weights:
            lines.append((RANDOM_WARNING, RED))
        width = max(self.text.width(text, size, thick) for text, _ in lines)
        box_h = line * len(lines) + line // 2
        cv2.rectangle(image, (0, 0), (min(width + 2 * line // 2, image.shape[1] - 1), box_h), BLACK, -1)
        for i, (text, color) in enumerate(lines):
            self.text.put(image, text, (line // 2, line * (i + 1)), size, color, thick)
        if item.steady is not None:
            self._steady(image, item.steady, scale, thick + 1, line, box_h + line // 2)
        return image

    def _steady(self, image: np.ndarray, steady: Steady, scale: float, thick: int, line: int, top: int) -> None:
        """The steady label apart from the raw top-5: its own box below theirs, larger, grey while uncertain.
        (The frame's other corners stay clear: cameras and test sources stamp them.)"""
        certain = steady.label != UNCERTAIN
        text = f"steady: {steady.label[:32]}  {steady.prob * 100:.0f}%" if certain else f"steady: {UNCERTAIN}"
        size = 1.0 * scale
        ascent, descent = self.text.extent(size, thick)
        bottom = top + ascent + descent + line // 2
        width = self.text.width(text, size, thick)
        cv2.rectangle(image, (0, top), (min(width + line, image.shape[1] - 1), bottom), BLACK, -1)
        self.text.put(image, text, (line // 2, bottom - descent - line // 4), size, GREEN if certain else GREY,
                      thick)
