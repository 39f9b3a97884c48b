"""The projection discriminator D(x, y, i; θ, W, w0, b) of Zakharov et al. 2019 (Sec. 3.2, Eq. 4).

V(x, y; θ) maps a frame and its landmark image (6 channels) to an N-vector through residual
down-blocks (self-attention at attn_res), one more residual block, global sum pooling and a ReLU.
The realism score is the projection r = V·(W_i + w0) + b (Miyato & Koyama 2018), with one column
W_i per training video. Spectral norm on every convolution. Intermediate features are returned for
the feature-matching loss (Eq. 3).
"""

from __future__ import annotations

import torch
from torch import nn

from synth.nets.blocks import ResDown, down_stack
from synth.nets.config import NetConfig


class Discriminator(nn.Module):
    """D: (x, y) → (V (B,N), features); ``realism(V, column)`` gives r (Eq. 4)."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.blocks, _ = down_stack(6, (*cfg.d_widths, cfg.emb_dim), cfg.image_size, cfg.attn_res, norm=False)
        self.blocks.append(ResDown(cfg.emb_dim, cfg.emb_dim, down=False))
        # W: one column per training video, w0 shared, b scalar (Eq. 4). Not spectrally normalised.
        self.W = nn.Parameter(torch.randn(cfg.num_videos, cfg.emb_dim) * 0.02)
        self.w0 = nn.Parameter(torch.zeros(cfg.emb_dim))
        self.b = nn.Parameter(torch.zeros(()))

    def features(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x, y (B,3,H,W) → V (B,N) and the list of block outputs (for feature matching)."""
        s = self.cfg.image_size
        assert x.shape[1:] == (3, s, s) and y.shape == x.shape, (x.shape, y.shape)
        h = torch.cat([x, y], dim=1)  # (B,6,H,W)
        feats = []
        for blk in self.blocks:
            h = blk(h)  # (B,C,H/2^k,W/2^k)
            feats.append(h)
        v = torch.relu(h.sum(dim=(2, 3)))  # global sum pooling + ReLU -> (B,N)
        return v, feats

    def column(self, video: torch.Tensor) -> torch.Tensor:
        """W_i + w0 for video indices (B,) → (B,N)."""
        return self.W[video] + self.w0

    def realism(self, v: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
        """r = V·column + b: (B,N), (B,N) → (B,) (Eq. 4)."""
        return (v * column).sum(dim=1) + self.b

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, column: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Realism r (B,) of frames x given landmarks y and projection columns (B,N), plus features."""
        v, feats = self.features(x, y)
        return self.realism(v, column), feats
