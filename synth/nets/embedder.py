"""The embedder E(x, y; φ) of Zakharov et al. 2019 (Sec. 3.2, "Architecture"; Appendix A).

E maps a frame x_i(s) and its landmark image y_i(s) (6 channels) to an N-dimensional vector
ê_i(s) through residual down-blocks with self-attention, a global max-pool and a ReLU. The person
vector ê_i is the mean of ê_i(s) over the K frames of an episode (Eq. 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synth.nets.blocks import down_stack
from synth.nets.config import NetConfig


class Embedder(nn.Module):
    """E: (frame, landmark image) pairs → person embedding ê (mean over K, Eq. 2)."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.size = cfg.embed_size or cfg.image_size  # E may see the frames downscaled (NetConfig.embed_size)
        self.blocks, _ = down_stack(6, (*cfg.e_widths, cfg.emb_dim), self.size, cfg.attn_res, norm=False)

    def embed_frames(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-frame embeddings ê_i(s): x, y (B,3,H,W) in [-1,1] → (B,N) ≥ 0."""
        h = torch.cat([x, y], dim=1)  # (B,6,H,W)
        if h.shape[-1] != self.size:
            h = F.interpolate(h, size=(self.size, self.size), mode="area")  # (B,6,s,s)
        for blk in self.blocks:
            h = blk(h)  # (B,C,H/2^k,W/2^k)
        return torch.relu(h.amax(dim=(2, 3)))  # global max-pool + ReLU -> (B,N)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Person embeddings ê_i: x, y (B,K,3,H,W) → (B,N), the mean over the K frames (Eq. 2)."""
        b, k = x.shape[:2]
        s = self.cfg.image_size
        assert x.shape[2:] == (3, s, s) and y.shape == x.shape, (x.shape, y.shape)
        e = self.embed_frames(x.reshape(b * k, 3, s, s), y.reshape(b * k, 3, s, s))  # (B*K,N)
        return e.view(b, k, -1).mean(dim=1)  # (B,N)
