"""The one canonical face crop used for training, enrollment, animation and detection.

A square, axis-aligned box around the 68 landmarks (no rotation: head roll stays in the landmarks,
as in VoxCeleb-style crops), enlarged by a margin so the whole head fits, resampled to a fixed size.
The crop is a similarity transform ``M`` (2×3, image → crop); its inverse pastes a generated crop back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_SIZE = 256
DEFAULT_SCALE = 1.8  # crop side = scale × the landmarks' larger extent
UP_SHIFT = 0.12  # move the centre up by this fraction of the side: forehead in, neck mostly out


@dataclass(frozen=True)
class CropBox:
    """A square crop in image pixels: centre and side."""

    cx: float
    cy: float
    side: float

    def affine(self, size: int) -> np.ndarray:
        """2×3 matrix mapping image pixels to crop pixels of a ``size``×``size`` output."""
        s = size / self.side
        x0 = self.cx - self.side / 2
        y0 = self.cy - self.side / 2
        return np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]], dtype=np.float64)


def crop_box(landmarks: np.ndarray, scale: float = DEFAULT_SCALE) -> CropBox:
    """The canonical square box for one set of landmarks."""
    lm = np.asarray(landmarks, dtype=np.float64)
    x0, y0 = lm.min(axis=0)
    x1, y1 = lm.max(axis=0)
    side = max(x1 - x0, y1 - y0) * scale
    cx = (x0 + x1) / 2
    cy = (y0 + y1) / 2 - UP_SHIFT * side
    return CropBox(float(cx), float(cy), float(side))


def clip_box(landmark_seq: np.ndarray, scale: float = DEFAULT_SCALE) -> CropBox:
    """One fixed box for a whole clip (median centre, largest typical side), so the head moves
    inside a still crop as in VoxCeleb — landmarks then carry the head motion."""
    boxes = [crop_box(lm, scale) for lm in landmark_seq]
    cx = float(np.median([b.cx for b in boxes]))
    cy = float(np.median([b.cy for b in boxes]))
    side = float(np.percentile([b.side for b in boxes], 90))
    return CropBox(cx, cy, side)


def face_scale(lm: np.ndarray) -> float:
    """A pose-stable face size: distance between the eye centres plus eye-to-mouth distance."""
    eyes = (lm[36:42].mean(0), lm[42:48].mean(0))
    mouth = lm[48:60].mean(0)
    iod = float(np.linalg.norm(eyes[0] - eyes[1]))
    em = float(np.linalg.norm((eyes[0] + eyes[1]) / 2 - mouth))
    return iod + em


def apply_affine(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a 2×3 affine."""
    pts = np.asarray(points, dtype=np.float64)
    return (pts @ M[:, :2].T + M[:, 2]).astype(np.float32)


def invert_affine(M: np.ndarray) -> np.ndarray:
    """Inverse of a 2×3 affine (crop → image)."""
    A = np.vstack([M, [0.0, 0.0, 1.0]])
    return np.linalg.inv(A)[:2]


def align_crop(
    rgb: np.ndarray,
    landmarks: np.ndarray | None = None,
    size: int = DEFAULT_SIZE,
    box: CropBox | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the canonical crop: returns (crop uint8 size×size×3, M image→crop).

    Give ``landmarks`` (box computed from them) or a precomputed ``box`` (e.g. a clip's fixed box).
    Pixels outside the image are filled by edge replication.
    """
    import cv2

    if box is None:
        if landmarks is None:
            raise ValueError("align_crop needs landmarks or a box")
        box = crop_box(landmarks)
    M = box.affine(size)
    interp = cv2.INTER_AREA if M[0, 0] < 1 else cv2.INTER_LINEAR
    crop = cv2.warpAffine(rgb, M, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)
    return crop, M


class Paster:
    """Inverse of ``align_crop`` for a fixed frame size and transform: blends crops back into frames
    with a feathered square mask (mask and inverse transform computed once, reused per frame)."""

    def __init__(self, frame_shape: tuple[int, int], crop_size: int, M: np.ndarray, feather: float = 0.06) -> None:
        import cv2

        self.h, self.w = frame_shape[:2]
        self.Minv = invert_affine(M)
        mask = np.zeros((crop_size, crop_size), np.float32)
        pad = max(1, int(feather * crop_size))
        mask[pad:-pad, pad:-pad] = 1.0
        mask = cv2.GaussianBlur(mask, (0, 0), pad / 2)
        self.mask = cv2.warpAffine(mask, self.Minv, (self.w, self.h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT)[..., None]
        ys, xs = np.nonzero(self.mask[..., 0] > 1e-3)
        self.roi = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)) if len(ys) else (slice(0, 0), slice(0, 0))

    def __call__(self, frame: np.ndarray, crop: np.ndarray) -> np.ndarray:
        import cv2

        warped = cv2.warpAffine(crop, self.Minv, (self.w, self.h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT)
        out = frame.copy()
        r = self.roi
        m = self.mask[r]
        blend = frame[r].astype(np.float32) * (1 - m) + warped[r].astype(np.float32) * m
        out[r] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
        return out


def paste_back(frame: np.ndarray, crop: np.ndarray, M: np.ndarray, feather: float = 0.06) -> np.ndarray:
    """Inverse of ``align_crop``: blend ``crop`` back into ``frame`` with a feathered square mask."""
    return Paster(frame.shape, crop.shape[0], M, feather)(frame, crop)
