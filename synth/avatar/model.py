"""A trained talking-head model as one object with verbs: load, embed, generate (Zakharov et al. 2019).

``TalkingHeadModel.load(path)`` accepts a meta-training checkpoint or an exported model file
(``export_model``: fp32 safetensors with E, G and D without the per-video columns W — w0 and b are
kept for fine-tuning — and the config as JSON metadata). Inference uses copies of the networks
with spectral norm folded into plain weights.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from synth.errors import UserError
from synth.media.atomic import atomic_path
from synth.nets.config import Config, replace
from synth.nets.discriminator import Discriminator
from synth.nets.embedder import Embedder
from synth.nets.generator import Generator, build_generator
from synth.train.checkpoint import FORMAT as CKPT_FORMAT
from synth.train.checkpoint import list_checkpoints, load_checkpoint, load_latest, read_metadata

MODEL_FORMAT = "th-model"
MODEL_FORMAT_VERSION = 1


def images_to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 RGB (T,S,S,3) → float32 (T,3,S,S) in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return t.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """float (T,3,S,S) in [-1, 1] → uint8 RGB (T,S,S,3)."""
    return ((x.detach().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def inference_copy(module: nn.Module) -> nn.Module:
    """What animation runs in torch: spectral norm folded, eval mode. (Channels-last weights were tried:
    23.0 vs 21.1 fps for NCHW vs channels-last, warp-guided G at 256 px, 2 quiet threads, bench_model.py;
    `th animate` runs the same folded network in ONNX Runtime by default, synth.avatar.runtime.)"""
    return fold_spectral_norm(module)


def fold_spectral_norm(module: nn.Module) -> nn.Module:
    """An eval-mode copy of ``module`` whose spectrally normalised convolutions are plain ones (W/σ).

    Built by swapping in new ``nn.Conv2d`` modules: torch's ``remove_parametrizations`` edits the
    parametrised class, which a deepcopy shares with the original, and would break the original.
    """
    from torch.nn.utils import parametrize

    with torch.no_grad():
        m = copy.deepcopy(module).eval()
        for parent in list(m.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Conv2d) and parametrize.is_parametrized(child, "weight"):
                    plain = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                      child.padding, child.dilation, child.groups, child.bias is not None)
                    plain.weight.copy_(child.weight)
                    if child.bias is not None:
                        plain.bias.copy_(child.bias)
                    setattr(parent, name, plain.to(child.bias.device if child.bias is not None else "cpu"))
    return m.eval().requires_grad_(False)


class TalkingHeadModel:
    """E, G (with P) and D of a trained model plus its config."""

    def __init__(self, config: Config, embedder: Embedder, generator: Generator, discriminator: Discriminator,
                 device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.E = embedder.to(self.device).eval()
        self.G = generator.to(self.device).eval()
        self.D = discriminator.to(self.device).eval()
        self._fast_g: Generator | None = None
        self._fast_e: Embedder | None = None

    @property
    def image_size(self) -> int:
        return self.config.net.image_size

    @staticmethod
    def build(config: Config, device: torch.device | str = "cpu") -> TalkingHeadModel:
        """A model with freshly initialised weights (tests, benchmarks)."""
        return TalkingHeadModel(config, Embedder(config.net), build_generator(config.net), Discriminator(config.net),
                                device)

    @staticmethod
    def load(path: Path | str, device: torch.device | str = "cpu") -> TalkingHeadModel:
        """Load an exported model file, a checkpoint file, or a run folder's latest checkpoint."""
        path = Path(path)
        if path.is_dir():
            if not list_checkpoints(path):
                raise UserError(f"{path} has no checkpoints")
            latest = load_latest(path)  # the newest readable one: a damaged newest is skipped with a warning
            if latest is None:
                raise UserError(f"{path} has no readable checkpoint")
            path = latest.path
        if not path.is_file():
            raise UserError(f"model not found: {path}")
        try:
            meta = read_metadata(path)
        except Exception as e:  # safetensors raises its own error types for non-safetensors files
            raise UserError(f"{path} is not a th model file ({e})") from e
        if meta.get("format") == CKPT_FORMAT:
            ckpt = load_checkpoint(path)
            cfg, states = ckpt.config, ckpt.modules
        elif meta.get("format") == MODEL_FORMAT:
            if int(meta.get("format_version", "0")) > MODEL_FORMAT_VERSION:
                raise UserError(f"{path} needs a newer th (model format {meta['format_version']})")
            cfg = Config.from_json(meta["config"])
            states = {}
            for name, t in load_file(str(path)).items():
                head, rest = name.split("/", 1)
                states.setdefault(head, {})[rest] = t
        else:
            raise UserError(f"{path} is not a th model or checkpoint")
        model = TalkingHeadModel.build(cfg, "cpu")
        for name, m in (("E", model.E), ("G", model.G), ("D", model.D)):
            m.load_state_dict(states[name])
        model.E.to(device)
        model.G.to(device)
        model.D.to(device)
        model.device = torch.device(device)
        return model

    def fast_generator(self) -> Generator:
        if self._fast_g is None:
            self._fast_g = inference_copy(self.G)
        return self._fast_g

    @torch.no_grad()
    def embed(self, frames: torch.Tensor, landmark_images: torch.Tensor) -> torch.Tensor:
        """Person vector ê (N,) from K frames and their landmark images, (K,3,S,S) in [-1, 1] (Eq. 2)."""
        if self._fast_e is None:
            self._fast_e = fold_spectral_norm(self.E)
        return self._fast_e(frames[None].to(self.device), landmark_images[None].to(self.device))[0]

    @property
    def uses_warp(self) -> bool:
        """True for the warp-guided generator: it needs the source shots warped to every target."""
        return bool(getattr(self.G, "uses_warp", False))

    @torch.no_grad()
    def generate(self, landmark_images: torch.Tensor, e_hat: torch.Tensor | None = None,
                 psi: torch.Tensor | None = None, generator: nn.Module | None = None,
                 warped: torch.Tensor | None = None) -> torch.Tensor:
        """Frames (T,3,S,S) in [-1, 1] for landmark images (T,3,S,S), given ê (N,) or AdaIN params ψ.

        ``generator`` overrides the meta-learned G (e.g. a fine-tuned, folded one); ``warped`` (T,K,3,S,S)
        are the source shots warped to each target (needed by the warp-guided generator).
        """
        g = generator if generator is not None else self.fast_generator()
        if psi is None:
            if e_hat is None:
                raise ValueError("generate needs e_hat or psi")
            psi = g.project(e_hat.to(self.device)[None])[0]
        y = landmark_images.to(self.device)
        w = None if warped is None else warped.to(self.device)
        return g(y, psi.to(self.device)[None].expand(y.shape[0], -1), w).clamp(-1, 1)

    def export(self, out: Path | str, force: bool = False) -> str:
        """Write the inference model file (see module docstring); returns its sha256."""
        cfg = replace(self.config, net={"num_videos": 0})
        tensors = {}
        for name, m in (("E", self.E), ("G", self.G), ("D", self.D)):
            for k, v in m.state_dict().items():
                if name == "D" and k == "W":
                    v = v[:0]
                tensors[f"{name}/{k}"] = v.detach().float().cpu().contiguous().clone()
        meta = {"format": MODEL_FORMAT, "format_version": str(MODEL_FORMAT_VERSION), "config": cfg.to_json()}
        out = Path(out)
        with atomic_path(out, force=force) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
            os.chmod(tmp, 0o644)
        return hashlib.sha256(out.read_bytes()).hexdigest()


def export_model(run_or_ckpt: Path | str, out: Path | str, force: bool = False) -> str:
    """Export a run's latest checkpoint (or a given checkpoint) as an inference model; returns sha256.

    Also writes ``out.sha256`` next to it.
    """
    model = TalkingHeadModel.load(run_or_ckpt)
    digest = model.export(out, force=force)
    side = Path(str(out) + ".sha256")
    with atomic_path(side, force=True) as tmp:
        tmp.write_text(f"{digest}  {Path(out).name}\n")
    return digest


def describe(path: Path | str) -> dict:
    """Format, config and sizes of a model file (for reports and model cards)."""
    meta = read_metadata(Path(path))
    return {"format": meta.get("format"), "config": json.loads(meta.get("config", "{}")),
            "bytes": Path(path).stat().st_size}
