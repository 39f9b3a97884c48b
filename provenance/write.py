"""The one write path for generated pixels: watermark every frame → encode → C2PA-sign → publish.

Nothing reaches ``dest`` unless every step succeeded, and there is no switch to skip the watermark or
the signature. Each file gets a fresh random watermark payload, recorded in its manifest, so a copy
stripped of its manifest still points back to it.

Unsigned media never has a name: the encode and the signed result are anonymous files of the writing
process (``synth.media.workdir.anonymous_file``, O_TMPFILE on Linux) that the kernel frees if the process
dies, however it dies; the signed result is linked into place only once complete. An image is encoded
in memory and signed straight into its anonymous file.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from provenance import keys, manifest, watermark
from provenance.manifest import GenerationFacts
from synth.errors import UserError
from synth.media.atomic import check_writable
from synth.media.workdir import anonymous_file, write_error

VIDEO_SUFFIXES = {".mp4", ".m4v"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
JPEG_QUALITY = 95
# How small a frame can carry the watermark (measured with the current provenance.watermark): never at
# 32 or 48 px; on smooth content (a 32 px face enlarged) after H.264 CRF 18, 0/6 payloads read back at 64
# and 80 px, 4/6 at 96, 6/6 at 128. Smaller videos are refused; smaller images are enlarged (nearest
# neighbour, an integer factor) to at least MIN_IMAGE_SIDE before marking, so every output carries it.
MIN_VIDEO_SIDE = 128
MIN_IMAGE_SIDE = 128


@dataclass(frozen=True)
class WriteResult:
    """What was published: where, which payload the watermark carries, how many frames."""

    path: Path
    payload: str
    frames: int
    mime: str


def load_signer(identity: keys.Identity | None = None) -> keys.Identity:
    """The identity to sign with, proven usable by a test signature: commands call this before any work,
    so a missing, unsafe, locked or broken key fails in one line and leaves nothing behind."""
    ident = identity if identity is not None else keys.ensure_identity()
    manifest.probe_signer(ident)
    return ident


def _prepare(dest: Path | str, suffixes: set[str], kind: str, force: bool,
             identity: keys.Identity | None) -> tuple[Path, keys.Identity]:
    dest = Path(dest)
    if dest.suffix.lower() not in suffixes:
        raise UserError(f"{dest}: a generated {kind} is written as {' or '.join(sorted(suffixes))}")
    check_writable(dest, force)
    return dest, load_signer(identity)


def write_video(
    frames: Iterable[np.ndarray],
    dest: Path | str,
    fps: float,
    facts: GenerationFacts,
    audio_from: Path | str | None = None,
    force: bool = False,
    identity: keys.Identity | None = None,
    on_frame: Callable[[np.ndarray], None] | None = None,
) -> WriteResult:
    """Watermark, encode (H.264 mp4) and sign a stream of RGB frames; memory does not grow with length.

    ``on_frame`` gets every frame as soon as it is watermarked (a live view: `th animate --live`); only marked
    frames ever leave here."""
    from synth.media.video import VideoWriter

    dest, identity = _prepare(dest, VIDEO_SUFFIXES, "video", force, identity)
    payload = watermark.new_payload()
    bits = watermark.payload_to_bits(payload)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise UserError("no frames to write")
    h, w = first.shape[:2]
    if min(h, w) < MIN_VIDEO_SIDE:
        raise UserError(f"{dest}: {w}x{h} frames are too small to carry th's watermark (at least "
                        f"{MIN_VIDEO_SIDE} px a side)")
    n = 0
    mime = manifest.mime_for(dest)
    with anonymous_file(dest) as raw, anonymous_file(dest) as signed:
        with VideoWriter(raw.path, fps, (w, h), audio_from=audio_from, label=str(dest)) as writer:
            for rgb in _chain(first, it):
                marked = watermark.embed(rgb, bits, frame_index=n)  # frame_index: the breathing sync
                writer.write(marked)
                if on_frame is not None:
                    on_frame(marked)
                n += 1
        definition = manifest.manifest_definition(facts, payload, dest.name)
        _sign(dest, raw.path, signed.path, definition, identity, mime)
        signed.publish(force=force)
    return WriteResult(dest, payload, n, mime)


def _sign(dest: Path, src_path: Path | None, dst_path: Path, definition: dict, identity: keys.Identity,
          mime: str, src_bytes: bytes | None = None) -> None:
    try:
        with (open(src_path, "rb") if src_path is not None else io.BytesIO(src_bytes)) as src, \
                open(dst_path, "w+b") as dst:
            manifest.sign_stream(src, dst, definition, identity, mime)
    except OSError as e:
        raise write_error(dest, e) from e


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
    """Watermark, encode (PNG, or JPEG at quality 95) and sign one RGB image (enlarged first if it is smaller
    than ``MIN_IMAGE_SIDE``)."""
    import cv2

    dest, identity = _prepare(dest, IMAGE_SUFFIXES, "image", force, identity)
    k = -(-MIN_IMAGE_SIDE // min(rgb.shape[:2]))  # ceil: the smallest integer factor that is enough
    if k > 1:
        rgb = np.repeat(np.repeat(rgb, k, axis=0), k, axis=1)
    payload = watermark.new_payload()
    marked = watermark.embed(rgb, watermark.payload_to_bits(payload))
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if dest.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(dest.suffix.lower(), cv2.cvtColor(marked, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise UserError(f"cannot encode {dest.suffix} image")
    mime = manifest.mime_for(dest)
    with anonymous_file(dest) as signed:
        definition = manifest.manifest_definition(facts, payload, dest.name)
        _sign(dest, None, signed.path, definition, identity, mime, src_bytes=buf.tobytes())
        signed.publish(force=force)
    return WriteResult(dest, payload, 1, mime)
