"""Motion for animation: relative transfer of a driver's landmark motion onto the avatar's own face,
and built-in procedural motions (no driver video needed).

Relative transfer (the default) fixes a known weakness of the paper, which fed the driver's absolute
landmarks to the generator so the driver's face shape leaked into the avatar: here only the driver's
*change* from its own neutral frame, normalised for face size, moves the avatar's landmarks.
"""

from __future__ import annotations

import numpy as np

from synth.errors import UserError
from synth.faces.align import face_scale

BUILTIN_MOTIONS = ("talk", "nod", "turn", "blink", "smile", "demo")


def relative_transfer(avatar_lm: np.ndarray, driver: np.ndarray, neutral: int | np.ndarray = 0) -> np.ndarray:
    """Avatar landmarks moved by the driver's motion.

    ``driver`` is (T, 68, 2) in any pixel frame; ``neutral`` is the index of the driver's neutral frame
    (or its landmarks). Each driver frame's offset from neutral is rescaled by the ratio of face sizes
    and added to the avatar's landmarks, so the avatar keeps its own face shape.
    """
    drv = np.asarray(driver, np.float32)
    ref = drv[neutral] if isinstance(neutral, int | np.integer) else np.asarray(neutral, np.float32)
    k = face_scale(avatar_lm) / max(face_scale(ref), 1e-6)
    return (avatar_lm[None] + (drv - ref[None]) * k).astype(np.float32)


def absolute_transfer(driver_crop_lm: np.ndarray) -> np.ndarray:
    """The paper's behaviour: the driver's landmarks (already in crop coordinates) used as they are."""
    return np.asarray(driver_crop_lm, np.float32)


def _depth(lm: np.ndarray) -> np.ndarray:
    """A rough depth per landmark (pixels, towards the camera) for small rotations: a half-ellipsoid
    over the face width, with the nose standing out."""
    cx = lm[:, 0].mean()
    half_w = max(np.ptp(lm[:17, 0]) / 2, 1.0)
    u = np.clip((lm[:, 0] - cx) / half_w, -1, 1)
    z = np.sqrt(1 - u**2) * half_w * 0.6
    z[27:36] += half_w * np.array([0.05, 0.12, 0.2, 0.3, 0.15, 0.18, 0.2, 0.18, 0.15])
    return z


