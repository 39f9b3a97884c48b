"""Evaluation metrics as plain functions (the `th eval` protocol, docs/EVAL.md).

Images are RGB uint8 ``H×W×3``, landmarks float32 ``(68, 2)`` pixels (iBUG 300-W order). CSIM uses
dlib's 128-D face descriptor (``dlib_face_recognition_resnet_model_v1.dat`` from face-recognition-models, run
by its torch port ``synth.nets.face_resnet``), computed on a face chip aligned by landmarks we already know, so
no detector can miss the face.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

PSNR_CAP = 100.0  # dB for identical images (inf is not valid JSON and breaks means)
DLIB_SAME_PERSON = 0.6  # dlib's Euclidean threshold for "same person" (99.38 % on LFW)
DESCRIPTOR_MIN_SIDE = 256  # crops smaller than this are upscaled before the descriptor's face chip


def psnr(a: np.ndarray, b: np.ndarray, cap: float = PSNR_CAP) -> float:
    """Peak signal-to-noise ratio in dB (peak 255), capped at ``cap`` for identical images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return cap
    return float(min(cap, 10.0 * np.log10(255.0**2 / mse)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004; Gaussian window σ=1.5 as in the paper), mean over RGB."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


def descriptor_input(rgb: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image and landmarks a descriptor's face chip is cut from: crops smaller than
    ``DESCRIPTOR_MIN_SIDE`` upscaled (bicubic), landmarks rounded to whole pixels as dlib's points are."""
    import cv2

    img, lm = rgb, np.asarray(landmarks, np.float64)
    side = max(rgb.shape[:2])
    if side < DESCRIPTOR_MIN_SIDE:
        k = DESCRIPTOR_MIN_SIDE / side
        img = cv2.resize(rgb, (round(rgb.shape[1] * k), round(rgb.shape[0] * k)), interpolation=cv2.INTER_CUBIC)
        lm = lm * k
    return img, np.round(lm)


def face_descriptors(images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray]) -> np.ndarray:
    """dlib's 128-D identity descriptors (float64 (N, 128), unit-ish norm) of the faces at ``landmarks``,
    in batches through the torch port of dlib's network (synth.nets.face_resnet): the numbers of dlib's
    ``compute_face_descriptor`` to ~1e-6, several times faster."""
    from synth.nets.face_resnet import face_descriptors as net_descriptors

    pairs = [descriptor_input(img, lm) for img, lm in zip(images, landmarks, strict=True)]
    return net_descriptors([p[0] for p in pairs], [p[1] for p in pairs])


def face_descriptor(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """dlib's 128-D identity descriptor of one face (see :func:`face_descriptors`)."""
    return face_descriptors([rgb], [landmarks])[0]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (CSIM when they are face descriptors)."""
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def same_person(a: np.ndarray, b: np.ndarray, threshold: float = DLIB_SAME_PERSON) -> bool:
    """dlib's own verification rule: descriptors closer than 0.6 (Euclidean) are the same person."""
    return float(np.linalg.norm(a - b)) < threshold


def inter_ocular(landmarks: np.ndarray) -> float:
    """Distance between the two eye centres (means of points 36-41 and 42-47)."""
    lm = np.asarray(landmarks, np.float64)
    return float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))


def landmark_error(found: np.ndarray, target: np.ndarray) -> float:
    """Mean point-to-point distance between two landmark sets, divided by the target's inter-ocular distance."""
    d = np.linalg.norm(np.asarray(found, np.float64) - np.asarray(target, np.float64), axis=1).mean()
    return float(d / max(inter_ocular(target), 1e-6))


def frame_change(frames: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    """Mean absolute pixel change (0-255 scale) between the frames of each (earlier, later) index pair."""
    if not pairs:
        return 0.0
    return float(np.mean([np.abs(frames[j].astype(np.float32) - frames[i].astype(np.float32)).mean() for i, j in pairs]))


def flicker_ratio(generated: np.ndarray, real: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    """Temporal flicker: frame-to-frame change of the generated clip over that of the real clip
    (1 = moves as much as the real video, 0 = frozen, > 1 = jitter the real video does not have)."""
    return frame_change(generated, pairs) / max(frame_change(real, pairs), 1e-6)


@functools.lru_cache(maxsize=1)
def _detector():
    from synth.faces.detector import FaceDetector

    return FaceDetector("hog")


def find_landmarks(rgb: np.ndarray, expected: np.ndarray) -> np.ndarray | None:
    """68 landmarks dlib finds on ``rgb`` (the face nearest ``expected``'s centre), or None if no face.

    Small crops are upscaled to ``DESCRIPTOR_MIN_SIDE`` first: HOG misses faces under ~80 px.
    """
    import cv2

    k = max(1.0, DESCRIPTOR_MIN_SIDE / max(rgb.shape[:2]))
    img = rgb if k == 1.0 else cv2.resize(rgb, (round(rgb.shape[1] * k), round(rgb.shape[0] * k)),
                                          interpolation=cv2.INTER_CUBIC)
    faces = _detector().detect(img)
    if not faces:
        return None
    centre = np.asarray(expected, np.float64).mean(0) * k
    face = min(faces, key=lambda f: float(np.linalg.norm(f.landmarks.mean(0) - centre)))
    return (face.landmarks / k).astype(np.float32)
