"""The `warp` baseline of `th eval`: a piecewise-affine warp of the source photo by the driver's landmarks.

The source's 68 landmarks plus fixed points on the image border are triangulated once (Delaunay); each
output pixel inside a triangle of the *driver's* landmarks is pulled from the matching source triangle
through that triangle's affine map. The border points are fixed, so the background stays where it was.
This is the classical non-learned way to reenact a photo, and the bar a learned generator must clear.
"""

from __future__ import annotations

import numpy as np


def border_points(size: tuple[int, int], per_side: int = 3) -> np.ndarray:
    """Fixed anchor points on the image border: the corners and ``per_side - 1`` points between them."""
    w, h = size
    t = np.linspace(0.0, 1.0, per_side + 1)[:-1]
    xs, ys = (w - 1) * t, (h - 1) * t
    top = np.column_stack([xs, np.zeros_like(xs)])
    right = np.column_stack([np.full_like(ys, w - 1), ys])
    bottom = np.column_stack([(w - 1) - xs, np.full_like(xs, h - 1)])
    left = np.column_stack([np.zeros_like(ys), (h - 1) - ys])
    return np.vstack([top, right, bottom, left]).astype(np.float64)


def triangulate(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles (M, 3) of point indices (joggled, so duplicate landmarks do not fail)."""
    from scipy.spatial import Delaunay

    return Delaunay(points, qhull_options="QJ").simplices.astype(np.int64)


class PiecewiseAffineWarp:
    """Warp one source image to any number of target landmark sets (triangulation built once)."""

    def __init__(self, source: np.ndarray, source_landmarks: np.ndarray) -> None:
        h, w = source.shape[:2]
        self.source = source
        self.border = border_points((w, h))
        self.src_pts = np.vstack([np.asarray(source_landmarks, np.float64), self.border])
        self.triangles = triangulate(self.src_pts)

    def __call__(self, target_landmarks: np.ndarray) -> np.ndarray:
        """The source image warped so its landmarks land on ``target_landmarks`` (68, 2)."""
        import cv2

        h, w = self.source.shape[:2]
        dst_pts = np.vstack([np.asarray(target_landmarks, np.float64), self.border])
        label = np.full((h, w), -1, np.int32)
        affines = np.zeros((len(self.triangles), 2, 3), np.float64)
        for k, tri in enumerate(self.triangles):
            d = dst_pts[tri]
            # affine from the driver's triangle (output) back to the source triangle (where to sample)
            a = np.hstack([d, np.ones((3, 1))])
            if abs(np.linalg.det(a)) < 1e-9:
                continue
            affines[k] = np.linalg.solve(a, self.src_pts[tri]).T
            cv2.fillConvexPoly(label, np.round(d).astype(np.int32), int(k))
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        inside = label >= 0
        lab = np.where(inside, label, 0)
        m = affines[lab]  # (h, w, 2, 3)
        map_x = np.where(inside, m[..., 0, 0] * xs + m[..., 0, 1] * ys + m[..., 0, 2], xs).astype(np.float32)
        map_y = np.where(inside, m[..., 1, 0] * xs + m[..., 1, 1] * ys + m[..., 1, 2], ys).astype(np.float32)
        return cv2.remap(self.source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warp_frames(source: np.ndarray, source_landmarks: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3): the source photo warped to each of the T target landmark sets (T, 68, 2)."""
    warp = PiecewiseAffineWarp(source, source_landmarks)
    return np.stack([warp(t) for t in targets])
