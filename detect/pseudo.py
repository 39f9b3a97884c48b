"""Pseudo-fakes: artefact families of other face-animation tools, made from real frames alone.

No other tool's output is used for training (``foreign_fakes`` is for evaluation only), so the detector
learns the *traces* other methods leave, synthesised here from real crops:

* ``sbi`` — self-blended images (Shiohara & Yamasaki, CVPR 2022): a real face blended into itself after a
  colour, sharpness and slight scale/shift change, through a deformed, feathered landmark mask. It
  carries the blending boundary and colour mismatch of every tool that pastes a rendered face back into a
  frame (SadTalker's full mode, lip-sync and swap tools), without any generator's fingerprint.
* ``ae-deconv``, ``ae-nearest``, ``ae-shuffle`` — real crops reconstructed by tiny convolutional
  autoencoders (4× down, two up-sampling stages of one kind each), trained for a few hundred steps on
  the train identities' real crops: the up-sampling traces that NPR (CVPR 2024) finds common to GAN and
  diffusion decoders, on faces that are otherwise real.

Every function is seeded; nothing here reads a file.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

AE_KINDS = ("deconv", "nearest", "shuffle")


def _hull_mask(landmarks: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """float32 (size,size) blend mask: the landmarks' hull (brows lifted or not), deformed, blurred."""
    import cv2

    lm = np.asarray(landmarks, np.float64).copy()
    pts = lm[:27].copy() if rng.random() < 0.5 else lm.copy()
    if rng.random() < 0.5:  # cover the forehead too, as a face-swap mask does
        eyes_y = lm[36:48, 1].mean()
        brows = pts[17:27] if len(pts) > 27 else pts[17:]
        brows[:, 1] -= 0.5 * (eyes_y - brows[:, 1]).clip(min=0)
    pts = pts + rng.normal(0, 0.01 * size, pts.shape)  # a landmark detector's jitter
    mask = np.zeros((size, size), np.float32)
    cv2.fillConvexPoly(mask, cv2.convexHull(pts.round().astype(np.int32)), 1.0)
    k = int(rng.integers(1, max(2, size // 24)))
    kernel = np.ones((2 * k + 1, 2 * k + 1), np.uint8)
    mask = cv2.erode(mask, kernel) if rng.random() < 0.5 else cv2.dilate(mask, kernel)
    sigma = rng.uniform(0.01, 0.05) * size
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def _jittered_source(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The SBI source: the same frame with colour, sharpness and a small geometric change."""
    import cv2

    s = img.shape[0]
    f = img.astype(np.float32)
    f = f * rng.uniform(0.96, 1.04, 3)[None, None] + rng.uniform(-8, 8, 3)[None, None]  # per-channel gain/shift
    mean = f.mean()
    f = (f - mean) * rng.uniform(0.92, 1.08) + mean
    hsv = cv2.cvtColor(np.clip(f, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-2, 3))) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.9, 1.1), 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    r = rng.random()
    if r < 0.33:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
    elif r < 0.66:
        blur = cv2.GaussianBlur(out, (0, 0), 1.0)
        out = np.clip(out.astype(np.float32) * 1.6 - blur.astype(np.float32) * 0.6, 0, 255).astype(np.uint8)
    sc = rng.uniform(0.95, 1.05)
    dx, dy = rng.uniform(-0.03, 0.03, 2) * s
    M = np.array([[sc, 0, (1 - sc) * s / 2 + dx], [0, sc, (1 - sc) * s / 2 + dy]], np.float64)
    return cv2.warpAffine(out, M, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def self_blended(frames: np.ndarray, landmarks: np.ndarray, seed: int) -> np.ndarray:
    """One SBI per frame: uint8 (N,s,s,3) crops + their landmarks in crop pixels → uint8 (N,s,s,3)."""
    rng = np.random.default_rng([seed, 1])
    out = []
    for img, lm in zip(frames, landmarks):
        src = _jittered_source(img, rng)
        m = _hull_mask(lm, img.shape[0], rng)[..., None] * rng.choice([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
        out.append((src * m + img * (1 - m) + 0.5).clip(0, 255).astype(np.uint8))
    return np.stack(out)


def _autoencoder(kind: str):
    import torch.nn as nn

    def up(cin: int, cout: int) -> nn.Module:
        if kind == "deconv":
            return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
        if kind == "nearest":
            return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1))
        if kind == "shuffle":
            return nn.Sequential(nn.Conv2d(cin, cout * 4, 3, padding=1), nn.PixelShuffle(2))
        raise ValueError(f"unknown up-sampler {kind}")

    act = nn.LeakyReLU(0.2)
    return nn.Sequential(
        nn.Conv2d(3, 32, 4, 2, 1), act, nn.Conv2d(32, 64, 4, 2, 1), act, nn.Conv2d(64, 64, 3, padding=1), act,
        up(64, 32), act, up(32, 24), act, nn.Conv2d(24, 3, 3, padding=1), nn.Sigmoid())


def train_autoencoders(crops: np.ndarray, seed: int, steps: int = 250, size: int = 128, patch: int = 64,
                       log: Callable[[str], None] = print) -> dict[str, object]:
    """One tiny autoencoder per up-sampler kind, fitted (L1) on ``patch`` px patches of real crops resized to
    ``size`` (fully convolutional: patches train it as well as whole crops, 4× cheaper)."""
    import torch

    from detect.data import resize_to

    x_all = resize_to(crops, size)
    nets = {}
    for j, kind in enumerate(AE_KINDS):
        torch.manual_seed(seed * 31 + j)
        net = _autoencoder(kind)
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        rng = np.random.default_rng([seed, j, 2])
        for _ in range(steps):
            idx = rng.choice(len(x_all), 16)
            y0, x0 = rng.integers(0, size - patch + 1, 2) // 8 * 8
            x = torch.from_numpy(x_all[idx, y0:y0 + patch, x0:x0 + patch]).permute(0, 3, 1, 2).float() / 255.0
            loss = (net(x) - x).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        log(f"autoencoder {kind}: L1 {loss.item():.4f} after {steps} steps")
        nets[kind] = net.eval()
    return nets


def reconstructed(frames: np.ndarray, net, size: int = 128) -> np.ndarray:
    """Real crops through one autoencoder at ``size`` px, returned at the crops' own size."""
    import torch

    from detect.data import resize_to

    x = torch.from_numpy(resize_to(frames, size)).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        y = (net(x).clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return resize_to(np.ascontiguousarray(y), frames.shape[1])
