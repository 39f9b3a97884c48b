"""The paper's landmark image (Zakharov et al. 2019, Sec. 3): the 68 iBUG 300-W landmarks drawn as
coloured line segments on a black canvas, one colour per face part. This image is the generator's input
and the pose half of the embedder's and discriminator's input.
"""

from __future__ import annotations

import numpy as np

# (name, landmark index range [start, stop), closed polyline?, RGB colour)
FACE_PARTS: tuple[tuple[str, int, int, bool, tuple[int, int, int]], ...] = (
    ("jaw", 0, 17, False, (255, 255, 255)),
    ("right_brow", 17, 22, False, (255, 128, 0)),
    ("left_brow", 22, 27, False, (255, 200, 0)),
    ("nose_bridge", 27, 31, False, (0, 128, 255)),
    ("nostrils", 31, 36, False, (0, 220, 255)),
    ("right_eye", 36, 42, True, (0, 255, 0)),
    ("left_eye", 42, 48, True, (128, 255, 0)),
    ("outer_lips", 48, 60, True, (255, 0, 128)),
    ("inner_lips", 60, 68, True, (255, 0, 255)),
)


def default_width(size: int) -> int:
    """Line width that keeps the drawing's look constant across resolutions (2 px at 256)."""
    return max(1, round(size / 128))


def draw_landmarks(landmarks: np.ndarray, size: int | tuple[int, int], width: int | None = None) -> np.ndarray:
    """Rasterise 68 landmarks (pixel coordinates of the target canvas) into an RGB uint8 image.

    ``size`` is the canvas side (square) or (height, width). Lines are anti-aliased; parts are drawn in
    FACE_PARTS order so the lips end on top.
    """
    import cv2

    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.shape != (68, 2):
        raise ValueError(f"expected landmarks of shape (68, 2), got {lm.shape}")
    h, w = (size, size) if isinstance(size, int) else size
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    if not np.isfinite(lm).all():
        return canvas
    lw = default_width(min(h, w)) if width is None else int(width)
    shift = 4  # sub-pixel precision for cv2 drawing
    pts = np.round(lm * (1 << shift)).astype(np.int32)
    for _, start, stop, closed, colour in FACE_PARTS:
        cv2.polylines(canvas, [pts[start:stop]], closed, colour, lw, cv2.LINE_AA, shift)
    return canvas
