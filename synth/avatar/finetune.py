"""Few-shot fine-tuning on a new person (Zakharov et al. 2019, Sec. 3.3), used by `th enroll`.

ê_new = mean E over the person's K frames; the generator's person-specific AdaIN parameters start at
ψ' = P·ê_new and become trainable, the discriminator's column starts at W' = w0 + ê_new. Then G
(with ψ') and D (with W') are trained on the K frames with the meta-learning phase functions minus the
embedding-match term. ``steps=0`` is the feed-forward case (no training).
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
from synth.nets.losses import Perceptual
from synth.train.metatrain import discriminator_step, generator_step, step_seed


@dataclass
class PersonParams:
    """What enrollment produces for one person."""

    e_hat: torch.Tensor  # (N,) person embedding
    psi: torch.Tensor  # (n_adain,) AdaIN parameters (P·ê, fine-tuned when steps > 0)
    column: torch.Tensor  # (N,) discriminator column W'
    generator: dict[str, torch.Tensor] | None  # fine-tuned G weights (spectral norm folded); None = meta G
    losses: list[dict[str, float]]

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat tensors for a safetensors avatar file."""
        out = {"e_hat": self.e_hat, "psi": self.psi, "column": self.column}
        for k, v in (self.generator or {}).items():
            out[f"G/{k}"] = v
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    @staticmethod
    def from_tensors(t: dict[str, torch.Tensor]) -> PersonParams:
        g = {k[2:]: v for k, v in t.items() if k.startswith("G/")}
        return PersonParams(t["e_hat"], t["psi"], t["column"], g or None, [])

    def generator_module(self, model: TalkingHeadModel) -> nn.Module:
        """The generator to animate this person with (folded, eval mode)."""
        if self.generator is None:
            return model.fast_generator()
        g = fold_spectral_norm(model.G)
        g.load_state_dict(self.generator)
        return g.to(model.device)


def person_inputs(model: TalkingHeadModel, frames: np.ndarray, landmarks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 crops (K,S,S,3) + landmarks (K,68,2) in crop pixels → x, y tensors (K,3,S,S) at model size."""
    import cv2

    s = model.image_size
    src = frames.shape[1]
    if src != s:
        frames = np.stack([cv2.resize(f, (s, s), interpolation=cv2.INTER_AREA) for f in frames])
    lm_images = np.stack([draw_landmarks(lm * (s / src), s) for lm in landmarks.astype(np.float32)])
    return images_to_tensor(frames, model.device), images_to_tensor(lm_images, model.device)


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
) -> PersonParams:
    """Enroll one person from K aligned crops (uint8 (K,S,S,3)) and their landmarks ((K,68,2))."""
    cfg = model.config
    x, y = person_inputs(model, frames, landmarks)  # (K,3,S,S)
    e_hat = model.embed(x, y)  # (N,), Eq. 2
    with torch.no_grad():
        psi0 = model.G.project(e_hat[None])[0]  # ψ' init = P·ê_new
        col0 = model.D.w0 + e_hat  # W' init = w0 + ê_new
    if steps <= 0:
        return PersonParams(e_hat.clone(), psi0.clone(), col0.clone(), None, [])
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
        losses, fake = generator_step(g, d, opt_g, yt, xt, psi.expand(b, -1), col.expand(b, -1), cfg.loss,
                                      perceptual)
        losses.update(discriminator_step(d, opt_d, yt, xt, fake, col.expand(b, -1), cfg.loss))
        history.append(losses)
        if on_step is not None:
            on_step(step + 1, losses)
    g_state = fold_spectral_norm(g).state_dict()
    return PersonParams(e_hat.clone(), psi.detach().clone(), col.detach().clone(),
                        {k_: v.detach().clone() for k_, v in g_state.items()}, history)
