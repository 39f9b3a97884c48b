"""Few-shot fine-tuning on a new person (Zakharov et al. 2019, Sec. 3.3), used by `th enroll`.

ê_new = mean E over the person's K frames; the generator's person-specific AdaIN parameters start at
ψ' = P·ê_new and become trainable, the discriminator's column starts at W' = w0 + ê_new. Then G
(with ψ') and D (with W') are trained on the K frames with the meta-learning phase functions minus the
embedding-match term. ``steps=0`` is the feed-forward case (no training).

With the warp-guided generator each training target is one of the person's shots and its sources are all
K shots warped to it, where the target's own shot is first moved to randomly jittered landmarks (a pose,
scale and expression change) so that G never sees the answer unwarped: even one shot teaches G how this
person's face looks after a warp, and what to fix.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from synth.avatar.model import TalkingHeadModel, fold_spectral_norm, images_to_tensor
from synth.faces.landmark_image import draw_landmarks
from synth.nets.losses import IdentityLoss, Perceptual
from synth.train.metatrain import discriminator_step, generator_step, step_seed


@dataclass
class PersonParams:
    """What enrollment produces for one person."""

    e_hat: torch.Tensor  # (N,) person embedding
    psi: torch.Tensor  # (n_adain,) AdaIN parameters (P·ê, fine-tuned when steps > 0)
    column: torch.Tensor  # (N,) discriminator column W'
    generator: dict[str, torch.Tensor] | None  # fine-tuned G weights (spectral norm folded); None = meta G
    losses: list[dict[str, float]]
    shots: np.ndarray | None = None  # uint8 (K,S,S,3) the person's crops at model size (warp-guided G)
    shot_landmarks: np.ndarray | None = None  # float32 (K,68,2) their landmarks, model-size pixels

    @property
    def sources(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(shots, landmarks) for the warp-guided generator, or None (the 2019 generator needs none)."""
        return None if self.shots is None else (self.shots, self.shot_landmarks)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat tensors for a safetensors avatar file."""
        out = {"e_hat": self.e_hat, "psi": self.psi, "column": self.column}
        if self.shots is not None:
            out["shots"] = torch.from_numpy(np.ascontiguousarray(self.shots))
            out["shot_landmarks"] = torch.from_numpy(np.ascontiguousarray(self.shot_landmarks, np.float32))
        for k, v in (self.generator or {}).items():
            out[f"G/{k}"] = v
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    @staticmethod
    def from_tensors(t: dict) -> PersonParams:
        """From ``tensors()`` or a loaded avatar's arrays (torch tensors or numpy)."""
        t = {k: torch.as_tensor(v) for k, v in t.items()}
        g = {k[2:]: v for k, v in t.items() if k.startswith("G/")}
        shots = t["shots"].numpy() if "shots" in t else None
        lms = t["shot_landmarks"].numpy() if "shot_landmarks" in t else None
        return PersonParams(t["e_hat"], t["psi"], t["column"], g or None, [], shots, lms)

    def generator_module(self, model: TalkingHeadModel) -> nn.Module:
        """The generator to animate this person with (folded, eval mode)."""
        if self.generator is None:
            return model.fast_generator()
        g = fold_spectral_norm(model.G)
        g.load_state_dict(self.generator)
        return g.to(model.device)


