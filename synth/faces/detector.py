"""Face detection and the 68-point landmark fit (iBUG 300-W layout), offline.

Backends: ``hog`` (dlib's HOG detector: the default, 6-25 ms/frame), ``mmod`` (dlib's CNN detector:
more robust, 0.5-2 s/frame), ``fan`` (face-alignment's FAN, only if its weights are already cached).
The 68-point fit is dlib's shape predictor from the ``face-recognition-models`` package.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth.errors import UserError

MIN_FACE_PX = 40  # a face box narrower than this gives unusable landmarks
# dlib's detectors release the GIL while they run and are not safe to run on one object from two threads (a
# segfault, seen): every call into dlib holds this lock, so threads overlap only in the rest (OpenCV, numpy)
_DLIB = threading.Lock()


@dataclass(frozen=True)
class Face:
    """One detected face: box (x0, y0, x1, y1) in pixels, 68 landmarks, detector confidence."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None  # float32 (68, 2); None only from detect_near(landmarks=False)
    confidence: float

    @property
    def size(self) -> float:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


def model_file(name: str) -> Path:
    """Path of a model shipped by face-recognition-models (found without importing pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("face-recognition-models is not installed (pip install face-recognition-models)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.exists():
        raise UserError(f"model file missing: {path}")
    return path


@functools.lru_cache(maxsize=1)
def _shape_predictor():
    import dlib

    return dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))


@functools.lru_cache(maxsize=1)
def _hog():
    import dlib

    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def _mmod():
    import dlib

    return dlib.cnn_face_detection_model_v1(str(model_file("mmod_human_face_detector.dat")))


def _locked(fn, *args):
    """``fn(*args)`` holding the dlib lock."""
    with _DLIB:
        return fn(*args)


def fit_landmarks(rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """dlib's 68-point shape predictor inside ``box``; float32 (68, 2)."""
    import dlib

    rect = dlib.rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])), int(round(box[3])))
    shape = _locked(_shape_predictor(), rgb, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


class FaceDetector:
    """Find faces and their 68 landmarks in RGB images.

    ``upsample``: dlib pyramid upsampling; HOG misses faces under ~80 px without it, so small images
    are upsampled automatically (``upsample=None``). Large images are detected on a downscaled copy
    (``max_side``) and the boxes scaled back, which keeps HOG at a few ms per frame.
    """

    def __init__(self, backend: str = "hog", upsample: int | None = None, max_side: int = 640) -> None:
        if backend not in ("hog", "mmod", "fan"):
            raise UserError(f"unknown face detector {backend!r} (use hog, mmod or fan)")
        self.backend = backend
        self.upsample = upsample
        self.max_side = max_side
        self._fan = None
        if backend == "fan":
            self._fan = _load_fan()

    def detect(self, rgb: np.ndarray, thorough: bool = False) -> list[Face]:
        """All faces in the image, largest first.

        ``thorough`` (for still photos, where a few hundred ms do not matter): detect at up to 1280 px
        with one pyramid upsampling, so faces down to ~40 px are found.
        """
        import cv2

        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError("expected an RGB uint8 image")
        if self._fan is not None:
            return self._detect_fan(rgb)
        h, w = rgb.shape[:2]
        scale = min(1.0, (1280 if thorough else self.max_side) / max(h, w))
        small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        if self.upsample is not None:
            ups = [self.upsample]
        elif thorough:
            ups = [1]
        else:  # small frames: try at native size first (4× cheaper), upsample only if nothing is found
            ups = [0, 1] if max(small.shape[:2]) < 400 else [0]
        boxes: list[tuple[tuple[float, float, float, float], float]] = []
        for up in ups:
            if self.backend == "hog":
                # Upsampling doubles HOG's false positives on textured clothing: ask for a clearer margin.
                rects, scores, _ = _locked(_hog().run, small, up, 0.0 if up == 0 else 0.4)
                boxes = [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]
            else:
                boxes = [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), float(d.confidence))
                         for d in _locked(_mmod(), small, up)]
            if boxes:
                break
        faces = []
        for (x0, y0, x1, y1), score in boxes:
            box = (x0 / scale, y0 / scale, x1 / scale, y1 / scale)
            lm = fit_landmarks(rgb, box)
            faces.append(Face(box=box, landmarks=lm, confidence=_squash(score, self.backend)))
        faces.sort(key=lambda f: -f.size)
        return faces

    def detect_near(self, rgb: np.ndarray, box: tuple[float, float, float, float],
                    landmarks: bool = True) -> Face | None:
        """Re-detect the face in a region around ``box`` (for tracking): the region is cut with a margin
        and scaled so the face is ~100 px, where HOG is reliable; a few ms per call. ``landmarks=False``
        skips the 68-point fit (``Face.landmarks`` is then None): for a caller that fits in its own box."""
        import cv2

        if self._fan is not None:
            faces = self._detect_fan(rgb)
            return faces[0] if faces else None
        h, w = rgb.shape[:2]
        side = max(box[2] - box[0], box[3] - box[1])
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = side * 0.9
        x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
        x1, y1 = int(min(w, cx + half)), int(min(h, cy + half))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        roi = rgb[y0:y1, x0:x1]
        k = 110.0 / max(side, 1.0)
        small = cv2.resize(roi, (max(1, round(roi.shape[1] * k)), max(1, round(roi.shape[0] * k))),
                           interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        if self.backend == "hog":
            rects, scores, _ = _locked(_hog().run, small, 0, -0.3)
            found = [((r.left(), r.top(), r.right(), r.bottom()), float(sc)) for r, sc in zip(rects, scores)]
        else:
            found = [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), float(d.confidence))
                     for d in _locked(_mmod(), small, 0)]
        if not found:
            return None
        (bx0, by0, bx1, by1), score = max(found, key=lambda f: f[1])
        full = (x0 + bx0 / k, y0 + by0 / k, x0 + bx1 / k, y0 + by1 / k)
        lm = fit_landmarks(rgb, full) if landmarks else None
        return Face(box=full, landmarks=lm, confidence=_squash(score, self.backend))

    def _detect_fan(self, rgb: np.ndarray) -> list[Face]:
        preds = self._fan.get_landmarks_from_image(rgb)  # type: ignore[union-attr]
        faces = []
        for lm in preds or []:
            lm = np.asarray(lm[:, :2], dtype=np.float32)
            box = (float(lm[:, 0].min()), float(lm[:, 1].min()), float(lm[:, 0].max()), float(lm[:, 1].max()))
            faces.append(Face(box=box, landmarks=lm, confidence=1.0))
        faces.sort(key=lambda f: -f.size)
        return faces


