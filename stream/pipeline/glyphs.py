"""Text on the overlay's black boxes, composed from glyphs that cv2.putText rendered once.

Anti-aliased `putText` costs ≈ 0.2 ms a line at 720p, ≈ 2 ms a frame for the overlay's eight lines: a tenth
of a frame's whole CPU at int8 batch 1 (README, Where the CPU goes). Every character the overlay draws is
the same few dozen glyphs, and they always land on a black box, so each (character, size, colour,
thickness) is drawn once into a tile on black and then copied into place: on black, anti-aliased drawing is
the colour scaled by coverage, so the brighter of two overlapping tiles is what `putText` would leave, but
for a stroke edge where two glyphs overlap (a hair darker). Glyphs are placed at the string's own advances,
so a line is as wide as `getTextSize` says, within a pixel.
"""

from __future__ import annotations

from collections import OrderedDict

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
PROBE = "Hgjy|()[]"  # the font's tallest ascent and deepest descent
MAX_TILES = 4096  # frames of many heights (an image folder) each have their sizes: start again past this
MAX_WORDS = 2048  # a label's words, the readout's, and the numbers shown lately
PHASES = 4  # sub-pixel positions a glyph is cached at (putText places glyphs at 1/65536 px)


class GlyphText:
    def __init__(self, font: int = FONT) -> None:
        self.font = font
        self._tiles: dict[tuple, tuple[np.ndarray, int, int]] = {}  # → (tile, baseline row, left pad)
        self._units: dict[str, int] = {}
        self._extent: dict[tuple, tuple[int, int]] = {}
        self._words: OrderedDict[tuple, tuple[np.ndarray, int, int]] = OrderedDict()  # least recently used first

    def units(self, char: str) -> int:
        """The glyph's advance in font units (putText moves by units × scale, in fixed point)."""
        found = self._units.get(char)
        if found is None:  # at scale 1 and a 1-pixel stroke the width is the advance plus that stroke
            found = self._units[char] = cv2.getTextSize(char, self.font, 1.0, 1)[0][0] - 1
        return found

    @staticmethod
    def scale(size: float) -> float:
        return round(size * 65536) / 65536  # as putText rounds it

    def extent(self, size: float, thick: int) -> tuple[int, int]:
        """(ascent, descent) of the font's tallest and deepest glyphs: a box that fits any text."""
        key = (size, thick)
        found = self._extent.get(key)
        if found is None:
            (_, ascent), descent = cv2.getTextSize(PROBE, self.font, size, thick)
            found = self._extent[key] = (ascent, descent)
        return found

    def width(self, text: str, size: float, thick: int) -> int:
        """As cv2.getTextSize(text)[0][0], within a pixel."""
        return int(round(sum(self.units(c) for c in text) * self.scale(size))) + thick

    def put(self, image: np.ndarray, text: str, org: tuple[int, int], size: float, color: tuple,
            thick: int) -> None:
        """Draw `text` with its baseline starting at `org`, onto black (the overlay's boxes). Word by word: a
        word's tile is composed from its glyphs once and kept (numbers repeat too), a few copies a line."""
        x, y = float(org[0]), org[1]
        step = self.scale(size)
        space = self.units(" ") * step
        for i, word in enumerate(text.split(" ")):
            if i:
                x += space
            if word:
                xi, phase = _split(x)
                tile, base, pad = self._word(word, size, color, thick, phase)
                _paste(image, tile, y - base, xi - pad)
                x += sum(self.units(c) for c in word) * step

    def _word(self, word: str, size: float, color: tuple, thick: int, phase: int) -> tuple[np.ndarray, int, int]:
        key = (word, size, tuple(color), thick, phase)
        found = self._words.get(key)
        if found is not None:
            self._words.move_to_end(key)
            return found
        ascent, descent = self.extent(size, thick)
        pad = thick + 3
        step = self.scale(size)
        w = int(sum(self.units(c) for c in word) * step) + 2 * pad + thick + 2
        tile = np.zeros((ascent + descent + 2 * pad, w, 3), np.uint8)
        x = pad + phase / PHASES
        for char in word:
            xi, p = _split(x)
            glyph, base, gpad = self._tile(char, size, color, thick, p)
            _paste(tile, glyph, ascent + pad - base, xi - gpad)
            x += self.units(char) * step
        found = self._words[key] = (tile, ascent + pad, pad)
        if len(self._words) > MAX_WORDS:
            self._words.popitem(last=False)
        return found

    def _tile(self, char: str, size: float, color: tuple, thick: int, phase: int) -> tuple[np.ndarray, int, int]:
        key = (char, size, tuple(color), thick, phase)
        found = self._tiles.get(key)
        if found is None:
            if len(self._tiles) >= MAX_TILES:
                self._tiles.clear()
            ascent, descent = self.extent(size, thick)
            pad = thick + 3
            base = ascent + pad
            w = int(self.units(char) * self.scale(size)) + 2 * pad + thick + 1
            tile = np.zeros((ascent + descent + 2 * pad, w, 3), np.uint8)
            cv2.putText(tile, char, (pad, base), self.font, size, color, thick, cv2.LINE_AA)
            if phase:  # the glyph a fraction of a pixel to the right, as putText would place it there
                shift = np.float32([[1, 0, phase / PHASES], [0, 1, 0]])
                tile = cv2.warpAffine(tile, shift, (w, tile.shape[0]), flags=cv2.INTER_LINEAR)
            found = self._tiles[key] = (tile, base, pad)
        return found


def _split(x: float) -> tuple[int, int]:
    """A position as whole pixels and a sub-pixel phase."""
    xi = int(x)
    phase = int(round((x - xi) * PHASES))
    return (xi + 1, 0) if phase == PHASES else (xi, phase)


def _paste(image: np.ndarray, tile: np.ndarray, top: int, left: int) -> None:
    """The brighter of image and tile, clipped to the image."""
    height, width = image.shape[:2]
    t0, l0 = max(-top, 0), max(-left, 0)
    t1, l1 = min(tile.shape[0], height - top), min(tile.shape[1], width - left)
    if t1 > t0 and l1 > l0:
        region = image[top + t0:top + t1, left + l0:left + l1]
        np.maximum(region, tile[t0:t1, l0:l1], out=region)
