"""The overlay's text, composed from cached glyphs, against cv2.putText's own drawing of the same lines."""

import cv2
import numpy as np
import pytest

from stream.pipeline.glyphs import FONT, MAX_WORDS, GlyphText

LINES = ["Egyptian cat   38.0%", "tabby   34.5%", "58.0 fps | latency 325 ms", "steady: espresso  53%",
         "qgjpy|_()[]{}@#$%&*!?", "two  spaces   three"]


@pytest.mark.parametrize("height, size", [(720, 0.8), (720, 1.0), (360, 0.4), (1080, 1.2), (1080, 1.5)])
def test_glyph_text_matches_puttext_in_place_width_and_ink(height, size):
    scale = height / 720
    thick = max(int(round(2 * scale)), 1)
    text = GlyphText()
    for color in ((255, 255, 255), (90, 220, 90)):
        want = np.zeros((height, height * 16 // 9, 3), np.uint8)
        got = want.copy()
        for i, line in enumerate(LINES):
            org = (int(16 * scale), int(32 * scale) * (i + 1))
            cv2.putText(want, line, org, FONT, size, color, thick, cv2.LINE_AA)
            text.put(got, line, org, size, color, thick)
            text.put(got, line, org, size, color, thick)  # again, from the cache: the same pixels
            assert abs(text.width(line, size, thick) - cv2.getTextSize(line, FONT, size, thick)[0][0]) <= 1
            ink_w, ink_g = np.argwhere(want[..., 1] > 60), np.argwhere(got[..., 1] > 60)
            assert np.abs(ink_w.min(0) - ink_g.min(0)).max() <= 1 and np.abs(ink_w.max(0) - ink_g.max(0)).max() <= 1
        ink = (want > 0) | (got > 0)
        diff = np.abs(want.astype(int) - got.astype(int))[ink]
        assert diff.mean() < 16 and abs(int(want.sum()) - int(got.sum())) < 0.05 * want.sum()


def test_text_is_clipped_at_every_edge_and_the_word_cache_stays_bounded():
    text = GlyphText()
    image = np.zeros((40, 60, 3), np.uint8)
    for org in ((-30, 10), (40, 5), (10, 45), (50, 38)):
        text.put(image, "clipped text", org, 0.8, (255, 255, 255), 2)
    assert image.any()
    for i in range(MAX_WORDS + 50):
        text.put(image, f"{i}", (0, 20), 0.8, (255, 255, 255), 2)
    assert len(text._words) <= MAX_WORDS
