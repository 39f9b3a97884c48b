"""Landmark tracks for video: detect on keyframes, follow between them, smooth with a One-Euro filter.

A track is the driver format of ``th animate`` and the output of ``th faces``: per frame 68×2 float32
landmarks, a confidence, a has-face flag, plus the fps and frame size. Frames with no face are reported
(``has_face`` False, landmarks held from the nearest face) rather than failing the whole video.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth.errors import UserError

TRACK_FORMAT = 1
GATE = 6.0  # luma levels: `_follow` re-detects between keyframes only when the face region changed more (docs/EVAL.md)


@dataclass
class LandmarkTrack:
    landmarks: np.ndarray  # float32 (T, 68, 2), image pixels
    confidence: np.ndarray  # float32 (T,)
    has_face: np.ndarray  # bool (T,)
    fps: float
    frame_size: tuple[int, int]  # (width, height)

    def __len__(self) -> int:
        return int(self.landmarks.shape[0])

    @property
    def faceless(self) -> int:
        return int((~self.has_face).sum())

    def save(self, path: Path | str) -> None:
        """Write as .npz (call inside synth.media.atomic.atomic_path for atomic publication)."""
        with open(path, "wb") as fh:
            np.savez_compressed(
                fh,
                format=np.int32(TRACK_FORMAT),
                landmarks=self.landmarks.astype(np.float32),
                confidence=self.confidence.astype(np.float32),
                has_face=self.has_face.astype(bool),
                fps=np.float32(self.fps),
                frame_size=np.array(self.frame_size, dtype=np.int32),
            )

    @classmethod
    def load(cls, path: Path | str) -> LandmarkTrack:
        """Read and validate a track; anything malformed is a one-line UserError."""
        path = Path(path)
        if not path.exists():
            raise UserError(f"{path}: no such file")
        try:
            with np.load(path, allow_pickle=False) as z:
                lm = z["landmarks"].astype(np.float32)
                conf = z["confidence"].astype(np.float32)
                has = z["has_face"].astype(bool)
                fps = float(z["fps"])
                w, h = (int(v) for v in z["frame_size"])
        except Exception as e:
            raise UserError(f"{path}: not a th landmark track (.npz from `th faces`)") from e
        t = lm.shape[0]
        if lm.ndim != 3 or lm.shape[1:] != (68, 2) or conf.shape != (t,) or has.shape != (t,) or t == 0:
            raise UserError(f"{path}: malformed landmark track (landmarks {lm.shape})")
        if not np.isfinite(lm).all() or not fps > 0:
            raise UserError(f"{path}: landmark track holds non-finite values")
        return cls(lm, conf, has, fps, (w, h))


class OneEuroFilter:
    """Casiez et al. 2012: an adaptive low-pass — steady when still, responsive when moving."""

    def __init__(self, fps: float, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0) -> None:
        self.dt = 1.0 / fps
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.x_prev: np.ndarray | None = None
        self.dx_prev: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def reset(self) -> None:
        self.x_prev = None
        self.dx_prev = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        if self.x_prev is None:
            self.x_prev, self.dx_prev = x, np.zeros_like(x)
            return x.astype(np.float32)
        dx = (x - self.x_prev) / self.dt
        a_d = self._alpha(self.d_cutoff, self.dt)
        dx_hat = a_d * dx + (1 - a_d) * self.dx_prev
        cutoff = self.min_cutoff + self.beta * np.abs(dx_hat)
        a = self._alpha(cutoff, self.dt)
        x_hat = a * x + (1 - a) * self.x_prev
        self.x_prev, self.dx_prev = x_hat, dx_hat
        return x_hat.astype(np.float32)


def _box_from_landmarks(lm: np.ndarray, rel: tuple[float, float, float]) -> tuple[float, float, float, float]:
    """A detector-like box from previous landmarks, using the box/landmark relation seen at the keyframe."""
    c = (lm.min(0) + lm.max(0)) / 2
    ext = float(max(np.ptp(lm[:, 0]), np.ptp(lm[:, 1])))
    dx, dy, k = rel
    half = ext * k / 2
    cx, cy = c[0] + dx * ext, c[1] + dy * ext
    return (cx - half, cy - half, cx + half, cy + half)


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _relation(box: tuple[float, float, float, float], lm: np.ndarray) -> tuple[float, float, float]:
    c = (lm.min(0) + lm.max(0)) / 2
    ext = float(max(np.ptp(lm[:, 0]), np.ptp(lm[:, 1]))) or 1.0
    bc = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    return ((bc[0] - c[0]) / ext, (bc[1] - c[1]) / ext, max(box[2] - box[0], box[3] - box[1]) / ext)


def _follow(
    frames: Iterable[np.ndarray],
    detector=None,
    keyframe_every: int = 10,
    face_index: int | None = None,
    gate: float = GATE,
) -> Iterator[tuple[np.ndarray | None, float, tuple[int, int]]]:
    """Per frame: the raw 68 landmarks of the followed face (None when there is none), its confidence and
    the frame size (width, height).

    Every ``keyframe_every`` frames (and whenever the face was lost) the detector runs on the whole
    frame; in between, the 68 points are fitted in the box predicted from the previous landmarks, and the
    detector runs in a small region around it (a few ms) only when that region changed since the previous
    frame by more than ``gate`` luma levels (mean |Δ| of a 24 px thumbnail: a cut, a cover, a face leaving,
    fast motion; ``gate=0`` checks every frame). On keyframes the face nearest the one being followed is
    kept, so a second person does not steal the track.
    """
    from synth.faces.detector import FaceDetector, fit_landmarks

    det = detector or FaceDetector()
    prev: np.ndarray | None = None
    prev_rgb: np.ndarray | None = None
    prev_c = 0.0
    rel = (0.0, 0.1, 1.1)
    for i, rgb in enumerate(frames):
        lm = None
        c = 0.0
        pred = _box_from_landmarks(prev, rel) if prev is not None else None
        in_pred = None  # the 68-point fit in the predicted box, once computed
        if (pred is not None and i % keyframe_every != 0 and prev_rgb is not None
                and _change(prev_rgb, rgb, pred) < gate):
            # the region around the face barely changed: the same face, fitted in its predicted box — unless
            # the fit itself moved or resized (a fit that drifts would feed its drift into the next box)
            in_pred = fit_landmarks(rgb, pred)
            if _moved(prev, in_pred) < MAX_GATED_MOVE:
                yield in_pred, prev_c, (rgb.shape[1], rgb.shape[0])
                prev, prev_rgb = in_pred, rgb
                continue
        if pred is None or i % keyframe_every == 0:
            faces = det.detect(rgb)
            face = None
            if faces:
                if prev is not None:
                    centre = prev.mean(0)
                    face = min(faces, key=lambda f: float(np.linalg.norm(f.landmarks.mean(0) - centre)))
                elif face_index is not None and face_index < len(faces):
                    face = faces[face_index]
                else:
                    face = faces[0]
        else:
            # Between keyframes: re-detect only around the face we follow (a few ms), so a face that
            # leaves, is covered or cut away is noticed at once instead of being hallucinated.
            face = det.detect_near(rgb, pred, landmarks=False)  # fitted below, in one box or the other
            if face is None:
                faces = det.detect(rgb)
                face = faces[0] if faces else None
        if face is not None:
            c = face.confidence
            if pred is not None and _iou(face.box, pred) > 0.6:
                # Same face, same place: fit in the box predicted from the last landmarks, so a still
                # head gives still landmarks (detector boxes wobble by a few pixels between calls).
                lm = in_pred if in_pred is not None else fit_landmarks(rgb, pred)
            else:
                lm = face.landmarks if face.landmarks is not None else fit_landmarks(rgb, face.box)
                rel = _relation(face.box, lm)
        yield lm, c, (rgb.shape[1], rgb.shape[0])
        prev = lm if lm is not None else prev
        prev_rgb, prev_c = (rgb, c) if lm is not None else (None, prev_c)


MAX_GATED_MOVE = 0.03  # of the face's extent: centre shift or size change of a gated fit that re-detects


def _moved(a: np.ndarray, b: np.ndarray) -> float:
    """How far landmarks ``b`` moved from ``a``: max(centre shift, |size change|) / size of ``a``."""
    ea = float(max(np.ptp(a[:, 0]), np.ptp(a[:, 1]))) or 1.0
    eb = float(max(np.ptp(b[:, 0]), np.ptp(b[:, 1])))
    return max(float(np.linalg.norm(a.mean(0) - b.mean(0))) / ea, abs(eb - ea) / ea)


def _change(a: np.ndarray, b: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Mean |Δ luma| between two frames in ``box`` (a margin added), on 24×24 thumbnails: ~0.2 ms."""
    import cv2

    h, w = a.shape[:2]
    side = max(box[2] - box[0], box[3] - box[1]) * 0.6
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0, y0 = int(max(0, cx - side)), int(max(0, cy - side))
    x1, y1 = int(min(w, cx + side)), int(min(h, cy + side))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return float("inf")
    ta, tb = (cv2.resize(cv2.cvtColor(np.ascontiguousarray(x[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY), (24, 24),
                         interpolation=cv2.INTER_AREA) for x in (a, b))
    return float(np.abs(ta.astype(np.int16) - tb).mean())


@dataclass
class TrackedFrame:
    landmarks: np.ndarray  # float32 (68, 2): smoothed; on a faceless frame, held from the nearest face
    confidence: float
    has_face: bool
    frame_size: tuple[int, int]  # (width, height)


def stream_track(
    frames: Iterable[np.ndarray],
    fps: float,
    detector=None,
    keyframe_every: int = 10,
    smooth: bool = True,
    min_cutoff: float = 1.0,
    beta: float = 0.05,
    face_index: int | None = None,
    gate: float = GATE,
) -> Iterator[TrackedFrame]:
    """Track one face through a stream of RGB frames, one result per frame, as soon as it is known.

    Smoothing (One-Euro) is causal; a faceless frame holds the last landmarks (and resets the filter).
    Faceless frames before the first face are held at that first face, so they wait for it: the only
    look-ahead. No face in any frame is a UserError.
    """
    filt = OneEuroFilter(fps, min_cutoff, beta)
    held: np.ndarray | None = None
    waiting: list[tuple[float, tuple[int, int]]] = []  # leading faceless frames
    n = 0
    for raw, c, size in _follow(frames, detector, keyframe_every, face_index, gate):
        n += 1
        if raw is None:
            filt.reset()
            if held is None:
                waiting.append((c, size))
            else:
                yield TrackedFrame(held, c, False, size)
            continue
        held = (filt(raw) if smooth else raw).astype(np.float32)
        for c0, size0 in waiting:
            yield TrackedFrame(raw.astype(np.float32), c0, False, size0)
        waiting.clear()
        yield TrackedFrame(held, c, True, size)
    if n == 0:
        raise UserError("video has no frames")
    if held is None:
        raise UserError("no face found in any frame of the video")


def track_frames(frames: Iterable[np.ndarray], fps: float, **options) -> LandmarkTrack:
    """Track one face through a stream of RGB frames: ``stream_track`` (same ``options``) collected into a
    LandmarkTrack."""
    out = list(stream_track(frames, fps, **options))
    return LandmarkTrack(np.stack([t.landmarks for t in out]), np.array([t.confidence for t in out], np.float32),
                         np.array([t.has_face for t in out]), float(fps), out[-1].frame_size)


def track_video(path: Path | str, detector=None, keyframe_every: int = 10, smooth: bool = True,
                face_index: int | None = None) -> LandmarkTrack:
    """Track the face through a video file (streamed: memory independent of length)."""
    from synth.media.video import iter_frames, probe

    info = probe(path)
    return track_frames(iter_frames(path), info.fps, detector=detector, keyframe_every=keyframe_every, smooth=smooth,
                        face_index=face_index)