def _rotate(lm: np.ndarray, yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """Rotate the landmarks in 3D (radians) about the face centre and project orthographically."""
    c = lm.mean(0)
    p = np.column_stack([lm - c, _depth(lm)])
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    q = p @ (rz @ rx @ ry).T
    return (q[:, :2] + c).astype(np.float32)


def _open_mouth(lm: np.ndarray, amount: float) -> np.ndarray:
    """Lower the jaw and lower lip by ``amount`` × (mouth width / 2)."""
    out = lm.copy()
    d = amount * np.ptp(lm[48:60, 0]) / 2
    jaw_w = np.array([0.0, 0, 0.1, 0.25, 0.45, 0.65, 0.85, 0.95, 1.0, 0.95, 0.85, 0.65, 0.45, 0.25, 0.1, 0, 0])
    out[:17, 1] += d * jaw_w
    out[[55, 56, 57, 58, 59], 1] += d
    out[[65, 66, 67], 1] += d * 0.95
    out[[48, 54, 60, 64], 1] += d * 0.3
    return out


def _smile(lm: np.ndarray, amount: float) -> np.ndarray:
    out = lm.copy()
    w = np.ptp(lm[48:60, 0]) / 2
    out[[48, 60], 0] -= amount * w * 0.25
    out[[54, 64], 0] += amount * w * 0.25
    out[[48, 54, 60, 64], 1] -= amount * w * 0.2
    out[[49, 53], 1] -= amount * w * 0.08
    return out


def _blink(lm: np.ndarray, closed: float) -> np.ndarray:
    out = lm.copy()
    for up, lo in (((37, 38), (41, 40)), ((43, 44), (47, 46))):
        for u, low in zip(up, lo):
            mid = (lm[u] + lm[low]) / 2
            out[u] = lm[u] + (mid - lm[u]) * closed * 0.95
            out[low] = lm[low] + (mid - lm[low]) * closed * 0.95
    return out


def builtin_motion(name: str, avatar_lm: np.ndarray, fps: float = 25.0, seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    """A procedural landmark track (T, 68, 2) that moves the avatar's own landmarks."""
    if name not in BUILTIN_MOTIONS:
        raise UserError(f"unknown built-in motion {name!r} (choose from {', '.join(BUILTIN_MOTIONS)})")
    n = max(1, int(round(fps * seconds)))
    t = np.arange(n) / fps
    rng = np.random.default_rng(seed)
    lm0 = np.asarray(avatar_lm, np.float32)
    # syllable-like mouth opening: a sum of incommensurate rhythms, clipped to closed
    phases = rng.uniform(0, 2 * np.pi, 3)
    speech = np.clip(0.55 * np.sin(2 * np.pi * 3.1 * t + phases[0]) + 0.35 * np.sin(2 * np.pi * 4.7 * t + phases[1])
                     + 0.2 * np.sin(2 * np.pi * 1.3 * t + phases[2]), 0, None)
    blink_times = np.arange(0.8, seconds, 2.3)
    blink = np.zeros(n)
    for bt in blink_times:
        blink = np.maximum(blink, np.clip(1 - np.abs(t - bt) / 0.12, 0, 1))
    ramp = np.sin(np.pi * t / seconds)  # starts and ends at rest
    frames = []
    for i in range(n):
        lm = lm0
        if name in ("talk", "demo"):
            lm = _open_mouth(lm, 0.55 * speech[i])
        if name == "smile":
            lm = _smile(lm, ramp[i])
        if name in ("blink", "talk", "demo"):
            lm = _blink(lm, blink[i])
        yaw = pitch = roll = 0.0
        if name == "turn":
            yaw = 0.35 * np.sin(2 * np.pi * t[i] / seconds)
        if name == "nod":
            pitch = 0.2 * np.sin(2 * np.pi * 1.0 * t[i])
        if name == "demo":
            yaw = 0.18 * np.sin(2 * np.pi * t[i] / seconds)
            pitch = 0.06 * np.sin(2 * np.pi * 0.7 * t[i])
            roll = 0.05 * np.sin(2 * np.pi * 0.4 * t[i])
        if yaw or pitch or roll:
            lm = _rotate(lm, yaw, pitch, roll)
        frames.append(lm)
    return np.stack(frames).astype(np.float32)


def talking_motion(avatar_lm: np.ndarray, mouth_motion: np.ndarray, fps: float = 25.0, seed: int = 0) -> np.ndarray:
    """The avatar's face speaking: its jaw and mouth moved by mouth-space motion (T, 37, 2) from the
    audio model, starting from its lips closed (``rest_face``: silence is a closed, still mouth), plus
    natural blinks (every 2-6 s, 0.25 s long) and a small, slow head motion (a few degrees), both
    procedural. Returns (T, 68, 2)."""
    from synth.audio.mouth import apply_mouth_motion, rest_face

    faces = apply_mouth_motion(rest_face(avatar_lm), mouth_motion)
    n = len(faces)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps
    blink = np.zeros(n)
    bt = rng.uniform(0.5, 2.5)
    while bt < n / fps:
        blink = np.maximum(blink, np.clip(1 - np.abs(t - bt) / 0.12, 0, 1))
        bt += rng.uniform(2.0, 6.0)
    # head: sums of slow incommensurate sines, random phases; ≤ ~3° yaw, ~2° pitch, ~1.5° roll
    ph = rng.uniform(0, 2 * np.pi, 6)
    yaw = 0.035 * np.sin(2 * np.pi * 0.13 * t + ph[0]) + 0.015 * np.sin(2 * np.pi * 0.31 * t + ph[1])
    pitch = 0.025 * np.sin(2 * np.pi * 0.21 * t + ph[2]) + 0.01 * np.sin(2 * np.pi * 0.47 * t + ph[3])
    roll = 0.02 * np.sin(2 * np.pi * 0.09 * t + ph[4]) + 0.008 * np.sin(2 * np.pi * 0.37 * t + ph[5])
    for i in range(n):
        faces[i] = _rotate(_blink(faces[i], blink[i]), yaw[i], pitch[i], roll[i])
    return faces
