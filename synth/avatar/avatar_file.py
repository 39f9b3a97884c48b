"""Avatar files: one enrolled person, as safetensors (the person-specific parameters) + JSON metadata.

An avatar is refused on load if it is not safetensors (a pickle renamed ``.avatar`` is never
unpickled), is truncated, or was made for another base model than the one loaded.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth.errors import UserError
from synth.media.atomic import atomic_path

AVATAR_FORMAT = "th-avatar"
AVATAR_FORMAT_VERSION = 1
MAX_PHOTO_SIDE = 1024  # the photo kept for full-frame output is downscaled to this


def _shrink_photo(photo: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Downscale a large photo (and compose the crop transform) so avatar files stay small."""
    import cv2

    h, w = photo.shape[:2]
    k = min(1.0, MAX_PHOTO_SIDE / max(h, w))
    if k < 1.0:
        photo = cv2.resize(photo, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
        affine = affine.copy()
        affine[:, :2] /= k
    # yuv420p video needs even sides
    return photo[: photo.shape[0] // 2 * 2, : photo.shape[1] // 2 * 2], affine


@dataclass
class Avatar:
    """An enrolled person: parameters for G, the person's own landmarks and crops, and metadata."""

    tensors: dict  # name → array: torch.Tensor from PersonParams.tensors(), numpy when loaded (no torch needed)
    landmarks: np.ndarray  # float32 (68, 2): the avatar's neutral landmarks, crop pixels at model size
    source: np.ndarray  # uint8 (S, S, 3): the first shot's aligned crop at model size
    meta: dict  # name, photos_sha256, base_model_id, base_model_sha256, steps, consent, created, ...
    photo: np.ndarray | None = None  # uint8 (H, W, 3): the first photo (≤ MAX_PHOTO_SIDE), for full-frame output
    photo_affine: np.ndarray | None = None  # (2, 3): photo pixels → crop pixels at model size

    @property
    def avatar_id(self) -> str:
        return str(self.meta.get("avatar_id", ""))

    def save(self, path: Path | str, force: bool = False) -> None:
        """Write the avatar file atomically (refusing to replace one without ``force``)."""
        with atomic_path(path, force=force) as tmp:
            self.write_to(tmp)

    def write_to(self, path: Path | str) -> None:
        """Write the avatar to ``path`` as is (``save`` publishes it atomically)."""
        import torch
        from safetensors.torch import save_file

        tensors = {k: torch.as_tensor(v) for k, v in self.tensors.items()}
        tensors["avatar/landmarks"] = torch.from_numpy(self.landmarks.astype(np.float32))
        tensors["avatar/source"] = torch.from_numpy(np.ascontiguousarray(self.source))
        if self.photo is not None and self.photo_affine is not None:
            import cv2

            photo, affine = _shrink_photo(self.photo, self.photo_affine)
            ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            if ok:  # a real photo (not generated), kept compressed
                tensors["avatar/photo_jpeg"] = torch.from_numpy(jpg.reshape(-1).copy())
                tensors["avatar/photo_affine"] = torch.from_numpy(affine.astype(np.float64))
        meta = {"format": AVATAR_FORMAT, "format_version": str(AVATAR_FORMAT_VERSION), "meta": json.dumps(self.meta)}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)

    @staticmethod
    def load(path: Path | str, base_model_sha256: str | None = None) -> Avatar:
        """Read and check an avatar file; ``base_model_sha256`` refuses an avatar of another model."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file  # numpy: animating a compiled avatar never imports torch

        path = Path(path)
        if not path.exists():
            raise UserError(f"{path}: no such avatar file")
        header = _safetensors_header(path)
        meta_raw = header.get("__metadata__", {})
        if meta_raw.get("format") != AVATAR_FORMAT:
            raise UserError(f"{path}: a safetensors file, but not a th avatar")
        if int(meta_raw.get("format_version", "0")) > AVATAR_FORMAT_VERSION:
            raise UserError(f"{path}: avatar format {meta_raw['format_version']} needs a newer th")
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"{path}: avatar file is damaged ({e})") from e
        meta = json.loads(meta_raw.get("meta", "{}"))
        if base_model_sha256 is not None and meta.get("base_model_sha256") != base_model_sha256:
            raise UserError(
                f"{path}: made for base model {meta.get('base_model_id')} ({str(meta.get('base_model_sha256'))[:12]}…), "
                f"not the loaded one ({base_model_sha256[:12]}…); re-enroll or pass that --model")
        try:
            lm = tensors.pop("avatar/landmarks")
            src = tensors.pop("avatar/source")
        except KeyError as e:
            raise UserError(f"{path}: avatar file is missing {e}") from e
        photo, affine = None, None
        if "avatar/photo_jpeg" in tensors:
            import cv2

            bgr = cv2.imdecode(tensors.pop("avatar/photo_jpeg"), cv2.IMREAD_COLOR)
            affine = tensors.pop("avatar/photo_affine")
            photo = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr is not None else None
        return Avatar(tensors, lm, src, meta, photo=photo, photo_affine=affine)


def _safetensors_header(path: Path) -> dict:
    """Parse the safetensors header without trusting the file: 8-byte length + JSON that fits the file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise UserError(f"{path}: not an avatar (file too short)")
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or n > min(size - 8, 100_000_000):
            raise UserError(f"{path}: not an avatar (not a safetensors file)")
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not an avatar (not a safetensors file)") from e
    if not isinstance(header, dict):
        raise UserError(f"{path}: not an avatar (not a safetensors file)")
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if ends and 8 + n + max(ends) > size:
        raise UserError(f"{path}: avatar file is truncated ({size} bytes, needs {8 + n + max(ends)})")
    return header
