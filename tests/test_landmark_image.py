"""The paper's landmark image: geometry and colours per face part."""

from __future__ import annotations

import numpy as np

from synth.faces.landmark_image import FACE_PARTS, default_width, draw_landmarks


def part_landmarks() -> np.ndarray:
    """A synthetic face: every part a horizontal row of points at its own height."""
    lm = np.zeros((68, 2), np.float32)
    for k, (_, start, stop, _, _) in enumerate(FACE_PARTS):
        n = stop - start
        lm[start:stop, 0] = np.linspace(20, 230, n)
        lm[start:stop, 1] = 20 + 25 * k
    return lm


def test_each_part_in_its_colour_at_its_place():
    img = draw_landmarks(part_landmarks(), 256, width=3)
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    for k, (name, _, _, _, colour) in enumerate(FACE_PARTS):
        y = 20 + 25 * k
        px = img[y, 128]
        assert tuple(int(c) for c in px) == colour, name
        assert img[y + 8, 128].max() == 0  # nothing between rows


def test_background_black_and_width_scales():
    lm = part_landmarks()
    thin = draw_landmarks(lm, 256, width=1)
    thick = draw_landmarks(lm, 256, width=5)
    assert (thin.max(axis=2) > 0).sum() < (thick.max(axis=2) > 0).sum()
    assert thin[0, 0].max() == 0 and thin[255, 255].max() == 0
    assert default_width(256) == 2 and default_width(64) == 1 and default_width(512) == 4


def test_any_resolution_and_rectangular():
    lm = part_landmarks() / 256 * 64
    small = draw_landmarks(lm, 64)
    assert small.shape == (64, 64, 3) and small.max() > 0
    rect = draw_landmarks(part_landmarks(), (300, 260))
    assert rect.shape == (300, 260, 3)


def test_non_finite_landmarks_give_blank_image():
    lm = part_landmarks()
    lm[5] = np.nan
    assert draw_landmarks(lm, 64).max() == 0
