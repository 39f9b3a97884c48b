"""`th audio prepare`: clips with sound → log-mel features + mouth-space landmark motion, checked.

For every clip that has an audio stream: its landmark track (``th faces``' tracker, cached under
``DATA/tracks``, One-Euro smoothed as ``th faces`` does), resampled to 25 fps; the mouth-space motion
of its jaw and mouth (``synth.audio.mouth``); the log-mel frames of its audio; and the checks that
decide whether it can teach anything: an audio track that is silent, too few frames with a face, too
short. Audio/video offsets are estimated afterwards over the whole set (``synth.audio.sync``).

Output: ``DATA/clips/KEY.npz`` (mel, motion, opening, valid, rms_db) + ``DATA/index.json``.
Resumable: a clip whose ``.npz`` exists is not redone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from synth.audio import features as F
from synth.audio import mouth
from synth.errors import UserError
from synth.train.prepare import ClipJob, discover

FPS = 25.0  # the audio model's frame rate (one video frame = 4 mel frames)
INDEX_VERSION = 1


@dataclass(frozen=True)
class AudioPrepConfig:
    min_seconds: float = 2.0
    min_face_fraction: float = 0.9
    voiced_db: float = -45.0  # a frame is voiced when its RMS is above this (dBFS)
    min_voiced_fraction: float = 0.15  # fewer voiced frames = a silent (or near-silent) audio track
    exclude_identities: frozenset[str] = frozenset()


@dataclass
class ClipData:
    """One prepared clip, all at 25 fps."""

    key: str
    mel: np.ndarray  # float32 (M, 80), M ≈ 4·T
    motion: np.ndarray  # float32 (T, 37, 2) mouth-space motion
    opening: np.ndarray  # float32 (T,) inner-lip opening, face-scale units
    valid: np.ndarray  # bool (T,) frame had a tracked face
    rms_db: np.ndarray  # float32 (T,) audio RMS under each frame
    neutral: np.ndarray  # float32 (68, 2) the clip's neutral face in mouth-space axes and units
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.motion)

    def save(self, path: Path) -> None:
        with open(path, "wb") as fh:
            np.savez_compressed(fh, mel=self.mel, motion=self.motion, opening=self.opening, valid=self.valid,
                                rms_db=self.rms_db, neutral=self.neutral, meta=np.array(json.dumps(self.meta)))

    @classmethod
    def load(cls, path: Path) -> ClipData:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return cls(meta["key"], z["mel"], z["motion"], z["opening"], z["valid"], z["rms_db"], z["neutral"], meta)

    def shifted(self, lag: int) -> ClipData:
        """The clip with its audio moved ``lag`` frames later relative to the video (lag < 0: earlier);
        frames left without audio or video are cut."""
        if lag == 0:
            return self
        t, m = len(self), 4 * abs(lag)
        if lag > 0:  # audio late by `lag` frames: frame t's sound is at audio frame t + lag
            mel, vid = self.mel[m:], slice(0, t - lag)
        else:
            mel, vid = self.mel, slice(-lag, t)
        return ClipData(self.key, mel, self.motion[vid], self.opening[vid], self.valid[vid],
                        self.rms_db[(slice(lag, t) if lag > 0 else slice(0, t + lag))], self.neutral,
                        {**self.meta, "shifted": lag})


def resample_track(lm: np.ndarray, has: np.ndarray, fps: float, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of a (T, 68, 2) track at 25 fps times; a frame is valid if both neighbours are."""
    t_src = np.arange(len(lm)) / fps
    t_out = np.arange(n_out) / FPS
    pos = np.clip(t_out * fps, 0, len(lm) - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, len(lm) - 1)
    w = (pos - i0)[:, None, None]
    out = (1 - w) * lm[i0] + w * lm[i1]
    valid = has[i0] & has[i1] & (t_out <= t_src[-1] + 0.5 / fps)
    return out.astype(np.float32), valid


def cached_track(job: ClipJob, tracks_dir: Path):
    """The clip's raw landmark track (th faces' tracker, unsmoothed), computed once and cached."""
    from synth.faces.tracking import LandmarkTrack, track_video
    from synth.media.atomic import atomic_path

    dest = tracks_dir / f"{job.key}.npz"
    if dest.exists():
        return LandmarkTrack.load(dest)
    track = track_video(job.path, smooth=False)
    tracks_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest, force=True) as tmp:
        track.save(tmp)
    return track


def smooth_track(track) -> np.ndarray:
    """One-Euro smoothing with `th faces`' defaults, restarted after every faceless stretch."""
    from synth.faces.tracking import OneEuroFilter

    filt = OneEuroFilter(track.fps)
    out = np.empty_like(track.landmarks)
    for i, (lm, has) in enumerate(zip(track.landmarks, track.has_face)):
        if not has:
            filt.reset()
            out[i] = lm
        else:
            out[i] = filt(lm)
    return out


