"""Typed, frozen configuration of the talking-head model and its meta-training (Zakharov et al. 2019).

Named presets: ``tiny`` (tests; ``tiny2019`` with the 2019 generator), ``cpu`` (the bundled default model:
the warp-guided generator at 256 px), ``cpu2019`` (the first bundled model: the 2019 generator at 128 px) and
``paper`` (the published 256 px setup, Sec. 4 / Appendix). A config is plain data: it is printed by ``--dry-run``,
stored in ``RUN/config.json``, in every checkpoint and in every exported model file.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from synth.errors import UserError


@dataclass(frozen=True)
class NetConfig:
    """Architecture of E, G and D (paper Sec. 3.2 and the Appendix)."""

    image_size: int = 128
    """Side of the square face crop the networks see (256 in the paper)."""
    generator: str = "adain"
    """``adain``: the 2019 generator, every pixel painted from the landmark image (synth.nets.generator);
    ``warp``: the warp-guided generator, the source shots warped to the target landmarks and fixed by the same
    AdaIN network through a blend mask (synth.nets.warp_generator)."""
    embed_size: int = 0
    """Side at which E sees its frames (0 = image_size); identity does not need full resolution."""
    emb_dim: int = 512
    """N: size of the embedding ê and of D's projection vectors W_i, w0."""
    g_widths: tuple[int, ...] = (32, 64, 128)
    """Generator down-block output channels; each block halves the resolution (up-blocks mirror it)."""
    g_res_blocks: int = 4
    """Residual AdaIN blocks at the generator's bottleneck."""
    e_widths: tuple[int, ...] = (32, 64, 128, 256)
    """Embedder down-block channels; a last down-block maps to emb_dim."""
    d_widths: tuple[int, ...] = (32, 64, 128, 256)
    """Discriminator down-block channels; a last down-block maps to emb_dim, then one residual block."""
    attn_res: int = 16
    """Feature-map side where self-attention sits (32 at 256 px in the paper)."""
    num_videos: int = 1
    """Number of training videos = columns of D's W (set from the data at meta-training time)."""


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (paper Sec. 3.2, Eq. 1-5). Content = pixel L1 + multi-scale SSIM unless ``vgg``."""

    content: str = "l1_msssim"
    """``l1_msssim`` (no pretrained nets needed) or ``vgg`` (VGG19 + VGGFace perceptual, as published)."""
    w_l1: float = 10.0
    w_msssim: float = 5.0
    ms_scales: int = 3
    w_vgg19: float = 1.5e-1
    w_vggface: float = 2.5e-2
    w_id: float = 0.0
    """Identity term 1 − cos of dlib face-ResNet descriptors, fake vs real (``losses.IdentityLoss``; 0 = off)."""
    w_idfeat: float = 0.0
    """Face-perceptual term: L1 of channel-normalised dlib face-ResNet feature maps (0 = off)."""
    w_adv: float = 1.0
    w_fm: float = 10.0
    w_mch: float = 80.0


@dataclass(frozen=True)
class TrainConfig:
    """Meta-learning schedule (paper Sec. 3.2 and 4): episodes of K+1 frames of one video."""

    k_shot: int = 8
    batch: int = 1
    lr_g: float = 5e-5
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.999)
    seed: int = 0
    ckpt_every: int = 200
    sample_every: int = 200
    log_every: int = 10
    keep_checkpoints: int = 3


@dataclass(frozen=True)
class Config:
    """Everything that defines a meta-training run (and, for the net part, a trained model)."""

    preset: str = "cpu"
    net: NetConfig = field(default_factory=NetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def with_preset(self, name: str) -> Config:
        return dataclasses.replace(self, preset=name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Config:
        """Inverse of ``to_dict``; unknown keys fail loudly (no silent typos)."""

        def build(cls: type, values: dict[str, Any]) -> Any:
            names = {f.name: f for f in dataclasses.fields(cls)}
            unknown = set(values) - set(names)
            if unknown:
                raise UserError(f"unknown {cls.__name__} fields in config: {sorted(unknown)}")
            out = {}
            for k, v in values.items():
                out[k] = tuple(v) if isinstance(v, list) else v
            return cls(**out)

        return Config(
            preset=d.get("preset", "custom"),
            net=build(NetConfig, d.get("net", {})),
            loss=build(LossConfig, d.get("loss", {})),
            train=build(TrainConfig, d.get("train", {})),
        )

    @staticmethod
    def from_json(text: str) -> Config:
        return Config.from_dict(json.loads(text))


def _tiny() -> Config:
    return Config(
        preset="tiny",
        net=NetConfig(
            image_size=32,
            generator="warp",
            emb_dim=16,
            g_widths=(8, 16),
            g_res_blocks=1,
            e_widths=(8, 16),
            d_widths=(8, 16),
            attn_res=16,
        ),
        train=TrainConfig(k_shot=2, batch=2, ckpt_every=2, sample_every=2, log_every=1),
    )


def _cpu() -> Config:
    # The bundled default (Dec 2026): the warp-guided generator at native 256 px, sized for >= 40 fps on two
    # CPU threads (bench/bench_model.py); E sees 128 px; a narrow 6-level D. K=4 in meta-learning.
    return Config(
        preset="cpu",
        net=NetConfig(
            image_size=256,
            generator="warp",
            embed_size=128,
            emb_dim=256,
            g_widths=(16, 32, 64, 128),
            g_res_blocks=4,
            e_widths=(16, 32, 64, 128),
            d_widths=(8, 16, 32, 64, 128),
            attn_res=16,  # 32 (the paper's place) costs 17 % of a training step on a CPU: 1024 tokens
        ),
        train=TrainConfig(k_shot=4, batch=2, lr_g=2e-4, lr_d=4e-4, ckpt_every=250, sample_every=250),
    )


def _cpu2019() -> Config:
    # The first bundled model (Nov 2026), kept for comparison: the 2019 generator at 128 px, chosen by
    # measurement on a 2-core CPU (docs/MODEL.md). Learning rates 2x the paper's (not A/B-measured).
    return Config(
        preset="cpu2019",
        net=NetConfig(
            image_size=128,
            emb_dim=256,
            g_widths=(32, 64, 128),
            g_res_blocks=3,
            e_widths=(16, 32, 64, 128),
            d_widths=(16, 32, 64, 128),
            attn_res=32,
        ),
        train=TrainConfig(k_shot=4, batch=1, lr_g=1e-4, lr_d=4e-4, ckpt_every=250, sample_every=250),
    )


def _paper() -> Config:
    return Config(
        preset="paper",
        net=NetConfig(
            image_size=256,
            emb_dim=512,
            g_widths=(64, 128, 256, 512),
            g_res_blocks=5,
            e_widths=(64, 128, 256, 512, 512),
            d_widths=(64, 128, 256, 512, 512),
            attn_res=32,
        ),
        loss=LossConfig(content="vgg", w_l1=0.0, w_msssim=0.0),
        train=TrainConfig(k_shot=8, batch=48, ckpt_every=1000, sample_every=1000, log_every=50),
    )


def _tiny2019() -> Config:
    return replace(_tiny(), net={"generator": "adain"}).with_preset("tiny2019")


PRESETS = {"tiny": _tiny, "tiny2019": _tiny2019, "cpu": _cpu, "cpu2019": _cpu2019, "paper": _paper}


def preset(name: str) -> Config:
    """The named preset (``tiny``, ``tiny2019``, ``cpu``, ``cpu2019``, ``paper``)."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    return PRESETS[name]()


def replace(cfg: Config, **sections: dict[str, Any]) -> Config:
    """``replace(cfg, train={"batch": 4})``: a copy with some fields of some sections changed."""
    out = cfg
    for sec, values in sections.items():
        if values:
            out = dataclasses.replace(out, **{sec: dataclasses.replace(getattr(out, sec), **values)})
    return out


DEFAULT_STEPS = {"tiny": 4, "tiny2019": 4, "cpu": 20000, "cpu2019": 20000, "paper": 500000}
"""Total steps ``th meta-train`` aims for when --steps is not given (progress is counted in steps)."""
