"""Piecewise-affine warp of a photo by landmarks: the `warp` baseline of `th eval`, and the first half of the
warp-guided generator (synth.nets.warp_generator), which warps the avatar's shots and then fixes the warp.

The source's 68 landmarks, a few points derived from them (forehead above the brows, a ring outside the
jaw, so hair and neck move with the head) and fixed points on the image border are triangulated once
(Delaunay); each output pixel inside a triangle of the *target's* points is pulled from the matching
source triangle through that triangle's affine map. The border points are fixed, so the background stays.
"""

from __future__ import annotations

import numpy as np

FOREHEAD = (17, 19, 21, 22, 24, 26)  # brow points lifted onto the forehead
OUTER_RING = (0, 2, 4, 6, 8, 10, 12, 14, 16)  # jaw points pushed outwards (hair, ears, neck)


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


def dense_points(landmarks: np.ndarray) -> np.ndarray:
    """(68 + 15, 2): the landmarks plus forehead points and an outer ring, all moving with the face.

    Forehead: each chosen brow point lifted along the face's up axis (nose tip → nose bridge) by 0.6 of
    the nose length. Ring: every other jaw point pushed 25 % further from the face centre.
    """
    lm = np.asarray(landmarks, np.float64)
    up = lm[27] - lm[30]  # nose tip -> top of the bridge
    forehead = lm[list(FOREHEAD)] + 0.6 * up
    centre = lm[list(range(17)) + list(range(27, 36))].mean(0)
    ring = centre + 1.25 * (lm[list(OUTER_RING)] - centre)
    return np.vstack([lm, forehead, ring])


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
        self.src_pts = np.vstack([dense_points(source_landmarks), self.border])
        self.triangles = triangulate(self.src_pts)
        self._grid = np.mgrid[0:h, 0:w].astype(np.float32)  # (2, h, w): ys, xs

    def maps(self, target_landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """cv2.remap maps (float32 (h, w) each): where every output pixel samples the source."""
        import cv2

        h, w = self.source.shape[:2]
        dst_pts = np.vstack([dense_points(target_landmarks), self.border])
        n = len(self.triangles)
        label = np.full((h, w), n, np.int32)  # n = outside every triangle: the identity map below
        tri_dst = dst_pts[self.triangles]  # (M,3,2)
        a = np.concatenate([tri_dst, np.ones((n, 3, 1))], axis=2)  # (M,3,3)
        ok = np.abs(np.linalg.det(a)) > 1e-9
        affines = np.zeros((n + 1, 2, 3), np.float32)
        affines[n] = ((1, 0, 0), (0, 1, 0))
        # affine from the target's triangle (output) back to the source triangle (where to sample)
        affines[:n][ok] = np.linalg.solve(a[ok], self.src_pts[self.triangles[ok]]).transpose(0, 2, 1)
        corners = np.round(tri_dst).astype(np.int32)
        for k in np.flatnonzero(ok):
            cv2.fillConvexPoly(label, corners[k], int(k))
        ys, xs = self._grid
        m = affines[label]  # (h, w, 2, 3)
        map_x = m[..., 0, 0] * xs + m[..., 0, 1] * ys + m[..., 0, 2]
        map_y = m[..., 1, 0] * xs + m[..., 1, 1] * ys + m[..., 1, 2]
        return map_x, map_y

    def __call__(self, target_landmarks: np.ndarray) -> np.ndarray:
        """The source image warped so its landmarks land on ``target_landmarks`` (68, 2)."""
        import cv2

        map_x, map_y = self.maps(target_landmarks)
        return cv2.remap(self.source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class ShotWarper:
    """The K source shots of one person, each warped to a target's landmarks (the generator's input)."""

    def __init__(self, shots: np.ndarray, shot_landmarks: np.ndarray) -> None:
        if len(shots) != len(shot_landmarks) or len(shots) == 0:
            raise ValueError(f"{len(shots)} shots but {len(shot_landmarks)} landmark sets")
        self.warps = [PiecewiseAffineWarp(s, lm) for s, lm in zip(shots, shot_landmarks)]

    def __len__(self) -> int:
        return len(self.warps)

    def __call__(self, target_landmarks: np.ndarray) -> np.ndarray:
        """uint8 (K, H, W, 3): every shot warped to ``target_landmarks`` (68, 2)."""
        return np.stack([w(target_landmarks) for w in self.warps])


def warp_frames(source: np.ndarray, source_landmarks: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3): the source photo warped to each of the T target landmark sets (T, 68, 2)."""
    warp = PiecewiseAffineWarp(source, source_landmarks)
    return np.stack([warp(t) for t in targets])
