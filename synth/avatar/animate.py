"""Animation: a driver (video, landmark track, built-in motion or audio) moves an enrolled avatar.

The driver becomes a landmark sequence in the avatar's crop coordinates — by default through relative
motion transfer (the avatar's own landmarks moved by the driver's change from its neutral frame), or
with ``absolute`` the driver's own cropped landmarks as the paper did — and the generator renders one
frame per landmark image. An audio driver goes through the audio-to-landmark model
(``synth.audio``): its mouth-space motion moves the avatar's jaw and mouth, at 25 fps. Everything
streams: memory does not grow with the driver's length.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth.avatar.motion import BUILTIN_MOTIONS
from synth.errors import UserError


@dataclass
class DriverPlan:
    landmarks: np.ndarray | TrackedDriver  # float32 (T, 68, 2) avatar crop pixels at model size, or a stream
    fps: float
    audio_from: Path | None
    faceless: int  # driver frames without a face (a streamed driver: known once it has been rendered)
    driver_sha256: str | None
    description: str

    @property
    def frames(self) -> int:
        """The number of frames (a streamed video: as its container says)."""
        return self.landmarks.frames if isinstance(self.landmarks, TrackedDriver) else len(self.landmarks)

    def faceless_count(self) -> int:
        return self.landmarks.faceless if isinstance(self.landmarks, TrackedDriver) else self.faceless


class TrackedDriver:
    """A driver video tracked while the avatar is rendered: per frame, the avatar's landmarks (``avatar_lm``)
    moved by the driver's motion since its first face (relative transfer).

    Decoding and tracking run in a child process (``start()``, called as early as possible: dlib holds the
    GIL while it tracks, so in a thread it would not overlap rendering); iterating consumes it once.
    """

    def __init__(self, path: Path) -> None:
        from synth.media.video import probe

        info = probe(path)
        self.path, self.fps, self.frames = path, info.fps, info.frames
        self.avatar_lm: np.ndarray | None = None
        self.faceless = 0
        self._stream = None

    def start(self) -> TrackedDriver:
        from synth.media.pipeline import ProcessStream

        if self._stream is None:
            self._stream = ProcessStream(_track_file, self.path, self.fps)
        return self

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        from synth.avatar.motion import relative_transfer

        if self.avatar_lm is None:
            raise ValueError("TrackedDriver.avatar_lm is not set")
        ref = None
        for t in self.start()._stream:
            if ref is None:  # the first frame carries the first face (leading faceless frames are held at it)
                ref = t.landmarks
            self.faceless += not t.has_face
            yield relative_transfer(self.avatar_lm, t.landmarks[None], ref)[0]


def _track_file(path: Path, fps: float):
    """The tracked frames of a video file (what TrackedDriver's child process runs)."""
    from synth.faces.tracking import stream_track
    from synth.media.video import iter_frames

    return stream_track(iter_frames(path), fps)


def streamable(driver: str | None, relative: bool, neutral: int | None) -> bool:
    """True when DRIVER is a video that can be tracked while rendering (relative motion from its first face)."""
    from synth.media.video import VIDEO_SUFFIXES

    return (driver is not None and relative and neutral is None and Path(driver).suffix.lower() in VIDEO_SUFFIXES
            and Path(driver).is_file())


def plan_driver(driver: str, avatar_lm: np.ndarray, size: int, relative: bool = True, fps: float = 25.0,
                seconds: float = 4.0, neutral: int | None = None, audio_only: bool = False,
                audio_model: Path | None = None, tracked: TrackedDriver | None = None) -> DriverPlan:
    """Turn DRIVER (a video, a `.npz` track, a built-in motion name, or an audio file) into avatar
    landmarks. ``audio_only``: drive with DRIVER's sound only (``--audio-from VIDEO``). A streamable video
    (``streamable``) becomes a TrackedDriver (``tracked``, if it was started already)."""
    from synth.audio.features import is_audio_path
    from synth.avatar.bundled import file_sha256
    from synth.avatar.motion import absolute_transfer, builtin_motion, relative_transfer
    from synth.faces.align import apply_affine, clip_box
    from synth.faces.tracking import LandmarkTrack, track_video
    from synth.media.video import VIDEO_SUFFIXES, probe

    if driver in BUILTIN_MOTIONS:
        lm = builtin_motion(driver, avatar_lm, fps=fps, seconds=seconds)
        return DriverPlan(lm, fps, None, 0, None, f"built-in motion '{driver}' ({seconds:g} s at {fps:g} fps)")
    path = Path(driver)
    if not path.exists():
        raise UserError(f"{driver}: no such file, and not a built-in motion ({', '.join(BUILTIN_MOTIONS)})")
    if audio_only or is_audio_path(path):
        return plan_audio(path, avatar_lm, audio_model)
    if path.suffix.lower() == ".npz":
        track = LandmarkTrack.load(path)
        audio = None
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        info = probe(path)
        audio = path if info.has_audio else None
        if streamable(driver, relative, neutral):  # tracked while it is rendered
            tracked = tracked if tracked is not None and tracked.path == path else TrackedDriver(path)
            tracked.avatar_lm = avatar_lm
            desc = f"{path.name}: {info.frames} frames at {info.fps:g} fps, relative motion"
            return DriverPlan(tracked, info.fps, audio, 0, file_sha256(path), desc)
        track = track_video(path)
    else:
        raise UserError(f"{driver}: a driver is a video, a .npz track from `th faces`, or a built-in motion")
    if relative:
        ref = neutral if neutral is not None else int(np.argmax(track.has_face))
        if not 0 <= ref < len(track):
            raise UserError(f"--neutral {ref} is outside the driver's {len(track)} frames")
        lm = relative_transfer(avatar_lm, track.landmarks, ref)
    else:
        box = clip_box(track.landmarks[track.has_face])
        M = box.affine(size)
        lm = absolute_transfer(np.stack([apply_affine(x, M) for x in track.landmarks]))
    desc = f"{path.name}: {len(track)} frames at {track.fps:g} fps, {'relative' if relative else 'absolute'} motion"
    return DriverPlan(lm, track.fps, audio, track.faceless, file_sha256(path), desc)


def plan_audio(path: Path, avatar_lm: np.ndarray, audio_model: Path | None = None, seed: int = 0) -> DriverPlan:
    """An audio file (or a video's sound) → the avatar speaking it at 25 fps, with blinks and head motion."""
    from synth.audio.bundled import resolve_audio_model
    from synth.audio.infer import FPS, audio_motion
    from synth.audio.train import load_model
    from synth.avatar.bundled import file_sha256
    from synth.avatar.motion import talking_motion

    motion = audio_motion(load_model(resolve_audio_model(audio_model)), path)
    if not len(motion):
        raise UserError(f"{path}: the audio stream holds no samples")
    lm = talking_motion(avatar_lm, motion, fps=FPS, seed=seed)
    desc = f"{path.name}: {len(lm) / FPS:.1f} s of audio → {len(lm)} frames at {FPS} fps"
    return DriverPlan(lm, float(FPS), path, 0, file_sha256(path), desc)


def render(model, generator, psi, landmarks: Iterable[np.ndarray], out_size: int, batch: int = 8,
           paste_into: tuple[np.ndarray, np.ndarray] | None = None,
           sources: tuple[np.ndarray, np.ndarray] | None = None) -> Iterator[np.ndarray]:
    """Yield uint8 RGB frames (out_size²) for each landmark set (68, 2) of a sequence or stream, ``batch`` at
    a time, with the torch ``model`` and its (folded, possibly fine-tuned) ``generator`` and AdaIN ``psi``.

    ``paste_into`` = (photo, affine photo→crop): each generated crop is blended back into the full
    photo instead (output = the photo's size), so the result is not only the face crop. ``sources`` =
    (shots (K,S,S,3), landmarks (K,68,2)) at model size: what the warp-guided generator warps
    (``PersonParams.sources``).
    """
    return render_frames(torch_generate(model, generator, psi), model.image_size, model.uses_warp, landmarks,
                         out_size, batch, paste_into, sources)


def torch_generate(model, generator, psi):
    """``generate`` of ``render_frames`` for the torch ``model`` with ``generator`` (any engine with the torch
    generator's signature) and AdaIN ``psi``: landmark images (B,S,S,3), warped shots (B,K,S,S,3) or None, uint8
    → frames (B,S,S,3), uint8."""
    import torch

    from synth.avatar.model import images_to_tensor, tensor_to_images

    s, dev = model.image_size, model.device

    def generate(y: np.ndarray, warped: np.ndarray | None) -> np.ndarray:
        w = None if warped is None else images_to_tensor(warped.reshape(-1, s, s, 3), dev).view(len(warped), -1, 3, s, s)
        with torch.no_grad():
            return tensor_to_images(model.generate(images_to_tensor(y, dev), psi=psi, generator=generator, warped=w))

    return generate


def render_frames(generate, size: int, uses_warp: bool, landmarks: Iterable[np.ndarray], out_size: int,
                  batch: int = 8, paste_into: tuple[np.ndarray, np.ndarray] | None = None,
                  sources: tuple[np.ndarray, np.ndarray] | None = None) -> Iterator[np.ndarray]:
    """``render`` for any engine: ``generate(landmark images (B,S,S,3), warped shots (B,K,S,S,3) or None)``
    → uint8 frames (B,S,S,3) at the model's ``size`` (torch in ``render``, a ``CompiledAvatar`` without torch)."""
    import cv2

    from synth.faces.landmark_image import draw_landmarks

    s = size
    paster = None
    if paste_into is not None:
        from synth.faces.align import Paster

        paster = Paster(paste_into[0].shape, s, paste_into[1])
    warper = None
    if uses_warp:
        if sources is None:
            raise UserError("this model warps the avatar's shots, but the avatar has none: re-enroll it")
        from synth.faces.warp import ShotWarper

        warper = ShotWarper(*sources)
    it = iter(landmarks)
    while chunk := list(itertools.islice(it, batch)):
        y = np.stack([draw_landmarks(lm, s) for lm in chunk])
        warped = None if warper is None else np.stack([warper(lm) for lm in chunk])  # (b,K,S,S,3)
        for f in generate(y, warped):
            if paster is not None and paste_into is not None:
                yield paster(paste_into[0], f)
            else:
                yield f if out_size == s else cv2.resize(f, (out_size, out_size), interpolation=cv2.INTER_CUBIC)
