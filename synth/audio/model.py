"""The audio-to-landmark network (after MakeItTalk's audio → landmarks → image idea, much smaller).

Per video frame (25 fps) the input is 8 log-mel frames (80 ms around the frame: a little context);
a linear layer embeds them, four dilated residual convolutions over time give ±R frames of context
(past and future: lips move before the sound they make), and a one-way GRU carries the rest of the
past. The output is the mouth-space motion of the 37 jaw and mouth points (``synth.audio.mouth``).

The convolutions are 'valid': the network maps T + 2R frames of features to T outputs, so a long
file can be run chunk by chunk with R frames of overlap and the GRU state carried over, giving
exactly what one pass over the whole file gives (``synth.audio.infer``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from synth.audio import features as F
from synth.audio.mouth import N_MOVING

MEL_PER_FRAME = 4  # 10 ms mel hop, 40 ms video frames
MEL_CONTEXT = 8  # mel frames stacked per video frame: 4t-4 … 4t+3


@dataclass(frozen=True)
class AudioModelConfig:
    """Every hyperparameter of the network, stored in each checkpoint and exported model."""

    channels: int = 192
    gru: int = 192
    dilations: tuple[int, ...] = (1, 2, 4, 1)
    kernel: int = 3
    dropout: float = 0.2
    n_mels: int = F.N_MELS
    n_out: int = 2 * N_MOVING

    @property
    def context(self) -> int:
        """R: frames of context the convolutions need on each side."""
        return sum(d * (self.kernel - 1) // 2 for d in self.dilations)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, s: str) -> AudioModelConfig:
        d = json.loads(s)
        d["dilations"] = tuple(d["dilations"])
        return cls(**d)


PRESETS = {
    "default": AudioModelConfig(),
    "tiny": AudioModelConfig(channels=16, gru=16, dilations=(1, 2), dropout=0.0),
}


class ResConv(nn.Module):
    """x + conv(act(conv(x))) over time, 'valid' (the output is 2·dilation frames shorter)."""

    def __init__(self, channels: int, kernel: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.trim = dilation * (kernel - 1) // 2
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation)
        self.mix = nn.Conv1d(channels, channels, 1)
        self.act = nn.LeakyReLU(0.2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, L) → (B, C, L - 2·trim)
        h = self.mix(self.drop(self.act(self.conv(x))))
        return x[:, :, self.trim:x.shape[2] - self.trim] + h


class AudioToLandmarks(nn.Module):
    """Log-mel features (B, T+2R, 8, 80) → mouth-space motion (B, T, 37, 2)."""

    def __init__(self, config: AudioModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.register_buffer("mel_mean", torch.zeros(c.n_mels))
        self.register_buffer("mel_std", torch.ones(c.n_mels))
        self.register_buffer("out_scale", torch.ones(c.n_out))  # target std per output, from the data
        self.embed = nn.Linear(MEL_CONTEXT * c.n_mels, c.channels)
        self.convs = nn.Sequential(*[ResConv(c.channels, c.kernel, d, c.dropout) for d in c.dilations])
        self.gru = nn.GRU(c.channels, c.gru, batch_first=True)
        self.head = nn.Linear(c.gru + c.channels, c.n_out)
        nn.init.zeros_(self.head.weight)  # start at "no motion" (the neutral face)
        nn.init.zeros_(self.head.bias)

    def forward(self, feats: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (motion (B, T, 37, 2), GRU state (1, B, gru)) for feats (B, T+2R, 8, n_mels)."""
        b, length = feats.shape[:2]
        r = self.config.context
        x = (feats - self.mel_mean) / self.mel_std  # (B, T+2R, 8, M)
        x = torch.nn.functional.leaky_relu(self.embed(x.flatten(2)), 0.2)  # (B, T+2R, C)
        x = self.convs(x.transpose(1, 2)).transpose(1, 2)  # (B, T, C)
        assert x.shape[1] == length - 2 * r, (x.shape, length, r)
        h, state = self.gru(x, state)  # (B, T, gru)
        out = self.head(torch.cat([h, x], dim=2)) * self.out_scale  # (B, T, 74)
        return out.view(b, length - 2 * r, N_MOVING, 2), state


def stack_features(mel: np.ndarray, t0: int, t1: int) -> np.ndarray:
    """The stacked features (t1 - t0, 8, n_mels) of video frames t0 … t1-1; mel frames outside the
    recording are digital silence."""
    idx = (MEL_PER_FRAME * np.arange(t0, t1))[:, None] + np.arange(-MEL_CONTEXT // 2, MEL_CONTEXT // 2)[None]
    out = np.full((t1 - t0, MEL_CONTEXT, mel.shape[1]), np.log(F.LOG_FLOOR), np.float32)
    ok = (idx >= 0) & (idx < len(mel))
    out[ok] = mel[idx[ok]]
    return out
