"""Audio in: streamed decoding of any file PyAV reads to 16 kHz mono, and log-mel features.

Every sample rate and sample format is resampled by libswresample (PyAV's ``AudioResampler``) to
16 kHz float32, and the channels are averaged to mono (a plain mean: no downmix gain, no clipping). Decoding is streamed in chunks, so a long file never sits
in memory whole. Features are log-mel frames every 10 ms (4 per video frame at 25 fps); mel frame
``m`` is centred at ``m * 10 ms``, video frame ``t`` at ``t / fps`` seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

from synth.errors import UserError

SAMPLE_RATE = 16_000
HOP = 160  # 10 ms
WIN = 400  # 25 ms
N_FFT = 512
N_MELS = 80
FMIN, FMAX = 40.0, 7600.0
LOG_FLOOR = 1e-5  # log-mel of digital silence: log(1e-5) ≈ -11.5
AUDIO_SUFFIXES = {".wav", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".flac", ".wma", ".aif", ".aiff"}


def is_audio_path(path: Path | str) -> bool:
    return Path(path).suffix.lower() in AUDIO_SUFFIXES


def check_audio(path: Path | str) -> None:
    """A clear UserError unless ``path`` is a readable media file with an audio stream."""
    import av

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir() or path.stat().st_size == 0:
        raise UserError(f"{path}: {'is a directory' if path.is_dir() else 'file is empty'}, expected an audio file")
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise UserError(f"{path}: has no audio stream")
    except av.error.FFmpegError as e:
        raise UserError(f"{path}: not a readable audio file ({e.__class__.__name__})") from e


def iter_audio(path: Path | str, chunk: int = 10 * SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Yield the first audio stream as 16 kHz mono float32 chunks of ``chunk`` samples (the last shorter).

    Memory is O(chunk) whatever the file's length. A corrupt tail ends the stream early (what decoded
    is kept, as players do).
    """
    import av

    check_audio(path)
    resampler = None
    pending = np.zeros(0, np.float32)
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        for frame in _decoded_frames(c, stream):
            frame.pts = None  # resample by sample count: broken timestamps must not insert gaps
            if resampler is None:  # keep the channels: the mono mix is their mean (no downmix gain)
                resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=SAMPLE_RATE)
            for out in resampler.resample(frame):
                pending = np.concatenate([pending, out.to_ndarray().mean(0, dtype=np.float32)])
                while len(pending) >= chunk:
                    yield pending[:chunk]
                    pending = pending[chunk:]
        for out in resampler.resample(None) if resampler is not None else []:
            pending = np.concatenate([pending, out.to_ndarray().mean(0, dtype=np.float32)])
    for i in range(0, len(pending), chunk):
        yield pending[i:i + chunk]


def _decoded_frames(container, stream) -> Iterator:
    import av

    try:
        for packet in container.demux(stream):
            yield from packet.decode()
    except av.error.FFmpegError:
        return


def read_audio(path: Path | str) -> np.ndarray:
    """The whole audio at 16 kHz mono (for short clips: training data, tests)."""
    parts = list(iter_audio(path))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


@lru_cache(maxsize=2)
def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SAMPLE_RATE,
                   fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """Slaney-style triangular mel filters (n_mels, n_fft//2+1), area-normalised."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower = (freqs[None] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - freqs[None]) / (edges[2:, None] - edges[1:-1, None])
    fb = np.maximum(0, np.minimum(lower, upper))
    fb *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return fb.astype(np.float32)


def log_mel(samples: np.ndarray) -> np.ndarray:
    """Log-mel frames (M, N_MELS) of 16 kHz mono samples, one every HOP, frame m centred at m·HOP.

    ``samples`` must already hold WIN//2 samples of context before the first centre and after the last
    (``LogMelStream`` takes care of that); M = (len - WIN) // HOP + 1.
    """
    x = np.asarray(samples, np.float32)
    if len(x) < WIN:
        return np.zeros((0, N_MELS), np.float32)
    m = (len(x) - WIN) // HOP + 1
    idx = np.arange(WIN)[None] + HOP * np.arange(m)[:, None]
    frames = x[idx] * np.hanning(WIN + 2)[1:-1].astype(np.float32)
    spec = np.abs(np.fft.rfft(frames, n=N_FFT, axis=1)) ** 2
    mel = spec.astype(np.float32) @ mel_filterbank().T
    return np.log(mel + LOG_FLOOR).astype(np.float32)


class LogMelStream:
    """Log-mel frames of a stream of sample chunks, identical to computing them on the whole signal.

    The signal is taken as zero before its start and (at ``finish``) after its end, so frame 0 is
    centred at t = 0 and there is one frame per HOP of audio.
    """

    def __init__(self) -> None:
        self._buf = np.zeros(WIN // 2, np.float32)  # zero context before t = 0
        self.frames_out = 0

    def push(self, chunk: np.ndarray) -> np.ndarray:
        self._buf = np.concatenate([self._buf, np.asarray(chunk, np.float32)])
        out = log_mel(self._buf)
        self._buf = self._buf[len(out) * HOP:]
        self.frames_out += len(out)
        return out

    def finish(self, total_samples: int) -> np.ndarray:
        """The last frames, up to one per HOP of the ``total_samples`` the stream held."""
        want = -(-total_samples // HOP) - self.frames_out
        if want <= 0:
            return np.zeros((0, N_MELS), np.float32)
        pad = np.zeros(WIN + want * HOP, np.float32)
        out = log_mel(np.concatenate([self._buf, pad]))[:want]
        self.frames_out += len(out)
        return out


def iter_log_mel(path: Path | str, chunk: int = 10 * SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Streamed log-mel frames of a file (blocks of (m, N_MELS)), one frame per 10 ms of audio."""
    stream = LogMelStream()
    total = 0
    for x in iter_audio(path, chunk):
        total += len(x)
        out = stream.push(x)
        if len(out):
            yield out
    tail = stream.finish(total)
    if len(tail):
        yield tail


def file_log_mel(path: Path | str) -> np.ndarray:
    """All log-mel frames of a (short) file: (M, N_MELS)."""
    parts = list(iter_log_mel(path))
    return np.concatenate(parts) if parts else np.zeros((0, N_MELS), np.float32)


def frame_rms_db(samples: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """RMS level in dBFS of the audio under each video frame (window = one frame period, centred)."""
    out = np.full(n_frames, -120.0, np.float32)
    half = SAMPLE_RATE / fps / 2
    for t in range(n_frames):
        c = t / fps * SAMPLE_RATE
        seg = samples[max(0, int(c - half)):int(c + half)]
        if len(seg):
            out[t] = 10 * np.log10(float(np.mean(seg.astype(np.float64) ** 2)) + 1e-12)
    return out
