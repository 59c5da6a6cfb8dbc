"""Render stage: draw the top-5 labels and a rolling FPS/latency readout onto each frame."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stream.frames import Classified
from stream.observe.runinfo import RANDOM_WARNING

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE, BLACK, RED, GREEN = (255, 255, 255), (0, 0, 0), (40, 40, 230), (90, 220, 90)


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

    def draw(self, item: Classified, readout: Readout) -> np.ndarray:
        """Annotate the frame in place (the frame is not used after this stage) and return it."""
        image = item.frame.image
        h = image.shape[0]
        scale = max(h / 720.0, 0.35)
        thick = max(int(round(2 * scale)), 1)
        line = int(32 * scale)
        lines = [(f"{t.label[:28]}  {t.prob * 100:5.1f}%", WHITE if i else GREEN)
                 for i, t in enumerate(item.prediction.top)]
        lines.append((readout.text(), WHITE))
        if self.random_weights:
            lines.append((RANDOM_WARNING, RED))
        width = max(cv2.getTextSize(text, FONT, 0.8 * scale, thick)[0][0] for text, _ in lines)
        box_h = line * len(lines) + line // 2
        cv2.rectangle(image, (0, 0), (min(width + 2 * line // 2, image.shape[1] - 1), box_h), BLACK, -1)
        for i, (text, color) in enumerate(lines):
            cv2.putText(image, text, (line // 2, line * (i + 1)), FONT, 0.8 * scale, color, thick, cv2.LINE_AA)
        return image
