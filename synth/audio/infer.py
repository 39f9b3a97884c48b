"""Audio file → mouth-space motion at 25 fps, streamed: memory does not grow with the audio's length
(beyond the output itself, 296 bytes per frame).

The file is decoded and turned into log-mel frames chunk by chunk; the network runs on blocks of
frames with its R frames of context on each side and its GRU state carried from block to block,
which gives exactly what one pass over the whole file gives. Silence is a closed, still mouth: where
the audio's level stays below ``SILENCE_DB`` the motion is faded to zero (a rule, not left to the
network).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from synth.audio import features as F
from synth.audio.model import MEL_CONTEXT, MEL_PER_FRAME, AudioToLandmarks, stack_features

FPS = 25
SAMPLES_PER_FRAME = F.SAMPLE_RATE // FPS
SILENCE_DB = -70.0  # frame level (dBFS) at and below which the mouth stays at rest (digital silence, hiss)
FULL_DB = -60.0  # level from which the predicted motion passes unchanged (quiet speech is well above)
GATE_SPREAD = 2  # frames: the loudest neighbour within ±2 frames decides (no clipped syllables)


class FrameLevels:
    """RMS level (dBFS) of each 40 ms frame of a sample stream; frame t covers samples [640t, 640t+640)."""

    def __init__(self) -> None:
        self._rest = np.zeros(0, np.float32)

    def push(self, chunk: np.ndarray) -> np.ndarray:
        x = np.concatenate([self._rest, chunk])
        n = len(x) // SAMPLES_PER_FRAME
        self._rest = x[n * SAMPLES_PER_FRAME:]
        return _db(x[: n * SAMPLES_PER_FRAME].reshape(n, SAMPLES_PER_FRAME))

    def finish(self) -> np.ndarray:
        if not len(self._rest):
            return np.zeros(0, np.float32)
        x = np.concatenate([self._rest, np.zeros(SAMPLES_PER_FRAME - len(self._rest), np.float32)])
        self._rest = np.zeros(0, np.float32)
        return _db(x[None])


def _db(frames: np.ndarray) -> np.ndarray:
    return (10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)).astype(np.float32)


def silence_gate(levels: np.ndarray) -> np.ndarray:
    """Per frame 0 (silent: keep the mouth at rest) … 1 (sound: the predicted motion), from the levels."""
    n = len(levels)
    loudest = np.full(n, -120.0, np.float32)
    for d in range(-GATE_SPREAD, GATE_SPREAD + 1):
        src = levels[max(0, d):n + min(0, d)]
        loudest[max(0, -d):n - max(0, d)] = np.maximum(loudest[max(0, -d):n - max(0, d)], src)
    return np.clip((loudest - SILENCE_DB) / (FULL_DB - SILENCE_DB), 0.0, 1.0)


class MotionStream:
    """Push 16 kHz mono chunks, get (motion (n, 37, 2), gate (n,)) blocks for every 40 ms frame, in order.

    ``motion`` is the network's prediction; ``gate`` (0 … 1) fades it to rest where the audio is silent.
    """

    def __init__(self, model: AudioToLandmarks, block: int = 250) -> None:
        self.model = model.eval()
        self.r = model.config.context
        self.block = block
        self._mels = F.LogMelStream()
        self._levels = FrameLevels()
        self._mel = np.zeros((0, F.N_MELS), np.float32)
        self._mel_base = 0  # global index of self._mel[0] (a multiple of 4)
        self._lev = np.zeros(0, np.float32)
        self._lev_base = 0
        self._state = None
        self._samples = 0
        self.frames_out = 0

    def push(self, chunk: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        self._samples += len(chunk)
        self._mel = np.concatenate([self._mel, self._mels.push(chunk)])
        self._lev = np.concatenate([self._lev, self._levels.push(chunk)])
        # frame t needs mel frames up to 4(t+R)+3 and levels up to t+GATE_SPREAD
        ready = min((self._mel_base + len(self._mel)) // MEL_PER_FRAME - self.r,
                    self._lev_base + len(self._lev) - GATE_SPREAD)
        return self._run(ready)

    def finish(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The remaining frames: one per started 40 ms of audio (beyond the end is silence)."""
        self._mel = np.concatenate([self._mel, self._mels.finish(self._samples)])
        self._lev = np.concatenate([self._lev, self._levels.finish()])
        return self._run(-(-self._samples // SAMPLES_PER_FRAME))

    def _run(self, t_end: int) -> list[tuple[np.ndarray, np.ndarray]]:
        import torch

        out = []
        while self.frames_out < t_end:
            t0 = self.frames_out
            t1 = min(t0 + self.block, t_end)
            off = self._mel_base // MEL_PER_FRAME
            feats = stack_features(self._mel, t0 - self.r - off, t1 + self.r - off)  # (n+2R, 8, 80)
            with torch.no_grad():
                motion, self._state = self.model(torch.from_numpy(feats)[None], self._state)
            lev = self._lev_window(t0 - GATE_SPREAD, t1 + GATE_SPREAD)
            gate = silence_gate(lev)[GATE_SPREAD:GATE_SPREAD + t1 - t0]
            out.append((motion[0].numpy(), gate.astype(np.float32)))
            self.frames_out = t1
            self._forget()
        return out

    def _lev_window(self, a: int, b: int) -> np.ndarray:
        """Levels of frames a … b-1; frames outside the audio are silent."""
        out = np.full(b - a, -120.0, np.float32)
        lo, hi = max(a, self._lev_base), min(b, self._lev_base + len(self._lev))
        if hi > lo:
            out[lo - a:hi - a] = self._lev[lo - self._lev_base:hi - self._lev_base]
        return out

    def _forget(self) -> None:
        """Drop buffered mel frames and levels no future frame needs (memory stays flat)."""
        keep_mel = max(0, MEL_PER_FRAME * (self.frames_out - self.r) - MEL_CONTEXT // 2)
        keep_mel -= keep_mel % MEL_PER_FRAME
        if keep_mel > self._mel_base:
            self._mel = self._mel[keep_mel - self._mel_base:]
            self._mel_base = keep_mel
        keep_lev = max(0, self.frames_out - GATE_SPREAD)
        if keep_lev > self._lev_base:
            self._lev = self._lev[keep_lev - self._lev_base:]
            self._lev_base = keep_lev


def iter_motion(model: AudioToLandmarks, path: Path | str, block: int = 250,
                chunk_seconds: float = 10.0) -> Iterator[np.ndarray]:
    """Yield blocks of gated mouth-space motion (n, 37, 2) covering the file's audio at 25 fps."""
    stream = MotionStream(model, block)
    for x in F.iter_audio(path, int(chunk_seconds * F.SAMPLE_RATE)):
        for motion, gate in stream.push(x):
            yield motion * gate[:, None, None]
    for motion, gate in stream.finish():
        yield motion * gate[:, None, None]


def audio_motion(model: AudioToLandmarks, path: Path | str) -> np.ndarray:
    """All gated mouth-space motion (T, 37, 2) of a file, T = one frame per started 40 ms of audio."""
    parts = list(iter_motion(model, path))
    return np.concatenate(parts) if parts else np.zeros((0, 37, 2), np.float32)
