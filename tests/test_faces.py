"""Landmark sanity on real faces: anatomy, scale, stability, and the canonical crop's inverse."""

from __future__ import annotations

import numpy as np
import pytest

from synth.faces.align import align_crop, apply_affine, invert_affine, paste_back
from synth.faces.detector import FaceDetector, pick_face
from synth.faces.tracking import track_frames
from synth.media.video import iter_frames, read_image
from tests.conftest import shared_path

PORTRAITS = ["face_recognition__obama.jpg", "face_recognition__biden.jpg", "LIA__macron.png", "avatarify__einstein.jpg"]


def anatomy_ok(lm: np.ndarray) -> None:
    eyes_y = lm[36:48, 1].mean()
    mouth_y = lm[48:68, 1].mean()
    nose_tip_y = lm[33, 1]
    chin_y = lm[8, 1]
    assert eyes_y < nose_tip_y < mouth_y < chin_y
    iod = np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0))
    face_w = np.ptp(lm[:17, 0])
    assert 0.25 < iod / face_w < 0.6, iod / face_w
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean()  # the image-left eye is the subject's right eye


@pytest.mark.parametrize("name", PORTRAITS)
def test_landmarks_on_real_portraits(name):
    rgb = read_image(shared_path(f"portraits/{name}"))
    faces = FaceDetector().detect(rgb)
    face, _ = pick_face(faces, what=name)
    assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float32
    assert 0.5 < face.confidence <= 1.0
    anatomy_ok(face.landmarks)


def test_astronaut_is_found(astronaut):
    faces = FaceDetector().detect(astronaut)
    assert len(faces) == 1
    anatomy_ok(faces[0].landmarks)
    x0, y0, x1, y1 = faces[0].box
    assert 150 < (x0 + x1) / 2 < 300 and 60 < (y0 + y1) / 2 < 200


def test_still_image_gives_still_landmarks(astronaut):
    track = track_frames([astronaut] * 30, fps=25)
    assert track.has_face.all()
    assert track.landmarks.std(axis=0).max() < 0.05


def test_tracking_real_clip_is_smooth_and_complete():
    clip = shared_path("clips/EDTalk__pose_source1.mp4")
    frames = list(iter_frames(clip, max_frames=75))
    raw = track_frames(frames, fps=25, smooth=False)
    smooth = track_frames(frames, fps=25, smooth=True)
    assert smooth.has_face.all() and len(smooth) == 75
    jitter = lambda t: np.abs(np.diff(t.landmarks, n=2, axis=0)).mean()  # noqa: E731
    assert jitter(smooth) < jitter(raw)
    for lm in smooth.landmarks[::15]:
        anatomy_ok(lm)


def test_crop_round_trip(astronaut):
    face = FaceDetector().detect(astronaut)[0]
    crop, M = align_crop(astronaut, face.landmarks, size=256)
    assert crop.shape == (256, 256, 3)
    lm_crop = apply_affine(face.landmarks, M)
    assert lm_crop.min() > 0 and lm_crop.max() < 256
    back = apply_affine(lm_crop, invert_affine(M))
    assert np.abs(back - face.landmarks).max() < 1e-3
    pasted = paste_back(astronaut, crop, M)
    x0, y0 = face.landmarks.min(0).astype(int)
    x1, y1 = face.landmarks.max(0).astype(int)
    diff = np.abs(pasted[y0:y1, x0:x1].astype(int) - astronaut[y0:y1, x0:x1].astype(int)).mean()
    assert diff < 4  # the crop's resampling is the only change inside the face


def test_gated_tracking_skips_most_redetections_and_keeps_the_landmarks():
    """Between keyframes the tracker re-detects only where the face region changed (or the fit moved): on a
    talking-head clip that skips most detector calls, and the landmarks stay those of checking every frame;
    a cut to black is still noticed on its first frame."""
    from synth.faces.align import face_scale
    from synth.faces.detector import FaceDetector

    class Counting(FaceDetector):
        calls = 0

        def detect_near(self, *a, **k):
            Counting.calls += 1
            return super().detect_near(*a, **k)

    frames = list(iter_frames(shared_path("clips/EDTalk__pose_source1.mp4"), max_frames=60))
    every = track_frames(frames, fps=25, detector=Counting(), gate=0)
    checked_every, Counting.calls = Counting.calls, 0
    gated = track_frames(frames, fps=25, detector=Counting())
    assert checked_every == 54 and Counting.calls < 54 / 2  # 60 frames - 6 keyframes
    assert gated.has_face.all()
    err = np.abs(gated.landmarks - every.landmarks).mean() / face_scale(every.landmarks[0])
    assert err < 0.01
    frames[33] = np.zeros_like(frames[33])  # a cut to black between keyframes
    cut = track_frames(frames, fps=25)
    assert not cut.has_face[33] and cut.has_face[[32, 34]].all()
