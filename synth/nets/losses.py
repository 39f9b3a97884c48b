"""Losses of Zakharov et al. 2019 (Sec. 3.2, Eq. 1-6) as plain functions on tensors.

Images are (B,3,H,W) in [-1, 1]. Realism scores are (B,). The default content loss needs no
pretrained networks (pixel L1 + multi-scale SSIM); the paper's VGG19 + VGGFace perceptual loss is
available from local weight files (both are Caffe models: BGR, 0-255, mean-subtracted input). The installed
dlib face-recognition ResNet gives identity and face-perceptual terms in VGGFace's place (IdentityLoss).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from synth.errors import UserError
from synth.faces.chip import cut_chips
from synth.nets.config import LossConfig
from synth.nets.face_resnet import CHIP_PADDING, CHIP_SIZE, FEATURE_STAGES, FaceResNet, load_face_resnet

# Caffe per-channel means in BGR order, 0-255 (Simonyan & Zisserman 2015; Parkhi et al. 2015).
VGG19_MEAN_BGR = (103.939, 116.779, 123.68)
VGGFACE_MEAN_BGR = (93.5940, 104.7624, 129.1863)
# relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (VGG19) / relu1_1 ... relu5_1 (VGGFace = VGG16).
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_TAPS19 = (0, 2, 4, 8, 12)  # conv index (0-based, counting convs) whose ReLU output is used
_TAPS16 = (0, 2, 4, 7, 10)


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference."""
    return (x - y).abs().mean()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 7, data_range: float = 2.0) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004) with a uniform window, per image → (B,). Padding-free ('valid')."""
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    w = min(window, x.shape[-1], x.shape[-2])
    # the five local means in one separable box filter (w×1 then 1×w: the same average, ~3x cheaper)
    c = x.shape[1]
    m = F.avg_pool2d(F.avg_pool2d(torch.cat([x, y, x * x, y * y, x * y], 1), (1, w), 1), (w, 1), 1)
    mu_x, mu_y, exx, eyy, exy = m.split(c, dim=1)
    sxx = exx - mu_x**2
    syy = eyy - mu_y**2
    sxy = exy - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(dim=1)


def multiscale_ssim_loss(x: torch.Tensor, y: torch.Tensor, scales: int = 3) -> torch.Tensor:
    """Multi-scale structural loss: mean over scales (×½ each) of 1 − SSIM; our VGG-free content term."""
    total = x.new_zeros(())
    for s in range(scales):
        if s:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        total = total + (1.0 - ssim(x, y)).mean()
    return total / scales


def adversarial_g(r_fake: torch.Tensor) -> torch.Tensor:
    """Generator's adversarial term −D(x̂) (Eq. 3, first part): minimising it raises fake realism."""
    return -r_fake.mean()


def feature_matching(feats_fake: list[torch.Tensor], feats_real: list[torch.Tensor]) -> torch.Tensor:
    """Feature matching (Eq. 3, L_FM): Σ over D's blocks of the mean L1 between fake and real features.

    Real features are detached: this term trains E and G, not D.
    """
    total = feats_fake[0].new_zeros(())
    for f, r in zip(feats_fake, feats_real, strict=True):
        total = total + l1(f, r.detach())
    return total


def embedding_match(w: torch.Tensor, e_hat: torch.Tensor) -> torch.Tensor:
    """L_MCH = ‖W_i − ê_i‖₁ (Eq. 5), as the mean over the batch and the N dimensions."""
    return (w - e_hat).abs().mean()


