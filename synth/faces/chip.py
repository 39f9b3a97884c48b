"""Face chips exactly as dlib cuts them for its face-recognition network (``dlib.get_face_chip``).

A similarity transform maps dlib's mean face (points 17-67 minus eyebrows and lower lip, or the 5-point
layout) onto the landmarks; the chip is that square, ``padding`` of its side around the face. dlib then
samples it bilinearly, first halving the image with its 5-tap pyramid while the chip's footprint is
more than twice the chip (dlib/image_transforms/interpolation.h: ``get_face_chip_details``,
``extract_image_chips``; image_pyramid.h: ``pyramid_down<2>``). :func:`extract_chip` reproduces that
pixel for pixel in numpy; :func:`cut_chips` is the differentiable torch version (grid_sample) for losses.

Pixel convention (dlib's and ours): pixel (x, y) has its centre at integer (x, y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# Mean positions of the 68-point face's points 17-67 in the unit square (dlib's get_face_chip_details).
_MEAN_X = (0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991, 0.98004,
           0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373, 0.121737,
           0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751,
           0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
           0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874, 0.553364, 0.490127,
           0.42689)
_MEAN_Y = (0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915,
           0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345, 0.587326,
           0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423,
           0.244077, 0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
           0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746, 0.784792, 0.824182,
           0.831803, 0.824182)
# The points used: 27-54 and 60-64 (no jaw, no eyebrows, no lower lip).
_USED68 = tuple(i for i in range(27, 68) if not (55 <= i <= 59 or 65 <= i <= 67))
# dlib's shape_predictor_5_face_landmarks layout: outer and inner corner of the eye on the image's right,
# the same on the image's left, the base of the nose.
_MEAN5 = ((0.8595674595992, 0.2134981538014), (0.6460604764104, 0.2289674387677),
          (0.1205750620789, 0.2137274526848), (0.3340850613712, 0.2290642403242),
          (0.4901123135679, 0.6277975316475))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (A, t) with dst ≈ A·src + t (Umeyama 1991, Eq. 34-43, as dlib does it)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sigma_s = ((src - mu_s) ** 2).sum(1).mean()
    cov = (dst - mu_d).T @ (src - mu_s) / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    if np.linalg.det(cov) < 0 or (np.linalg.det(cov) == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        s[1, 1] = -1.0 if d[1] < d[0] else 1.0
        s[0, 0] = 1.0 if d[1] < d[0] else -1.0
    r = u @ s @ vt
    c = float(np.trace(np.diag(d) @ s)) / sigma_s if sigma_s != 0 else 1.0
    return c * r, mu_d - c * r @ mu_s


def _affine_from_3(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 affine with dst_i = M·(src_i, 1) for three point pairs."""
    p = np.hstack([np.asarray(src, np.float64), np.ones((3, 1))])  # (3,3)
    return np.linalg.solve(p, np.asarray(dst, np.float64)).T  # (2,3)


@dataclass(frozen=True)
class ChipDetails:
    """dlib's chip_details: where the chip lies in the image (a rotated rectangle) and its pixel size."""

    rect: tuple[float, float, float, float]  # left, top, right, bottom (drectangle; width = right-left+1)
    angle: float  # radians
    rows: int
    cols: int

    def corners(self, rect: tuple[float, float, float, float] | None = None) -> np.ndarray:
        """Image points of the chip's top-left, top-right and bottom-left pixels: (3,2)."""
        x0, y0, x1, y1 = self.rect if rect is None else rect
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        c, s = math.cos(self.angle), math.sin(self.angle)
        rot = np.array([[c, -s], [s, c]])
        return (np.array([[x0, y0], [x1, y0], [x0, y1]]) - centre) @ rot.T + centre


