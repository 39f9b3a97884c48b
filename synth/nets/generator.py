"""The generator G(y, ê; ψ, P) of Zakharov et al. 2019 (Sec. 3.2, "Architecture"; Appendix A).

An image-to-image network (Johnson et al. 2016) with residual blocks (BigGAN-style): residual
down-blocks with plain instance norm encode the landmark image y_i(t); residual blocks and residual
up-blocks use adaptive instance norm whose scales and biases are the person-specific parameters
ψ̂_i = P·ê_i, with P a learned projection matrix (Sec. 3.2). Self-attention at attn_res; tanh output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from synth.nets.blocks import AdaIN, ResAdaIN, ResUpAdaIN, SelfAttention, down_stack
from synth.nets.config import NetConfig


class Generator(nn.Module):
    """G: landmark image y (B,3,H,W) + AdaIN parameters ψ̂ (B,n_adain) → frame x̂ (B,3,H,W) in [-1,1]."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = cfg.g_widths
        self.down, _ = down_stack(3, widths, cfg.image_size, cfg.attn_res, norm=True)
        c = widths[-1]
        res = cfg.image_size // 2 ** len(widths)
        self.res = nn.ModuleList(ResAdaIN(c) for _ in range(cfg.g_res_blocks))
        self.up = nn.ModuleList()
        for w in (*reversed(widths[:-1]), widths[0]):
            self.up.append(ResUpAdaIN(c, w))
            c, res = w, res * 2
            if res == cfg.attn_res:
                self.up.append(SelfAttention(c))
        self.out_norm = AdaIN(c)
        self.out_conv = spectral_norm(nn.Conv2d(c, 3, 3, padding=1))
        adain = [m for m in (*self.res, *self.up, self.out_norm) if hasattr(m, "n_params")]
        self._splits = [m.n_params for m in adain]
        self.n_adain = sum(self._splits)
        # P: the projection ê -> ψ̂ (Sec. 3.2), a plain matrix as in the paper.
        self.P = nn.Parameter(torch.randn(self.n_adain, cfg.emb_dim) * 0.02)

    def project(self, e: torch.Tensor) -> torch.Tensor:
        """ψ̂ = P·ê: (B,N) → (B,n_adain)."""
        return F.linear(e, self.P)

    uses_warp = False  # paints every pixel from y: takes no warped source shots

    def forward(self, y: torch.Tensor, psi: torch.Tensor, warped: torch.Tensor | None = None) -> torch.Tensor:
        # y (B,3,H,W) in [-1,1], psi (B,n_adain) -> x̂ (B,3,H,W) in [-1,1]; ``warped`` is ignored
        s = self.cfg.image_size
        assert y.shape[1:] == (3, s, s) and psi.shape == (y.shape[0], self.n_adain), (y.shape, psi.shape)
        parts = iter(psi.split(self._splits, dim=1))
        h = y
        for blk in self.down:
            h = blk(h)  # (B,C,H/2^k,W/2^k), plain IN
        for blk in self.res:
            h = blk(h, next(parts))  # (B,C,h,w), AdaIN
        for blk in self.up:
            h = blk(h) if isinstance(blk, SelfAttention) else blk(h, next(parts))  # (B,C',2h,2w)
        h = F.relu(self.out_norm(h, next(parts)))  # (B,c0,H,W)
        return torch.tanh(self.out_conv(h))  # (B,3,H,W)


def build_generator(cfg: NetConfig) -> nn.Module:
    """The generator the config names: ``adain`` (this module, 2019) or ``warp`` (synth.nets.warp_generator)."""
    if cfg.generator == "adain":
        return Generator(cfg)
    if cfg.generator == "warp":
        from synth.nets.warp_generator import WarpGenerator

        return WarpGenerator(cfg)
    raise ValueError(f"unknown generator {cfg.generator!r} (adain or warp)")