def hinge_d(r_real: torch.Tensor, r_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss (Eq. 6): mean(relu(1 + D(fake))) + mean(relu(1 − D(real)))."""
    return F.relu(1.0 + r_fake).mean() + F.relu(1.0 - r_real).mean()


def caffe_preprocess(x: torch.Tensor, mean_bgr: tuple[float, float, float]) -> torch.Tensor:
    """RGB in [-1, 1] → Caffe input: BGR channel order, 0-255 range, per-channel mean subtracted."""
    bgr = x.flip(1)  # RGB -> BGR
    mean = torch.tensor(mean_bgr, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (bgr + 1.0) * 127.5 - mean


def _natural_key(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class CaffeVGG(nn.Module):
    """A frozen VGG feature extractor (VGG19 or VGGFace/VGG16) returning the relu*_1 activations."""

    def __init__(self, cfg: tuple, taps: tuple[int, ...], mean_bgr: tuple[float, float, float]) -> None:
        super().__init__()
        self.mean_bgr = mean_bgr
        self.taps = taps
        layers: list[nn.Module] = []
        cin = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(nn.Conv2d(cin, int(v), 3, padding=1))
                cin = int(v)
        self.layers = nn.ModuleList(layers)
        self.requires_grad_(False)

    def load_weights(self, path: Path) -> None:
        """Load conv weights from a state dict (.safetensors, or a tensor-only .pth/.pt).

        Any naming works (torchvision ``features.N``, Caffe ``conv1_1`` ...): the conv kernels (4-D) are
        taken in natural key order, which is the network's order in both conventions, each with the bias
        of the same name (``…weight`` → ``…bias``); other tensors (a classifier) are ignored.
        """
        path = Path(path)
        if not path.is_file():
            raise UserError(f"VGG weights not found: {path}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        # Each conv's bias is the one named like its kernel: a full torchvision dict also holds the
        # classifier's biases, which sort before "features.*" and must not be taken for conv biases.
        keys = [k for k in sorted(sd, key=_natural_key) if sd[k].ndim == 4]
        convs = [m for m in self.layers if isinstance(m, nn.Conv2d)]
        if len(keys) < len(convs):
            raise UserError(f"{path}: expected {len(convs)} conv layers, found {len(keys)}")
        kernels, biases = [], []
        for k in keys[: len(convs)]:
            head, _, tail = k.rpartition("weight")
            bias_key = f"{head}bias{tail}" if head or tail else ""
            if bias_key not in sd:
                raise UserError(f"{path}: conv kernel {k} has no bias {bias_key or '(unnamed)'}")
            kernels.append(sd[k])
            biases.append(sd[bias_key])
        for conv, k, b in zip(convs, kernels, biases, strict=True):
            if k.shape != conv.weight.shape or b.shape != conv.bias.shape:
                raise UserError(f"{path}: conv weight shape {tuple(k.shape)} != {tuple(conv.weight.shape)}")
            conv.weight.data.copy_(k)
            conv.bias.data.copy_(b)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # x (B,3,H,W) RGB in [-1,1] -> list of relu*_1 activations
        h = caffe_preprocess(x, self.mean_bgr)
        out = []
        n_conv = -1
        for layer in self.layers:
            h = layer(h)
            if isinstance(layer, nn.Conv2d):
                n_conv += 1
                h = F.relu(h)
                if n_conv in self.taps:
                    out.append(h)
                    if n_conv == self.taps[-1]:
                        break
        return out


class Perceptual(nn.Module):
    """The paper's content loss terms L_CNT from VGG19 (ImageNet) and VGGFace (Sec. 3.2, Eq. 1)."""

    def __init__(self, vgg19: Path, vggface: Path) -> None:
        super().__init__()
        self.vgg19 = CaffeVGG(_VGG19_CFG, _TAPS19, VGG19_MEAN_BGR)
        self.vgg19.load_weights(vgg19)
        self.vggface = CaffeVGG(_VGG16_CFG, _TAPS16, VGGFACE_MEAN_BGR)
        self.vggface.load_weights(vggface)
        self.eval()

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(VGG19 term, VGGFace term): Σ over taps of the mean L1 between activations."""
        terms = []
        for net in (self.vgg19, self.vggface):
            with torch.no_grad():
                fr = net(real)
            ff = net(fake)
            terms.append(sum((l1(a, b) for a, b in zip(ff, fr, strict=True)), fake.new_zeros(())))
        return terms[0], terms[1]


def normalised_l1(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Mean L1 between feature maps (B,C,H,W) whose channel vectors are scaled to unit length at every
    position (as LPIPS does), so that every depth weighs the same whatever its activation scale."""
    return (a / (a.norm(dim=1, keepdim=True) + eps) - b / (b.norm(dim=1, keepdim=True) + eps)).abs().mean()


class IdentityLoss(nn.Module):
    """Identity and face-perceptual content terms from dlib's face-recognition ResNet (public domain,
    synth.nets.face_resnet): the role VGGFace plays in the paper's L_CNT (Sec. 3.2, Eq. 1).

    ``loss(fake, real, landmarks_px)``: fake, real (B,3,S,S) RGB in [-1,1]; landmarks_px (B,68,2) (or
    (B,5,2)) the target frame's landmarks in pixels of S. Both images are cut into dlib's 150×150 face chip
    at those landmarks (differentiably, synth.faces.chip.cut_chips) and run through the frozen network; the
    real one without gradient. Returns the weighted total and the unweighted terms
    ``{"id": mean(1 − cos(desc_fake, desc_real)), "idfeat": Σ_depths normalised_l1(maps)}``.
    """

    def __init__(self, w_id: float, w_feat: float, depths: tuple[int, ...] = (0, 1, 2, 3),
                 net: FaceResNet | None = None) -> None:
        super().__init__()
        if not set(depths) <= set(range(len(FEATURE_STAGES))):
            raise UserError(f"identity-loss depths {depths} outside 0..{len(FEATURE_STAGES) - 1}")
        self.w_id, self.w_feat, self.depths = w_id, w_feat, depths
        self.net = net if net is not None else load_face_resnet()
        self.net.requires_grad_(False)

    @staticmethod
    def from_config(cfg: LossConfig) -> IdentityLoss | None:
        """The loss a config asks for (``w_id``, ``w_idfeat``), or None when both weights are 0."""
        return IdentityLoss(cfg.w_id, cfg.w_idfeat) if (cfg.w_id or cfg.w_idfeat) else None

    def forward(self, fake: torch.Tensor, real: torch.Tensor,
                landmarks_px: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if fake.shape != real.shape or fake.shape[0] != landmarks_px.shape[0]:
            raise ValueError(f"fake {tuple(fake.shape)}, real {tuple(real.shape)}, landmarks "
                             f"{tuple(landmarks_px.shape)}: expected (B,3,S,S) twice and (B,68,2)")
        self.net.eval()
        f_fake = self.net(cut_chips(fake, landmarks_px, CHIP_SIZE, CHIP_PADDING))  # maps, (B,128)
        with torch.no_grad():
            f_real = self.net(cut_chips(real, landmarks_px, CHIP_SIZE, CHIP_PADDING))
        terms = {"id": (1.0 - F.cosine_similarity(f_fake.descriptor, f_real.descriptor, dim=1)).mean(),
                 "idfeat": sum((normalised_l1(f_fake.maps[i], f_real.maps[i]) for i in self.depths),
                               fake.new_zeros(()))}
        return self.w_id * terms["id"] + self.w_feat * terms["idfeat"], terms


def content_loss(
    fake: torch.Tensor,
    real: torch.Tensor,
    w_l1: float,
    w_msssim: float,
    ms_scales: int,
    perceptual: Perceptual | None = None,
    w_vgg19: float = 0.0,
    w_vggface: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_CNT (Eq. 1): weighted pixel L1 + multi-scale SSIM (+ VGG19/VGGFace terms when given).

    Returns the weighted total and the unweighted named terms (for logging).
    """
    terms: dict[str, torch.Tensor] = {}
    total = fake.new_zeros(())
    if w_l1:
        terms["l1"] = l1(fake, real)
        total = total + w_l1 * terms["l1"]
    if w_msssim:
        terms["msssim"] = multiscale_ssim_loss(fake, real, ms_scales)
        total = total + w_msssim * terms["msssim"]
    if perceptual is not None:
        terms["vgg19"], terms["vggface"] = perceptual(fake, real)
        total = total + w_vgg19 * terms["vgg19"] + w_vggface * terms["vggface"]
    return total, terms