def chip_details(landmarks: np.ndarray, size: int = 150, padding: float = 0.25) -> ChipDetails:
    """dlib.get_face_chip_details for 68 (iBUG 300-W) or 5 (dlib) landmarks (float pixels)."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape == (68, 2):
        mean = np.array([[_MEAN_X[i - 17], _MEAN_Y[i - 17]] for i in _USED68])
        to = lm[list(_USED68)]
    elif lm.shape == (5, 2):
        mean, to = np.array(_MEAN5), lm
    else:
        raise ValueError(f"expected (68,2) or (5,2) landmarks, got {lm.shape}")
    frm = (padding + mean) / (2 * padding + 1) * size
    a, t = similarity_transform(frm, to)
    p = a @ np.array([1.0, 0.0])
    scale = math.hypot(p[0], p[1])
    cx, cy = a @ np.array([size / 2.0, size / 2.0]) + t
    w, h = size * scale - 1, size * scale - 1  # centered_drect: a drectangle's width is right-left+1
    return ChipDetails((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), math.atan2(p[1], p[0]), size, size)


# --- dlib's extract_image_chips, pixel for pixel -------------------------------------------------------

def _area(rect: tuple[float, float, float, float]) -> float:
    x0, y0, x1, y1 = rect
    return 0.0 if (y0 > y1 or x0 > x1) else (x1 - x0 + 1) * (y1 - y0 + 1)


def _rect_down(rect: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """pyramid_down<2>::rect_down: p/2 − (1.25, 0.75) on both corners."""
    x0, y0, x1, y1 = rect
    return (x0 / 2 - 1.25, y0 / 2 - 0.75, x1 / 2 - 1.25, y1 / 2 - 0.75)


def pyramid_down(img: np.ndarray) -> np.ndarray:
    """dlib's pyramid_down<2> on RGB: 5-tap [1 4 6 4 1] filter both ways, every other pixel, integer ÷256.

    The filter runs in OpenCV (float32 holds the integer sums exactly, ≤ 255·256) and only outputs whose taps lie
    inside the image are kept, so the border rule never enters: the same integers as dlib's."""
    import cv2

    nr, nc = img.shape[:2]
    if nr <= 8 or nc <= 8:
        return np.zeros((0, 0, 3), np.uint8)
    w, h = (nc - 3) // 2, (nr - 3) // 2
    tap = np.array([1, 4, 6, 4, 1], np.float32)
    full = cv2.sepFilter2D(np.ascontiguousarray(img), cv2.CV_32F, tap, tap, borderType=cv2.BORDER_CONSTANT)
    down = full[2:2 * h + 2:2, 2:2 * w + 2:2]  # output k is centred on input 2k + 2
    return np.floor(down / 256.0).astype(np.uint8)