def prepare_clip(job: ClipJob, cfg: AudioPrepConfig, tracks_dir: Path) -> ClipData:
    """Everything the audio model learns from one clip; UserError with the reason it cannot be used."""
    from synth.media.video import probe

    info = probe(job.path)
    if not info.has_audio:
        raise UserError("no audio stream")
    samples = F.read_audio(job.path)
    seconds = min(len(samples) / F.SAMPLE_RATE, info.duration or len(samples) / F.SAMPLE_RATE)
    if seconds < cfg.min_seconds:
        raise UserError(f"only {seconds:.1f} s long")
    n = int(np.floor(seconds * FPS))
    rms = F.frame_rms_db(samples, FPS, n)
    voiced = float(np.mean(rms > cfg.voiced_db))
    peak = float(20 * np.log10(np.abs(samples).max() + 1e-12))
    meta = {"key": job.key, "clip": job.rel, "path": str(Path(job.path).resolve()), "identity": job.identity, "license": job.license,
            "src_fps": info.fps, "frames": n, "seconds": round(n / FPS, 2), "peak_dbfs": round(peak, 1),
            "voiced_fraction": round(voiced, 3)}
    if voiced < cfg.min_voiced_fraction:
        raise UserError(f"silent audio track (peak {peak:.0f} dBFS, {voiced:.0%} of frames above {cfg.voiced_db:g} dBFS)")
    track = cached_track(job, tracks_dir)
    lm, valid = resample_track(smooth_track(track), track.has_face, track.fps, n)
    if valid.mean() < cfg.min_face_fraction:
        raise UserError(f"face tracked in only {valid.mean():.0%} of frames")
    motion, neutral, norm = mouth.clip_targets(lm, valid)
    mel = F.log_mel(np.concatenate([np.zeros(F.WIN // 2, np.float32), samples[: n * F.SAMPLE_RATE // int(FPS)],
                                    np.zeros(F.WIN, np.float32)]))[: 4 * n]
    meta["face_fraction"] = round(float(valid.mean()), 3)
    return ClipData(job.key, mel, motion, mouth.opening(norm).astype(np.float32), valid, rms, neutral, meta)


def prepare(videos: Path, out: Path, cfg: AudioPrepConfig, manifest: Path | None = None,
            on_progress: Callable[[dict], None] | None = None) -> dict:
    """Prepare every clip with audio under ``videos``; returns (and writes) the index."""
    from synth.media.atomic import atomic_path, atomic_write_bytes

    jobs = [j for j in discover(videos, manifest) if j.identity not in cfg.exclude_identities]
    (out / "clips").mkdir(parents=True, exist_ok=True)
    old = _read_index(out)
    skipped = {s["key"]: s for s in old.get("skipped", [])}
    for j in jobs:
        dest = out / "clips" / f"{j.key}.npz"
        record = {"key": j.key, "clip": j.rel}
        if dest.exists() or j.key in skipped:
            record["resumed"] = True
        else:
            try:
                clip = prepare_clip(j, cfg, out / "tracks")
                with atomic_path(dest, force=True) as tmp:
                    clip.save(tmp)
            except UserError as e:
                skipped[j.key] = {**record, "identity": j.identity, "license": j.license, "reason": str(e)}
            except Exception as e:  # one broken clip never stops the run; it is reported
                skipped[j.key] = {**record, "identity": j.identity, "license": j.license,
                                  "reason": f"{e.__class__.__name__}: {e}"}
        if on_progress:
            on_progress(record)
    clips = []
    for j in jobs:
        p = out / "clips" / f"{j.key}.npz"
        if p.exists():
            with np.load(p, allow_pickle=False) as z:
                clips.append(json.loads(str(z["meta"])))
    index = {"version": INDEX_VERSION, "fps": FPS, "config": {**asdict(cfg), "exclude_identities":
             sorted(cfg.exclude_identities)}, "clips": clips,
             "skipped": sorted(skipped.values(), key=lambda s: s["key"]), "offsets": old.get("offsets", {})}
    atomic_write_bytes(out / "index.json", json.dumps(index, indent=1).encode(), force=True)
    return index


def _read_index(out: Path) -> dict:
    p = out / "index.json"
    return json.loads(p.read_text()) if p.exists() else {}


def load_index(data: Path) -> dict:
    p = Path(data) / "index.json"
    if not p.exists():
        raise UserError(f"{data}: no index.json (run `th audio prepare` first)")
    return json.loads(p.read_text())


def load_clips(data: Path, keys: list[str] | None = None, corrected: bool = True) -> list[ClipData]:
    """Prepared clips (all, or those of ``keys``), with their recorded offset corrected unless not ``corrected``."""
    index = load_index(data)
    offsets = index.get("offsets", {})
    out = []
    for meta in index["clips"]:
        if keys is not None and meta["key"] not in keys:
            continue
        clip = ClipData.load(Path(data) / "clips" / f"{meta['key']}.npz")
        sync = offsets.get(meta["key"], {})
        lag = int(sync.get("lag", 0)) if corrected and sync.get("correct") else 0
        out.append(clip.shifted(lag))
    return out
