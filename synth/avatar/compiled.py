"""An avatar compiled for ONNX Runtime: `th animate` of an enrolled avatar without importing torch.

torch's import and the model's loading and folding are ~2-3 s of a 10 s animation's start-up, yet after the
first animation of an avatar nothing of them is needed: the generator graph (fine-tuned weights folded in) is
cached by ``synth.nets.engine``, and the one person-specific input left is the avatar's AdaIN vector ψ. A
compiled avatar is that ψ, the name of the graph and a reference frame: the torch generator's output for an
input drawn from the avatar itself (its first shot's landmarks, that shot warped onto them). Loading checks
the graph against the reference, as the torch path checks its first frame, so a damaged or stale cache entry
is never used: it is recompiled by the next torch run.

Entries: ``$TH_HOME/cache/engine/animate-<key>.npz`` (no pickles); the key covers the base model's and the
avatar file's sha256 and this format. The newest ``CACHE_KEEP`` are kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from synth.nets import engine as ort_engine

FORMAT = "th-compiled-avatar-v1"
AGREEMENT = 1e-3  # largest |onnx − reference| accepted (as synth.avatar.runtime.AGREEMENT)


def entry_key(model_sha256: str, avatar_sha256: str) -> str:
    return hashlib.sha256(f"{FORMAT}|{model_sha256}|{avatar_sha256}".encode()).hexdigest()


def _path(key: str):
    return ort_engine.cache_dir() / f"animate-{key}.npz"


def reference_inputs(shots: np.ndarray | None, shot_landmarks: np.ndarray | None, landmarks: np.ndarray,
                     size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The check's input, uint8: landmark image (1,S,S,3) and warped shots (1,K,S,S,3) (None without shots)."""
    from synth.faces.landmark_image import draw_landmarks

    if shots is None:
        return draw_landmarks(landmarks, size)[None], None
    from synth.faces.warp import ShotWarper

    lm = shot_landmarks[0]
    return draw_landmarks(lm, size)[None], ShotWarper(shots, shot_landmarks)(lm)[None]


def to_inputs(y: np.ndarray, warped: np.ndarray | None) -> list[np.ndarray]:
    """uint8 images → the generator's float inputs in [-1, 1] (as synth.avatar.model.images_to_tensor)."""
    out = [np.ascontiguousarray(y.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(127.5) - np.float32(1.0)]
    if warped is not None:
        out.append(np.ascontiguousarray(warped.transpose(0, 1, 4, 2, 3)).astype(np.float32) / np.float32(127.5)
                   - np.float32(1.0))
    return out


def to_images(x: np.ndarray) -> np.ndarray:
    """float (T,3,S,S) in [-1, 1] → uint8 RGB (T,S,S,3) (as synth.avatar.model.tensor_to_images)."""
    return np.round((np.clip(x, -1.0, 1.0) + 1.0) * np.float32(127.5)).astype(np.uint8).transpose(0, 2, 3, 1)


@dataclass
class CompiledAvatar:
    """The generator of one avatar, run by ONNX Runtime: ``generate(y, warped)`` on uint8 images."""

    size: int
    uses_warp: bool
    psi: np.ndarray  # (n_adain,) float32
    session: object

    def generate(self, y: np.ndarray, warped: np.ndarray | None = None) -> np.ndarray:
        """Landmark images (B,S,S,3) and warped shots (B,K,S,S,3), uint8 → frames (B,S,S,3), uint8."""
        return to_images(self._run(y, warped))

    def _run(self, y: np.ndarray, warped: np.ndarray | None) -> np.ndarray:
        ins = to_inputs(y, warped)
        feeds = {"y": ins[0], "psi": np.ascontiguousarray(np.broadcast_to(self.psi, (len(y), self.psi.size)))}
        if self.uses_warp:
            feeds["warped"] = ins[1]
        return self.session.run(None, feeds)[0]  # unclipped: to_images clips

    @staticmethod
    def load(model_sha256: str, avatar_sha256: str, sources: tuple[np.ndarray, np.ndarray] | None,
             landmarks: np.ndarray, threads: int) -> CompiledAvatar | None:
        """The compiled avatar if its entry and graph are cached and agree with the reference, else None."""
        key = entry_key(model_sha256, avatar_sha256)
        try:
            with np.load(_path(key), allow_pickle=False) as z:
                fields = {k: z[k] for k in z.files}
            if str(fields["format"]) != FORMAT:
                return None
            graph = ort_engine.cached_graph("generator", str(fields["graph_key"]))
        except (OSError, KeyError, ValueError):
            return None
        if graph is None:
            return None
        size, uses_warp = int(fields["size"]), bool(fields["uses_warp"])
        if uses_warp and sources is None:
            return None
        shots, shot_lms = sources if sources is not None else (None, None)
        fast = CompiledAvatar(size, uses_warp, fields["psi"].astype(np.float32),
                              ort_engine.session(graph, threads))
        y, w = reference_inputs(shots, shot_lms, landmarks, size)
        try:
            err = float(np.abs(np.clip(fast._run(y, w), -1.0, 1.0) - fields["reference"]).max())
        except Exception:  # a graph of other shapes (onnxruntime raises its own error types)
            return None
        if not err <= AGREEMENT:
            _path(key).unlink(missing_ok=True)
            return None
        _path(key).touch()
        return fast


def save(model_sha256: str, avatar_sha256: str, graph_key: str, size: int, uses_warp: bool, generator, psi,
         sources: tuple[np.ndarray, np.ndarray] | None, landmarks: np.ndarray) -> None:
    """Cache the compiled form of an avatar (best effort, like the graph cache): ``generator`` = the folded torch
    generator its graph was exported from and ``psi`` its AdaIN tensor (the reference frame is theirs)."""
    import io

    import torch

    from synth.errors import UserError
    from synth.media.atomic import atomic_write_bytes

    shots, shot_lms = sources if sources is not None else (None, None)
    y, w = reference_inputs(shots, shot_lms, landmarks, size)
    ins = [torch.from_numpy(a) for a in to_inputs(y, w if uses_warp else None)]
    with torch.no_grad():
        ref = generator(ins[0], psi[None], ins[1] if uses_warp else None).numpy()
    buf = io.BytesIO()
    np.savez(buf, format=np.array(FORMAT), graph_key=np.array(graph_key), size=np.array(size),
             uses_warp=np.array(uses_warp), psi=psi.detach().cpu().numpy().astype(np.float32),
             reference=np.clip(ref, -1.0, 1.0).astype(np.float32))
    path = _path(entry_key(model_sha256, avatar_sha256))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue(), force=True)
        for old in sorted(path.parent.glob("animate-*.npz"), key=lambda p: p.stat().st_mtime)[:-ort_engine.CACHE_KEEP]:
            old.unlink(missing_ok=True)
    except (OSError, UserError):
        pass
