"""`th faces INPUT`: faces, 68 landmarks and tracking on an image or video, with a preview overlay."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def faces(
    input: Annotated[Path, typer.Argument(help="An image (png, jpg, ...) or a video (mp4, mov, ...).")],
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Preview path (.png for an image, .mp4 for a video). Default: INPUT's name + .faces.png/.mp4 in the current folder.")] = None,
    track: Annotated[Path | None, typer.Option(help="Landmark track path (.npz). Default: the preview path with .npz.")] = None,
    face_index: Annotated[int | None, typer.Option(help="Which face when there are several (0 = largest).")] = None,
    detector: Annotated[str, typer.Option(help="hog (default), mmod (slow, robust) or fan (needs cached weights).")] = "hog",
    keyframe_every: Annotated[int, typer.Option(help="Video: run the detector every N frames, follow in between.")] = 10,
    smooth: Annotated[bool, typer.Option(help="Video: One-Euro smoothing of the landmark track.")] = True,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")] = False,
) -> None:
    """Detect the face and its 68 landmarks; write a preview overlay and a landmark track (.npz).

    The track is the driver format `th animate` accepts.
    """
    import sys
    import time

    import numpy as np

    from synth.errors import UserError
    from synth.faces.detector import FaceDetector, pick_face
    from synth.faces.tracking import LandmarkTrack, track_video
    from synth.media.atomic import atomic_path, check_writable
    from synth.media.video import (
        VIDEO_SUFFIXES,
        VideoWriter,
        is_image_path,
        iter_frames,
        probe,
        read_image,
        write_image,
    )

    if not input.exists():
        raise UserError(f"{input}: no such file")
    is_image = is_image_path(input)
    if not is_image and input.suffix.lower() not in VIDEO_SUFFIXES:
        raise UserError(f"{input}: not an image or video file (by its extension {input.suffix or '(none)'})")
    preview = out or Path(f"{input.stem}.faces{'.png' if is_image else '.mp4'}")
    want = {".png", ".jpg", ".jpeg"} if is_image else {".mp4"}
    if preview.suffix.lower() not in want:
        raise UserError(f"preview for {'an image' if is_image else 'a video'} must end in {' or '.join(sorted(want))}")
    track_path = track or preview.with_suffix(".npz")
    check_writable(preview, force)
    check_writable(track_path, force)
    det = FaceDetector(detector)
    t0 = time.perf_counter()
    if is_image:
        rgb = read_image(input)
        face, note = pick_face(det.detect(rgb, thorough=True), face_index, what=str(input))
        if note:
            print(f"th: {note}", file=sys.stderr)
        tr = LandmarkTrack(face.landmarks[None], np.array([face.confidence], np.float32), np.array([True]),
                           fps=1.0, frame_size=(rgb.shape[1], rgb.shape[0]))
        with atomic_path(preview, force) as tmp:
            write_image(tmp, overlay(rgb, face.landmarks))
        n = 1
    else:
        info = probe(input)
        tr = track_video(input, det, keyframe_every=keyframe_every, smooth=smooth, face_index=face_index)
        w, h = tr.frame_size
        with atomic_path(preview, force) as tmp, VideoWriter(tmp, info.fps, (w - w % 2, h - h % 2), audio_from=input) as vw:
            for rgb, lm in zip(iter_frames(input), tr.landmarks):
                vw.write(overlay(rgb, lm)[: h - h % 2, : w - w % 2])
        n = len(tr)
    with atomic_path(track_path, force) as tmp:
        tr.save(tmp)
    dt = time.perf_counter() - t0
    faceless = f", {tr.faceless} without a face (landmarks held)" if tr.faceless else ""
    print(f"{n} frame(s){faceless}, {1000 * dt / n:.1f} ms/frame → {preview}, {track_path}")


def overlay(rgb, landmarks):
    """The landmark drawing over the image (lines replace the pixels they cover)."""
    import numpy as np

    from synth.faces.landmark_image import draw_landmarks

    lines = draw_landmarks(landmarks, (rgb.shape[0], rgb.shape[1]))
    mask = lines.max(axis=2, keepdims=True).astype(np.float32) / 255.0
    return (rgb * (1 - mask) + lines * mask).astype(np.uint8)