def at_model_size(model: TalkingHeadModel, frames: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 crops (K,S0,S0,3) + landmarks (K,68,2) in crop pixels → the same at the model's size S."""
    import cv2

    s = model.image_size
    src = frames.shape[1]
    if src != s:
        frames = np.stack([cv2.resize(f, (s, s), interpolation=cv2.INTER_AREA) for f in frames])
    return frames, landmarks.astype(np.float32) * (s / src)


def person_inputs(model: TalkingHeadModel, frames: np.ndarray, landmarks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 crops (K,S,S,3) + landmarks (K,68,2) in crop pixels → x, y tensors (K,3,S,S) at model size."""
    frames, landmarks = at_model_size(model, frames, landmarks)
    s = model.image_size
    lm_images = np.stack([draw_landmarks(lm, s) for lm in landmarks])
    return images_to_tensor(frames, model.device), images_to_tensor(lm_images, model.device)


def jitter_landmarks(lm: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """(68,2) landmarks moved as a new pose and expression would: a small similarity transform (±6°, ±6 %,
    ±4 % of the side), the mouth opened or closed a little, and per-point noise (0.5 % of the side)."""
    c = lm.mean(0)
    a = np.deg2rad(rng.uniform(-6, 6))
    k = rng.uniform(0.94, 1.06)
    rot = k * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    out = (lm - c) @ rot.T + c + rng.uniform(-0.04, 0.04, 2) * size
    mouth = out[48:68]
    mc = mouth.mean(0)
    out[48:68] = mc + (mouth - mc) * [1.0, rng.uniform(0.6, 1.8)]  # open / close the mouth vertically
    return (out + rng.normal(0, 0.005 * size, out.shape)).astype(np.float32)


def training_sources(shots: np.ndarray, shot_lms: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """float32 (K,3,S,S) in [-1,1]: all K shots warped to shot ``target``'s landmarks, the target's own shot
    first moved to jittered landmarks (so it is not the answer itself)."""
    from synth.faces.warp import PiecewiseAffineWarp, ShotWarper

    s = shots.shape[1]
    lm_t = shot_lms[target]
    lm_j = jitter_landmarks(lm_t, s, rng)
    moved = PiecewiseAffineWarp(shots[target], lm_t)(lm_j)  # the shot in a new pose
    srcs, lms = shots.copy(), shot_lms.copy()
    srcs[target], lms[target] = moved, lm_j
    warped = ShotWarper(srcs, lms)(lm_t)  # (K,S,S,3)
    return warped.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0


def finetune(
    model: TalkingHeadModel,
    frames: np.ndarray,
    landmarks: np.ndarray,
    steps: int = 0,
    lr_g: float | None = None,
    lr_d: float | None = None,
    batch: int = 4,
    seed: int = 0,
    perceptual: Perceptual | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    identity: IdentityLoss | None = None,
) -> PersonParams:
    """Enroll one person from K aligned crops (uint8 (K,S,S,3)) and their landmarks ((K,68,2)).

    ``identity``: the dlib-ResNet identity term (default: the model config's ``w_id``/``w_idfeat``)."""
    cfg = model.config
    x, y = person_inputs(model, frames, landmarks)  # (K,3,S,S)
    shots, shot_lms = at_model_size(model, frames, landmarks)  # for the warp-guided G
    e_hat = model.embed(x, y)  # (N,), Eq. 2
    with torch.no_grad():
        psi0 = model.G.project(e_hat[None])[0]  # ψ' init = P·ê_new
        col0 = model.D.w0 + e_hat  # W' init = w0 + ê_new
    kept = (shots, shot_lms) if model.uses_warp else (None, None)
    if steps <= 0:
        return PersonParams(e_hat.clone(), psi0.clone(), col0.clone(), None, [], *kept)
    if identity is None:
        identity = IdentityLoss.from_config(cfg.loss)
    g = copy.deepcopy(model.G).train()
    d = copy.deepcopy(model.D).train()
    psi = nn.Parameter(psi0.clone())
    col = nn.Parameter(col0.clone())
    t = cfg.train
    g_params = [p for n, p in g.named_parameters() if n != "P"] + [psi]
    d_params = [p for n, p in d.named_parameters() if n != "W"] + [col]
    opt_g = torch.optim.Adam(g_params, lr=lr_g or t.lr_g, betas=t.betas)
    opt_d = torch.optim.Adam(d_params, lr=lr_d or t.lr_d, betas=t.betas)
    k = x.shape[0]
    b = min(batch, k)
    history = []
    for step in range(steps):
        torch.manual_seed(step_seed(seed, 0, step))
        idx = torch.from_numpy(np.random.default_rng([seed, step]).choice(k, size=b, replace=False)).to(x.device)
        xt, yt = x[idx], y[idx]
        warped = None
        if model.uses_warp:
            rng = np.random.default_rng([seed, step, 1])
            warped = torch.from_numpy(np.stack([training_sources(shots, shot_lms, int(i), rng) for i in idx])
                                      ).to(x.device)  # (b,K,3,S,S)
        losses, fake = generator_step(g, d, opt_g, yt, xt, psi.expand(b, -1), col.expand(b, -1), cfg.loss,
                                      perceptual, warped=warped, identity=identity,
                                      points=torch.from_numpy(shot_lms[idx.cpu().numpy()]).to(x.device))
        losses.update(discriminator_step(d, opt_d, yt, xt, fake, col.expand(b, -1), cfg.loss))
        history.append(losses)
        if on_step is not None:
            on_step(step + 1, losses)
    g_state = fold_spectral_norm(g).state_dict()
    return PersonParams(e_hat.clone(), psi.detach().clone(), col.detach().clone(),
                        {k_: v.detach().clone() for k_, v in g_state.items()}, history, *kept)
