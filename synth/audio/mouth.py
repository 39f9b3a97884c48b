"""Mouth space: the mouth and jaw landmarks with the head's pose and size taken out.

The audio model predicts the motion of the 17 jaw and 20 mouth landmarks relative to a neutral
(closed-mouth) face, in a canonical frame: origin between the eye corners, x along the eye line,
unit = ``face_scale`` of the neutral face (the normalisation relative motion transfer uses). Each
frame of a clip is brought into that frame by a similarity fit of its stable points (eye corners and
nose) to the clip's template, so head motion does not pass for mouth motion.
"""

from __future__ import annotations

import numpy as np

from synth.faces.align import face_scale

JAW = np.arange(0, 17)
MOUTH = np.arange(48, 68)
MOVING = np.concatenate([JAW, MOUTH])  # the 37 points the audio model moves
N_MOVING = len(MOVING)
STABLE = np.array([36, 39, 42, 45, 27, 28, 29, 30, 31, 33, 35])  # eye corners, nose bridge and base
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
CLOSED_QUANTILE = 0.2  # the neutral face = median of the clip's most-closed fifth of frames
CLOSED_OPENING = 0.013  # median inner-lip opening of the training clips' neutral faces (face-scale units)
OPEN_AT_REST = 0.02  # an avatar whose lips are parted wider than this is closed for speaking


def eye_frame(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(origin, 2×2 rotation whose rows are the eye-line axes) of one face from its eye corners."""
    left, right = lm[[36, 39]].mean(0), lm[[42, 45]].mean(0)
    x = right - left
    x = x / max(float(np.linalg.norm(x)), 1e-6)
    rot = np.array([[x[0], x[1]], [-x[1], x[0]]], np.float64)
    return (left + right) / 2, rot


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (scale, rotation R, translation t) with dst ≈ scale·src·Rᵀ + t (Umeyama)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, d]) @ vt
    scale = float((sig * [1.0, d]).sum() / max((a**2).sum(), 1e-12))
    return scale, rot, md - scale * ms @ rot.T


def canonicalise(track: np.ndarray) -> np.ndarray:
    """Landmarks (T, 68, 2) in image pixels → the same in the clip's canonical frame (pose removed).

    Units are still those of the clip's template (eye-line axes, template scale); ``neutral_face``
    then fixes the origin and the unit.
    """
    lm = np.asarray(track, np.float64)
    origin, rot = eye_frame(np.median(lm, axis=0))
    template = np.median((lm[:, STABLE] - origin) @ rot.T, axis=0)
    out = np.empty_like(lm)
    for t in range(len(lm)):
        s, r, tr = similarity_fit(lm[t, STABLE], template)
        out[t] = s * lm[t] @ r.T + tr
    return out.astype(np.float32)


def opening(lm: np.ndarray) -> np.ndarray:
    """Inner-lip opening of (…, 68, 2) landmarks: mean distance of the three inner-lip pairs."""
    lm = np.asarray(lm)
    return np.mean([np.linalg.norm(lm[..., a, :] - lm[..., b, :], axis=-1) for a, b in INNER_LIP_PAIRS], axis=0)


def neutral_face(canon: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """The clip's neutral face (68, 2): the median of its most-closed frames (CLOSED_QUANTILE)."""
    frames = canon if valid is None else canon[valid]
    op = opening(frames)
    closed = frames[op <= np.quantile(op, CLOSED_QUANTILE)]
    return np.median(closed, axis=0).astype(np.float32)


def to_mouth_space(canon: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """Canonical landmarks (T, 68, 2) → motion of the moving points (T, 37, 2) from ``neutral``,
    in eye-line axes and face-scale units of the neutral face."""
    origin, rot = eye_frame(neutral)
    k = face_scale(neutral)
    return (((canon[:, MOVING] - neutral[MOVING]) @ rot.T) / k).astype(np.float32)


def apply_mouth_motion(face: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Move a face's jaw and mouth (68, 2, any pixel frame) by mouth-space motion (T, 37, 2) → (T, 68, 2).

    The motion is scaled by the face's own ``face_scale`` and turned with its eye line, so a tilted
    or small face opens its mouth along its own axes. Zero motion gives the face unchanged.
    """
    face = np.asarray(face, np.float32)
    _, rot = eye_frame(face)
    k = face_scale(face)
    out = np.repeat(face[None], len(motion), axis=0)
    out[:, MOVING] += (np.asarray(motion, np.float64) * k) @ rot
    return out.astype(np.float32)


def rest_face(face: np.ndarray) -> np.ndarray:
    """The face with its lips closed, as the audio model's neutral faces are (its motion starts there).

    A photo with parted lips (a smile showing teeth) would otherwise keep them parted in silence and
    open wider than real speech; the inner lips meet halfway and the outer lower lip follows. A face
    whose lips are already closed is returned unchanged.
    """
    face = np.asarray(face, np.float32).copy()
    k = face_scale(face)
    if opening(face) <= OPEN_AT_REST * k:
        return face
    for (up, low), outer in zip(INNER_LIP_PAIRS, ((58,), (57,), (56,))):
        gap = face[low] - face[up]
        d = np.linalg.norm(gap)
        shift = gap * (1 - CLOSED_OPENING * k / max(d, 1e-6)) / 2  # both move half the excess
        face[up] += shift
        face[low] -= shift
        face[list(outer)] -= shift
    return face


def clip_targets(track: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mouth-space motion (T, 37, 2), neutral face (68, 2), all frames (T, 68, 2)) of one clip's track,
    the last two in mouth-space axes and units: ``apply_mouth_motion(neutral, motion)`` gives back the
    moving points of the frames."""
    canon = canonicalise(track)
    neutral = neutral_face(canon, valid)
    motion = to_mouth_space(canon, neutral)
    origin, rot = eye_frame(neutral)
    k = face_scale(neutral)
    norm = ((canon - origin) @ rot.T / k).astype(np.float32)
    return motion, ((neutral - origin) @ rot.T / k).astype(np.float32), norm
