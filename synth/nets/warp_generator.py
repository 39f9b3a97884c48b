"""The warp-guided generator: warp the source shots, then let the paper's AdaIN generator fix the warp.

Zakharov et al. 2019 paint every pixel of x̂ = G(y, ψ̂) from the landmark image alone (Sec. 3.2). With
~1000 s of video, two CPU cores and no VGG, that loses to a plain piecewise-affine warp of the source photo
on people the model never saw (docs/EVAL.md). The paper's follow-up (Bi-layer, Zakharov et al. 2020), FOMM
(Siarohin et al. 2019) and LivePortrait move the source's pixels instead; so does this generator:

    W       = Σ_k c_k · warp_k                    the K source shots warped to the target landmarks y
                                                  (synth.faces.warp), blended by per-shot confidences c_k
    painted = W + Δ(y, W; ψ̂)                      the AdaIN image-to-image network of the paper, ψ̂ = P·ê
    x̂       = m · W + (1 − m) · painted           m = per-pixel blend mask, also predicted by the network

so the network only has to learn what a warp cannot do (the inside of an opening mouth, closing eyes, what a
turning head reveals, edges), and keeps the source's sharp identity where the warp is right. Δ's output
layer and the confidence head start at zero: an untrained model returns the warp (the mean of the warps for
K > 1). E, P and the AdaIN parameters are exactly those of the 2019 generator (synth.nets.generator).

Cost is kept for real time at 256 px: the encoder works from S/2 down with strided convolutions, the
AdaIN bottleneck at S/16, the decoder has one convolution per level with additive U-Net skips, and only
the output head touches full resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from synth.nets.blocks import AdaIN, ResAdaIN, SelfAttention
from synth.nets.config import NetConfig


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Module:
    return spectral_norm(nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2 if k % 2 else k // 2 - 1))


class ShotConfidence(nn.Module):
    """Per-shot confidence logits at S/4 from each warped shot and the target landmark image (K > 1)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = _conv(6, width, 3)
        self.conv2 = nn.Conv2d(width, 1, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # zero logits = equal trust in every shot at initialisation
        nn.init.zeros_(self.conv2.bias)

    def forward(self, warped: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # warped (B,K,3,S,S), y (B,3,S,S) -> weights (B,K,1,S,S) summing to 1 over K
        b, k, _, s, _ = warped.shape
        small_w = F.avg_pool2d(warped.flatten(0, 1), 4)  # (BK,3,S/4,S/4)
        small_y = F.avg_pool2d(y, 4).repeat_interleave(k, 0)  # (BK,3,S/4,S/4)
        logits = self.conv2(F.relu(self.conv1(torch.cat([small_w, small_y], 1))))  # (BK,1,S/4,S/4)
        weights = torch.softmax(logits.view(b, k, 1, s // 4, s // 4), dim=1)
        return F.interpolate(weights.flatten(0, 1), size=(s, s), mode="bilinear",
                             align_corners=False).view(b, k, 1, s, s)


class UpAdaIN(nn.Module):
    """Decoder level: AdaIN → ReLU → ×2 nearest → conv3, plus the encoder's skip at the new size."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm = AdaIN(cin)
        self.conv = _conv(cin, cout, 3)
        self.n_params = self.norm.n_params

    def forward(self, x: torch.Tensor, skip: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        # x (B,cin,h,w), skip (B,cout,2h,2w), psi (B,2cin) -> (B,cout,2h,2w)
        h = F.interpolate(F.relu(self.norm(x, psi)), scale_factor=2.0, mode="nearest")
        return self.conv(h) + skip


class WarpGenerator(nn.Module):
    """G: landmark image y (B,3,S,S) + warped shots (B,K,3,S,S) + ψ̂ (B,n_adain) → x̂ (B,3,S,S), aux maps.

    ``g_widths`` are the encoder's channels at S/2, S/4, …, S/2^L; the AdaIN bottleneck (``g_res_blocks``
    residual blocks, g_widths[-1] channels) runs at S/2^(L+1); L decoder levels come back up to S/2.
    """

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = cfg.g_widths
        self.stem = _conv(6, widths[0], 4, stride=2)  # (B,w0,S/2,S/2)
        self.down = nn.ModuleList(_conv(widths[i - 1], widths[i], 3, stride=2) for i in range(1, len(widths)))
        self.down_norm = nn.ModuleList(nn.InstanceNorm2d(w, affine=True) for w in widths)
        self.bottom = _conv(widths[-1], widths[-1], 3, stride=2)  # (B,C,S/2^L,S/2^L)
        c = widths[-1]
        self.res = nn.ModuleList(ResAdaIN(c) for _ in range(cfg.g_res_blocks))
        self.up = nn.ModuleList()
        self.attn = nn.ModuleDict()
        res = cfg.image_size // 2 ** (len(widths) + 1)
        for w in reversed(widths):
            self.up.append(UpAdaIN(c, w))
            c, res = w, res * 2
            if res == cfg.attn_res:
                self.attn[str(len(self.up) - 1)] = SelfAttention(c)
        self.out_norm = AdaIN(c)
        self.head = nn.Conv2d(c + 6, 4, 3, padding=1)  # Δ (3) and the mask logit (1) at full size
        nn.init.zeros_(self.head.weight)  # Δ = 0, m = ½: the untrained model returns the warp
        nn.init.zeros_(self.head.bias)
        self.confidence = ShotConfidence(widths[0])
        adain = [*self.res, *self.up, self.out_norm]
        self._splits = [m.n_params for m in adain]
        self.n_adain = sum(self._splits)
        # P: the projection ê -> ψ̂ (Sec. 3.2), a plain matrix as in the paper.
        self.P = nn.Parameter(torch.randn(self.n_adain, cfg.emb_dim) * 0.02)

    uses_warp = True  # needs the source shots warped to the target landmarks

    def project(self, e: torch.Tensor) -> torch.Tensor:
        """ψ̂ = P·ê: (B,N) → (B,n_adain)."""
        return F.linear(e, self.P)

    def blend_shots(self, warped: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """W = Σ_k c_k · warp_k (B,3,S,S) and the confidences c (B,K,1,S,S); K = 1 is the warp itself."""
        if warped.shape[1] == 1:
            return warped[:, 0], torch.ones_like(warped[:, :, :1])
        c = self.confidence(warped, y)
        return (c * warped).sum(1), c

    def features(self, y: torch.Tensor, psi: torch.Tensor, warped: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Everything before the output head: the decoder's features h (B,w0,S/2,S/2) after AdaIN and ReLU,
        W (B,3,S,S) and the confidences c (B,K,1,S,S)."""
        s = self.cfg.image_size
        assert y.shape[1:] == (3, s, s) and psi.shape == (y.shape[0], self.n_adain), (y.shape, psi.shape)
        assert warped.dim() == 5 and warped.shape[0] == y.shape[0] and warped.shape[2:] == (3, s, s), warped.shape
        w, conf = self.blend_shots(warped, y)  # (B,3,S,S), (B,K,1,S,S)
        parts = iter(psi.split(self._splits, dim=1))
        x_in = torch.cat([y, w], 1)  # (B,6,S,S)
        skips = []
        h = F.relu(self.down_norm[0](self.stem(x_in)))  # (B,w0,S/2,S/2), plain IN
        skips.append(h)
        for conv, norm in zip(self.down, self.down_norm[1:]):
            h = F.relu(norm(conv(h)))  # (B,w_i,S/2^(i+1),..)
            skips.append(h)
        h = self.bottom(h)  # (B,C,S/2^L,..)
        for blk in self.res:
            h = blk(h, next(parts))  # AdaIN residual blocks
        for i, blk in enumerate(self.up):
            h = blk(h, skips[-1 - i], next(parts))  # (B,w,2h,2w)
            if str(i) in self.attn:
                h = self.attn[str(i)](h)
        return F.relu(self.out_norm(h, next(parts))), w, conf  # (B,w0,S/2,S/2)

    @staticmethod
    def compose(o: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """The head's output o (B,4,S,S) → x̂ = m·W + (1 − m)·(W + Δ) and its parts."""
        delta, mask = o[:, :3], torch.sigmoid(o[:, 3:])
        painted = w + delta
        return {"out": mask * w + (1.0 - mask) * painted, "warp": w, "painted": painted, "mask": mask}

    def forward_maps(self, y: torch.Tensor, psi: torch.Tensor, warped: torch.Tensor) -> dict[str, torch.Tensor]:
        """All intermediate images: ``out``, ``warp`` (W), ``painted``, ``mask`` (B,1,S,S), ``confidence``."""
        h, w, conf = self.features(y, psi, warped)
        h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)  # (B,w0,S,S)
        return {**self.compose(self.head(torch.cat([h, w, y], 1)), w), "confidence": conf}  # head: (B,4,S,S)

    def forward(self, y: torch.Tensor, psi: torch.Tensor, warped: torch.Tensor | None = None) -> torch.Tensor:
        # y (B,3,S,S), psi (B,n_adain), warped (B,K,3,S,S) in [-1,1] -> x̂ (B,3,S,S) (not clamped)
        if warped is None:
            raise ValueError("the warp-guided generator needs the warped source shots")
        return self.forward_maps(y, psi, warped)["out"]
