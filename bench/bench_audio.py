"""Audio driver benchmark: audio → avatar landmarks speed, and peak memory for short vs very long audio.

    .venv/bin/python bench/bench_audio.py [--audio-model PATH] [--long-minutes 30] [--repeats 3]

Speed: `synth.avatar.animate.plan_audio` (decode → log-mel → network → mouth, blinks, head motion) on 60 s
of a speech-like signal, median of ``--repeats`` (frames of 25 fps video per second). Memory: the peak RSS
of a child process planning 10 s vs ``--long-minutes`` of MP3 (the audio is decoded and run in chunks;
only the landmark track itself, 544 bytes a frame, grows with the length). The machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
from timing import median_time  # bench/timing.py (scripts run from bench/ on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def speech_like(seconds: float, sr: int = 16_000, seed: int = 0) -> np.ndarray:
    """A voiced harmonic tone in syllables of random length and spacing."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    voice = sum(np.sin(2 * np.pi * 130 * k * t) / k for k in range(1, 12))
    env = np.zeros_like(t)
    start = 0.1
    while start < seconds:
        length = rng.uniform(0.08, 0.3)
        on = (t >= start) & (t < start + length)
        env[on] = np.sin(np.pi * (t[on] - start) / length)
        start += length + rng.uniform(0.03, 0.35)
    return (0.2 * voice * env / np.abs(voice).max()).astype(np.float32)


def write_wav(path: Path, x: np.ndarray, sr: int = 16_000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def face() -> np.ndarray:
    from skimage import data

    from synth.faces.detector import FaceDetector

    return FaceDetector().detect(data.astronaut(), thorough=True)[0].landmarks


def _hwm_mib() -> float:
    """This process's RSS high-water mark (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def child(audio: str, model: str | None) -> None:
    from synth.audio.bundled import resolve_audio_model
    from synth.audio.train import load_model
    from synth.avatar.animate import plan_audio

    lm = face()
    load_model(resolve_audio_model(Path(model) if model else None))  # libraries and weights in memory
    before = _hwm_mib()
    plan = plan_audio(Path(audio), lm, Path(model) if model else None)
    print(f"{before:.1f} {len(plan.landmarks)}")


def peak_rss(audio: Path, model: str | None) -> tuple[int, float, float]:
    argv = [sys.executable, __file__, "--child", str(audio)] + (["--audio-model", model] if model else [])
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    _, status, usage = os.wait4(p.pid, 0)
    out = p.stdout.read().decode() if p.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(p.stderr.read().decode()[-2000:] if p.stderr else "child failed")
    before, frames = out.split()[-2:]
    return int(frames), float(before), usage.ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio-model", default=None)
    ap.add_argument("--long-minutes", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.audio_model)
        return
    from synth.avatar.animate import plan_audio
    from synth.media.video import ffmpeg_exe

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine: compare numbers taken together)")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        one_min = write_wav(d / "60s.wav", speech_like(60))
        lm = face()
        model = Path(args.audio_model) if args.audio_model else None
        dt = median_time(lambda: plan_audio(one_min, lm, model), args.repeats)
        print(f"plan_audio, 60 s of speech: {dt:.2f} s = {1500 / dt:.0f} frames/s (median of {args.repeats})")
        short = write_wav(d / "10s.wav", speech_like(10))
        long_wav = write_wav(d / "long.wav", np.tile(speech_like(60), int(np.ceil(args.long_minutes))))
        long_mp3 = d / "long.mp3"
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(long_wav),
                        "-t", str(args.long_minutes * 60), "-c:a", "libmp3lame", "-b:a", "64k", str(long_mp3)], check=True)
        long_wav.unlink()
        for name, path in (("10 s wav", short), (f"{args.long_minutes:g} min mp3", long_mp3)):
            n, before, rss = peak_rss(path, args.audio_model)
            print(f"peak RSS planning {name}: {rss:.0f} MiB, of which {rss - before:.0f} MiB above the "
                  f"libraries + models already loaded ({n} frames)")


if __name__ == "__main__":
    main()
