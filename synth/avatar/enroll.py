"""Few-shot enrollment (Zakharov et al. 2019, Sec. 3.3) from photos to an avatar file.

Photos → faces + landmarks → canonical crops at the model's size → ê (mean of E over the shots),
ψ' = P·ê, W' = w0 + ê → fine-tuning for ``steps`` (0 = the paper's feed-forward mode) → Avatar.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth.avatar.avatar_file import Avatar
from synth.errors import UserError


@dataclass
class Shots:
    crops: np.ndarray  # uint8 (K, S, S, 3) aligned crops at model size
    landmarks: np.ndarray  # float32 (K, 68, 2) crop pixels
    sha256: list[str]
    notes: list[str]
    photo: np.ndarray | None = None  # uint8 (H, W, 3): the first photo, for full-frame output
    photo_affine: np.ndarray | None = None  # (2, 3): first photo → crop at model size


def load_shots(photos: list[Path], size: int, face_index: int | None = None) -> Shots:
    """Detect, pick and crop the face in each photo (a clear error naming the photo that fails)."""
    from synth.faces.align import align_crop, apply_affine
    from synth.faces.detector import FaceDetector, pick_face
    from synth.media.video import read_image

    if not photos:
        raise UserError("give at least one photo")
    det = FaceDetector()
    crops, lms, shas, notes = [], [], [], []
    photo, photo_affine = None, None
    for p in photos:
        rgb = read_image(p)
        face, note = pick_face(det.detect(rgb, thorough=True), face_index, what=str(p))
        if note:
            notes.append(note)
        crop, M = align_crop(rgb, face.landmarks, size=size)
        if photo is None:
            photo, photo_affine = rgb, M
        crops.append(crop)
        lms.append(apply_affine(face.landmarks, M))
        shas.append(hashlib.sha256(Path(p).read_bytes()).hexdigest())
    return Shots(np.stack(crops), np.stack(lms).astype(np.float32), shas, notes, photo, photo_affine)


def enroll(
    model,
    model_path: Path,
    shots: Shots,
    steps: int,
    name: str,
    consent: str | None,
    seed: int = 0,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> Avatar:
    """Enroll one person from prepared shots; returns the avatar (not yet saved)."""
    from synth.avatar.bundled import model_identity
    from synth.avatar.finetune import finetune

    t0 = time.perf_counter()
    params = finetune(model, shots.crops, shots.landmarks, steps=steps, seed=seed, on_step=on_step)
    model_id, model_sha = model_identity(model_path)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    avatar_id = hashlib.sha256("|".join([*shots.sha256, model_sha, str(steps), created]).encode()).hexdigest()[:16]
    final = params.losses[-1] if params.losses else {}
    meta = {
        "avatar_id": avatar_id,
        "name": name,
        "photos_sha256": shots.sha256,
        "shots": len(shots.sha256),
        "base_model_id": model_id,
        "base_model_sha256": model_sha,
        "steps": steps,
        "consent": consent,
        "created": created,
        "enroll_seconds": round(time.perf_counter() - t0, 2),
        "final_losses": {k: round(float(v), 4) for k, v in final.items()},
    }
    return Avatar(params.tensors(), shots.landmarks[0].copy(), shots.crops[0].copy(), meta,
                  photo=shots.photo, photo_affine=shots.photo_affine)


def preview_grid(model, avatar: Avatar, shots: Shots, max_rows: int = 8) -> np.ndarray:
    """Rows of (photo crop | landmark image | reconstruction from that landmark image)."""
    import torch

    from synth.avatar.finetune import PersonParams
    from synth.avatar.model import images_to_tensor, tensor_to_images
    from synth.faces.landmark_image import draw_landmarks

    params = PersonParams.from_tensors(avatar.tensors)
    g = params.generator_module(model)
    k = min(len(shots.crops), max_rows)
    s = model.image_size
    lm_imgs = np.stack([draw_landmarks(lm, s) for lm in shots.landmarks[:k]])
    warped = None
    if model.uses_warp:
        from synth.avatar.finetune import training_sources

        # each shot rebuilt from the shots after a pose jitter of itself (what fine-tuning trained on)
        rng = np.random.default_rng(0)
        warped = torch.from_numpy(np.stack([training_sources(*params.sources, i, rng) for i in range(k)]))
    with torch.no_grad():
        rec = tensor_to_images(model.generate(images_to_tensor(lm_imgs, model.device), psi=params.psi, generator=g,
                                              warped=warped))
    rows = [np.hstack([shots.crops[i], lm_imgs[i], rec[i]]) for i in range(k)]
    return np.vstack(rows)