def _squash(score: float, backend: str) -> float:
    """Map a detector score to (0, 1): a logistic on HOG's SVM margin, mmod's confidence likewise."""
    offset = 0.0 if backend == "hog" else 0.5
    return float(1.0 / (1.0 + np.exp(-4.0 * (score - offset))))


def _load_fan():
    """face-alignment (FAN) — an optional extra that works only when its weights are already cached."""
    try:
        import face_alignment
    except ImportError as e:
        raise UserError("the fan backend needs the optional extra: pip install 'th[fan]'") from e
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device="cpu")
    except Exception as e:
        raise UserError(f"FAN weights are not available locally ({e.__class__.__name__}); use --detector hog") from e


def pick_face(faces: list[Face], index: int | None = None, what: str = "image") -> tuple[Face, str | None]:
    """Choose one face: the largest by default, or ``index`` (0 = largest). Returns (face, note)."""
    if not faces:
        raise UserError(f"no face found in {what}")
    if index is not None:
        if not 0 <= index < len(faces):
            raise UserError(f"--face-index {index} out of range: {len(faces)} face(s) found in {what}")
        face = faces[index]
    else:
        face = faces[0]
    if face.size < MIN_FACE_PX:
        raise UserError(f"the face in {what} is too small ({face.size:.0f} px, need ≥ {MIN_FACE_PX} px)")
    note = None
    if len(faces) > 1:
        chosen = index if index is not None else 0
        note = f"{len(faces)} faces found in {what}; using face {chosen} (largest first; --face-index to choose)"
    return face, note