def _bilinear_sampling(h: int, w: int, m: np.ndarray, rows: int, cols: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Where ``_bilinear_dlib`` reads an h×w image: (top-left flat index, fx, fy, inside) per chip pixel; None when
    the image is smaller than 2×2. One sampling serves every image of that size cut at ``m``."""
    if h < 2 or w < 2:
        return None
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float64)
    px = (m[0, 0] * xs + m[0, 1] * ys + m[0, 2]).ravel()
    py = (m[1, 0] * xs + m[1, 1] * ys + m[1, 2]).ravel()
    left, top = np.floor(px), np.floor(py)
    ok = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    i = np.clip(top, 0, h - 2).astype(np.int64) * w + np.clip(left, 0, w - 2).astype(np.int64)
    return i, (px - left)[:, None], (py - top)[:, None], ok


def _bilinear_dlib(img: np.ndarray, m: np.ndarray, rows: int, cols: int, sampling=None) -> np.ndarray:
    """dlib's transform_image with interpolate_bilinear: out(x,y) = img at m·(x,y,1); black where the 2×2
    neighbourhood leaves the image; channel values truncated to uint8 as assign_pixel does. ``sampling``:
    ``_bilinear_sampling`` of this image size and ``m``, when the caller cuts several images alike."""
    h, w = img.shape[:2]
    sampling = sampling or _bilinear_sampling(h, w, m, rows, cols)
    if sampling is None:
        return np.zeros((rows, cols, 3), np.uint8)
    i, fx, fy, ok = sampling
    flat = np.ascontiguousarray(img).reshape(-1, 3)
    tl, tr = flat[i].astype(np.float64), flat[i + 1].astype(np.float64)
    bl, br = flat[i + w].astype(np.float64), flat[i + w + 1].astype(np.float64)
    val = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
    out = np.clip(val, 0, 255).astype(np.uint8)
    out[~ok] = 0
    return out.reshape(rows, cols, 3)


@dataclass(frozen=True)
class ChipPlan:
    """How dlib samples one chip: crop the image to ``box``, halve it ``levels`` times with its pyramid,
    then sample the result bilinearly at ``m``·(x, y, 1) for every chip pixel (x, y)."""

    box: tuple[int, int, int, int] | None  # x0, y0, x1, y1 inclusive; None: the chip misses the image
    levels: int
    m: np.ndarray  # (2,3)


def chip_plan(details: ChipDetails, height: int, width: int) -> ChipPlan:
    """dlib's extract_image_chips for one chip in an image of ``height``×``width``."""
    size = details.rows * details.cols
    depth, grow = 0, 2.0
    rect = _rect_down(details.rect)
    while _area(rect) > size:
        rect = _rect_down(rect)
        depth += 1
        grow = grow * 2 + 2
    # the image region the pyramid is built on: the rotated chip, grown, clipped, rounded to pixels
    pts = details.corners()
    pts = np.vstack([pts, pts[1] + pts[2] - pts[0]])  # + bottom-right
    box = (max(pts[:, 0].min() - grow, 0.0), max(pts[:, 1].min() - grow, 0.0),
           min(pts[:, 0].max() + grow, width - 1.0), min(pts[:, 1].max() + grow, height - 1.0))
    x0, y0, x1, y1 = (math.floor(v + 0.5) for v in box)
    level_rect = (details.rect[0] - x0, details.rect[1] - y0, details.rect[2] - x0, details.rect[3] - y0)
    level = -1
    while _area(_rect_down(level_rect)) > size:
        level += 1
        level_rect = _rect_down(level_rect)
    m = _affine_from_3([[0, 0], [details.cols - 1, 0], [0, details.rows - 1]], details.corners(level_rect))
    return ChipPlan((x0, y0, x1, y1) if x0 <= x1 and y0 <= y1 else None, level + 1, m)


def extract_chip(rgb: np.ndarray, details: ChipDetails) -> np.ndarray:
    """dlib's extract_image_chip (interpolate_bilinear): uint8 (rows, cols, 3) from an RGB uint8 image."""
    return extract_chips([rgb], details)[0]


def extract_chips(images: list[np.ndarray], details: ChipDetails, fast: bool = False) -> list[np.ndarray]:
    """``extract_chip`` of each image at one ``details`` (e.g. consecutive frames cut where one frame's face is): the
    plan and the sampling points are computed once per image size, the pixels are the same as one by one.
    ``fast``: the last step (bilinear sampling) by OpenCV's warpAffine instead: ~10× faster, its weights are
    5-bit fixed point, so pixels differ from dlib's by a level or two (and it blends the image border with black)."""
    import cv2

    out, plans = [], {}
    for rgb in images:
        key = rgb.shape[:2]
        if key not in plans:
            plan = chip_plan(details, *key)
            plans[key] = (plan, None)
        plan, sampling = plans[key]
        if plan.box is None:
            out.append(np.zeros((details.rows, details.cols, 3), np.uint8))
            continue
        x0, y0, x1, y1 = plan.box
        src = rgb[y0:y1 + 1, x0:x1 + 1]
        for _ in range(plan.levels):
            src = pyramid_down(src)
        if fast:
            out.append(cv2.warpAffine(np.ascontiguousarray(src), plan.m, (details.cols, details.rows),
                                      flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT))
            continue
        if sampling is None:
            sampling = _bilinear_sampling(src.shape[0], src.shape[1], plan.m, details.rows, details.cols)
            plans[key] = (plan, sampling)
        out.append(_bilinear_dlib(src, plan.m, details.rows, details.cols, sampling))
    return out


def face_chip(rgb: np.ndarray, landmarks: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """``dlib.get_face_chip(rgb, shape, size, padding)`` in numpy: uint8 (size, size, 3)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("expected an RGB uint8 image")
    return extract_chip(np.ascontiguousarray(rgb), chip_details(landmarks, size, padding))


# --- differentiable chips (torch) -------------------------------------------------------------------

def cut_chips(images: torch.Tensor, landmarks: torch.Tensor | np.ndarray, size: int = 150,
              padding: float = 0.25) -> torch.Tensor:
    """Face chips cut differentiably (w.r.t. the images) from a batch: images (B,C,H,W), landmarks (B,68,2)
    or (B,5,2) in pixels of the images → (B,C,size,size).

    dlib's chip (:func:`extract_chip`) without its rounding: the same crop, the same 5-tap pyramid (as a
    strided convolution), the same sampling points (grid_sample, bilinear, zeros outside the image).
    """
    import torch
    import torch.nn.functional as F

    b, c, h, w = images.shape
    lms = landmarks.detach().cpu().numpy() if isinstance(landmarks, torch.Tensor) else np.asarray(landmarks)
    if lms.shape[0] != b:
        raise ValueError(f"{lms.shape[0]} landmark sets for {b} images")
    tap = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=images.dtype, device=images.device) / 16
    ky, kx = tap.view(1, 1, 5, 1).repeat(c, 1, 1, 1), tap.view(1, 1, 1, 5).repeat(c, 1, 1, 1)
    xs = torch.arange(size, dtype=images.dtype, device=images.device)
    gx, gy = xs.view(1, size).expand(size, size), xs.view(size, 1).expand(size, size)
    chips = []
    for i in range(b):
        plan = chip_plan(chip_details(lms[i], size, padding), h, w)
        if plan.box is None:
            chips.append(images.new_zeros(1, c, size, size))
            continue
        x0, y0, x1, y1 = plan.box
        src = images[i:i + 1, :, y0:y1 + 1, x0:x1 + 1]  # (1,C,h',w')
        for _ in range(plan.levels):  # pyramid_down<2>: rows and columns 2k … 2k+4 → (⌊(h'−3)/2⌋, ⌊(w'−3)/2⌋)
            src = F.conv2d(F.conv2d(src, kx, stride=(1, 2), groups=c), ky, stride=(2, 1), groups=c)
        m = torch.as_tensor(plan.m, dtype=images.dtype, device=images.device)
        px, py = m[0, 0] * gx + m[0, 1] * gy + m[0, 2], m[1, 0] * gx + m[1, 1] * gy + m[1, 2]  # (size,size)
        hh, ww = src.shape[-2:]
        grid = torch.stack([2 * px / max(ww - 1, 1) - 1, 2 * py / max(hh - 1, 1) - 1], dim=-1)
        chips.append(F.grid_sample(src, grid[None], mode="bilinear", padding_mode="zeros", align_corners=True))
    return torch.cat(chips)  # (B,C,size,size)
