"""Building blocks shared by E, G and D (Zakharov et al. 2019, Sec. 3.2 and Appendix A).

Residual down- and up-blocks follow BigGAN (Brock et al. 2019), self-attention follows SAGAN (Zhang
et al. 2019), AdaIN follows Huang & Belongie 2017. Spectral normalisation (Miyato et al. 2018) wraps
every convolution, as in the paper ("spectral normalization for all convolutional layers").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def sn_conv(cin: int, cout: int, k: int) -> nn.Module:
    """A spectrally normalised k×k convolution with 'same' padding."""
    return spectral_norm(nn.Conv2d(cin, cout, k, padding=k // 2))


class AdaIN(nn.Module):
    """Adaptive instance norm: IN(x)·(1+γ) + β with (γ, β) given per sample (the slice of ψ̂ = P·ê).

    ``1+γ`` keeps the block near identity when ψ̂ ≈ 0 at initialisation.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.n_params = 2 * channels

    def forward(self, x: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        # x (B,C,H,W), psi (B,2C) -> (B,C,H,W)
        gamma, beta = psi.view(psi.shape[0], 2, self.channels, 1, 1).unbind(1)
        return F.instance_norm(x, eps=1e-5) * (1.0 + gamma) + beta


class ResDown(nn.Module):
    """Residual down-block: [norm]→ReLU→conv3→[norm]→ReLU→conv3→avgpool, skip conv1→avgpool.

    ``norm`` is instance norm (generator's landmark encoder) or none (E, D). ``preact=False`` for the
    first block, so that a [-1, 1] image is not clipped by a ReLU.
    """

    def __init__(self, cin: int, cout: int, norm: bool = False, preact: bool = True, down: bool = True) -> None:
        super().__init__()
        self.preact = preact
        self.down = down
        self.norm1 = nn.InstanceNorm2d(cin, affine=True) if norm else nn.Identity()
        self.conv1 = sn_conv(cin, cout, 3)
        self.norm2 = nn.InstanceNorm2d(cout, affine=True) if norm else nn.Identity()
        self.conv2 = sn_conv(cout, cout, 3)
        self.skip = sn_conv(cin, cout, 1) if (cin != cout or down) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (B,cin,H,W) -> (B,cout,H/2,W/2) (or H,W when down=False)
        h = self.norm1(x)
        if self.preact:
            h = F.relu(h)
        h = self.conv2(F.relu(self.norm2(self.conv1(h))))
        out = h + self.skip(x)
        return F.avg_pool2d(out, 2) if self.down else out  # pooling is linear: pool(h) + pool(s) in one call


class ResAdaIN(nn.Module):
    """Residual block with AdaIN (generator bottleneck): AdaIN→ReLU→conv3→AdaIN→ReLU→conv3, + x."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.n1 = AdaIN(channels)
        self.conv1 = sn_conv(channels, channels, 3)
        self.n2 = AdaIN(channels)
        self.conv2 = sn_conv(channels, channels, 3)
        self.n_params = self.n1.n_params + self.n2.n_params

    def forward(self, x: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        # x (B,C,H,W), psi (B,n_params) -> (B,C,H,W)
        p1, p2 = psi.split([self.n1.n_params, self.n2.n_params], dim=1)
        h = self.conv1(F.relu(self.n1(x, p1)))
        h = self.conv2(F.relu(self.n2(h, p2)))
        return x + h


class ResUpAdaIN(nn.Module):
    """Residual up-block with AdaIN: AdaIN→ReLU→up×2→conv3→AdaIN→ReLU→conv3, skip conv1→up×2."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.n1 = AdaIN(cin)
        self.conv1 = sn_conv(cin, cout, 3)
        self.n2 = AdaIN(cout)
        self.conv2 = sn_conv(cout, cout, 3)
        self.skip = sn_conv(cin, cout, 1)
        self.n_params = self.n1.n_params + self.n2.n_params

    def forward(self, x: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        # x (B,cin,H,W), psi (B,n_params) -> (B,cout,2H,2W)
        p1, p2 = psi.split([self.n1.n_params, self.n2.n_params], dim=1)
        h = F.interpolate(F.relu(self.n1(x, p1)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.n2(self.conv1(h), p2)))
        # a 1×1 conv commutes with nearest upsampling: convolve first (exactly equal, ~3× cheaper)
        s = F.interpolate(self.skip(x), scale_factor=2.0, mode="nearest")
        return h + s


class SelfAttention(nn.Module):
    """SAGAN self-attention: x + γ·(softmax(QᵀK)·V), γ initialised to 0 (a no-op at the start)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(1, channels // 8)
        self.q = spectral_norm(nn.Conv2d(channels, inner, 1))
        self.k = spectral_norm(nn.Conv2d(channels, inner, 1))
        self.v = spectral_norm(nn.Conv2d(channels, channels, 1))
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (B,C,H,W) -> (B,C,H,W)
        b, c, h, w = x.shape
        q = self.q(x).flatten(2).transpose(1, 2)  # (B,HW,C')
        k = self.k(x).flatten(2).transpose(1, 2)  # (B,HW,C')
        v = self.v(x).flatten(2).transpose(1, 2)  # (B,HW,C)
        # scaled_dot_product_attention divides by sqrt(C'); the scale is absorbed by the learned q/k.
        o = F.scaled_dot_product_attention(q, k, v)  # (B,HW,C)
        return x + self.gamma * o.transpose(1, 2).reshape(b, c, h, w)


def down_stack(
    cin: int, widths: tuple[int, ...], image_size: int, attn_res: int, norm: bool
) -> tuple[nn.ModuleList, list[int]]:
    """Residual down-blocks with the given output widths (+ self-attention where the side = attn_res).

    Returns the blocks and, per entry, the output channels (for feature matching and shape checks).
    """
    blocks = nn.ModuleList()
    chans = []
    c, res = cin, image_size
    for i, w in enumerate(widths):
        blocks.append(ResDown(c, w, norm=norm, preact=i > 0))
        c, res = w, res // 2
        chans.append(c)
        if res == attn_res:
            blocks.append(SelfAttention(c))
            chans.append(c)
    return blocks, chans
