"""The one write path for generated pixels: watermark every frame → encode → C2PA-sign → publish.

Nothing reaches ``dest`` unless every step succeeded (``synth.media.atomic.atomic_path``), and there is no
switch to skip the watermark or the signature. Each file gets a fresh random watermark payload,
recorded in its manifest, so a copy stripped of its manifest still points back to it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from provenance import keys, manifest, watermark
from provenance.manifest import GenerationFacts
from synth.errors import UserError
from synth.media.atomic import atomic_path

VIDEO_SUFFIXES = {".mp4", ".m4v"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
JPEG_QUALITY = 95


@dataclass(frozen=True)
class WriteResult:
    """What was published: where, which payload the watermark carries, how many frames."""

    path: Path
    payload: str
    frames: int
    mime: str


@contextlib.contextmanager
def _scratch(dest: Path) -> Iterator[Path]:
    """An unsigned intermediate beside ``dest`` (same suffix), always removed afterwards."""
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".unsigned{dest.suffix}", dir=dest.parent)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _prepare(dest: Path | str, suffixes: set[str], kind: str, force: bool,
             identity: keys.Identity | None) -> tuple[Path, keys.Identity]:
    dest = Path(dest)
    if dest.suffix.lower() not in suffixes:
        raise UserError(f"{dest}: a generated {kind} is written as {' or '.join(sorted(suffixes))}")
    if dest.exists() and not force:
        raise UserError(f"{dest} exists; pass --force to overwrite it")
    # Load the key before any work: a missing or unsafe key fails fast and leaves nothing behind.
    return dest, identity if identity is not None else keys.ensure_identity()


def write_video(
    frames: Iterable[np.ndarray],
    dest: Path | str,
    fps: float,
    facts: GenerationFacts,
    audio_from: Path | str | None = None,
    force: bool = False,
    identity: keys.Identity | None = None,
) -> WriteResult:
    """Watermark, encode (H.264 mp4) and sign a stream of RGB frames; memory does not grow with length."""
    from synth.media.video import VideoWriter

    dest, identity = _prepare(dest, VIDEO_SUFFIXES, "video", force, identity)
    payload = watermark.new_payload()
    bits = watermark.payload_to_bits(payload)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise UserError("no frames to write")
    h, w = first.shape[:2]
    n = 0
    with atomic_path(dest, force=force) as tmp, _scratch(dest) as raw:
        with VideoWriter(raw, fps, (w, h), audio_from=audio_from) as writer:
            for rgb in _chain(first, it):
                writer.write(watermark.embed(rgb, bits, frame_index=n))  # frame_index: the breathing sync
                n += 1
        definition = manifest.manifest_definition(facts, payload, dest.name)
        manifest.sign_file(raw, tmp, definition, identity, manifest.mime_for(dest))
    return WriteResult(dest, payload, n, manifest.mime_for(dest))


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def write_image(
    rgb: np.ndarray,
    dest: Path | str,
    facts: GenerationFacts,
    force: bool = False,
    identity: keys.Identity | None = None,
) -> WriteResult:
    """Watermark, encode (PNG, or JPEG at quality 95) and sign one RGB image."""
    import cv2

    dest, identity = _prepare(dest, IMAGE_SUFFIXES, "image", force, identity)
    payload = watermark.new_payload()
    marked = watermark.embed(rgb, watermark.payload_to_bits(payload))
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if dest.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(dest.suffix.lower(), cv2.cvtColor(marked, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise UserError(f"cannot encode {dest.suffix} image")
    with atomic_path(dest, force=force) as tmp, _scratch(dest) as raw:
        raw.write_bytes(buf.tobytes())
        definition = manifest.manifest_definition(facts, payload, dest.name)
        manifest.sign_file(raw, tmp, definition, identity, manifest.mime_for(dest))
    return WriteResult(dest, payload, 1, manifest.mime_for(dest))
