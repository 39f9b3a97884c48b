"""`th prepare`: decode clips, sample frames, detect faces + 68 landmarks, crop and align, write shards.

Parallel over clips (one process per worker), resumable (a clip whose shard exists is skipped), and
every skipped clip is reported with its reason.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synth.errors import UserError
from synth.media.video import VIDEO_SUFFIXES
from synth.train.shards import INDEX_VERSION, ClipSamples, clip_key, shard_meta, write_shard


@dataclass(frozen=True)
class PrepareConfig:
    size: int = 256
    frames_per_clip: int = 32
    min_frames: int = 9
    workers: int = 2
    detector: str = "hog"
    exclude_identities: frozenset[str] = frozenset()
    licenses: frozenset[str] = frozenset()  # empty = all


@dataclass(frozen=True)
class ClipJob:
    path: Path
    rel: str
    key: str
    identity: str
    license: str = ""


@dataclass
class PrepareReport:
    done: list[dict] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def find_manifest(videos: Path) -> Path | None:
    """A MANIFEST.tsv in the folder or its parent (the ../shared/data layout)."""
    for cand in (videos / "MANIFEST.tsv", videos.parent / "MANIFEST.tsv"):
        if cand.exists():
            return cand
    return None


def discover(videos: Path, manifest: Path | None) -> list[ClipJob]:
    """Clips under ``videos`` with identities: from a manifest (file/identity/license columns) or from
    the VoxCeleb2 layout ``id/video/clip.mp4`` (the first folder is the identity)."""
    if not videos.exists():
        raise UserError(f"{videos}: no such folder")
    if not videos.is_dir():
        raise UserError(f"{videos}: not a folder of videos")
    files = sorted(p for p in videos.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise UserError(f"{videos}: no video files found")
    ident: dict[str, tuple[str, str]] = {}
    if manifest is not None:
        with open(manifest, newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                ident[Path(row["file"]).name] = (row.get("identity") or "", row.get("license") or "")
    jobs = []
    for p in files:
        rel = p.relative_to(videos).as_posix()
        parts = rel.split("/")
        if p.name in ident:
            identity, lic = ident[p.name]
        elif len(parts) >= 3:
            identity, lic = parts[0], ""
        else:
            identity, lic = clip_key(rel), ""
        jobs.append(ClipJob(p, rel, clip_key(rel), identity, lic))
    return jobs


def license_ok(lic: str, allowed: frozenset[str]) -> bool:
    """Keep a clip if no filter is set, or its licence names an allowed one and is not non-commercial."""
    import re

    if not allowed:
        return True
    non_commercial = re.search(r"(\bNC\b|non-?commercial)", lic, flags=re.IGNORECASE) is not None
    return any(a.lower() in lic.lower() for a in allowed) and not non_commercial


def sample_indices(n_frames: int, n: int) -> list[int]:
    """``n`` frame indices spread evenly over the clip."""
    if n_frames <= n:
        return list(range(n_frames))
    return [int(round(i)) for i in np.linspace(0, n_frames - 1, n)]


def prepare_clip(job: ClipJob, cfg: PrepareConfig) -> ClipSamples:
    """Everything for one clip; raises UserError with the reason it cannot be used."""
    import cv2

    from synth.faces.align import align_crop, apply_affine, clip_box
    from synth.faces.detector import MIN_FACE_PX, FaceDetector
    from synth.media.video import iter_frames, probe

    cv2.setNumThreads(1)
    info = probe(job.path)
    frames_all = {}
    # The container's frame count can be off; decode once, keep a bounded reservoir of candidates.
    wanted = set(sample_indices(max(info.frames, 1), cfg.frames_per_clip))
    n = 0
    for i, fr in enumerate(iter_frames(job.path)):
        n = i + 1
        if i in wanted:
            frames_all[i] = fr
    if n < cfg.min_frames:
        raise UserError(f"only {n} frames")
    if len(frames_all) < min(cfg.frames_per_clip, n) // 2:  # header overstated the length
        frames_all = {i: f for i, f in enumerate(iter_frames(job.path)) if i in set(sample_indices(n, cfg.frames_per_clip))}
    det = FaceDetector(cfg.detector)
    kept_idx, kept_frames, kept_lm = [], [], []
    centre = None
    for i in sorted(frames_all):
        faces = [f for f in det.detect(frames_all[i]) if f.size >= MIN_FACE_PX]
        if not faces:
            continue
        face = faces[0] if centre is None else min(faces, key=lambda f: float(np.linalg.norm(f.landmarks.mean(0) - centre)))
        centre = face.landmarks.mean(0) if centre is None else centre
        kept_idx.append(i)
        kept_frames.append(frames_all[i])
        kept_lm.append(face.landmarks)
    if len(kept_idx) < cfg.min_frames:
        raise UserError(f"face found in {len(kept_idx)} of {len(frames_all)} sampled frames (need {cfg.min_frames})")
    box = clip_box(np.stack(kept_lm))
    crops, lms = [], []
    for fr, lm in zip(kept_frames, kept_lm):
        crop, M = align_crop(fr, box=box, size=cfg.size)
        crops.append(crop)
        lms.append(apply_affine(lm, M))
    meta = {
        "clip": job.rel,
        "frame_indices": kept_idx,
        "fps": info.fps,
        "src_width": info.width,
        "src_height": info.height,
        "license": job.license,
        "box": [box.cx, box.cy, box.side],
    }
    return ClipSamples(job.key, job.identity, np.stack(crops), np.stack(lms).astype(np.float32), meta)


def _work(args: tuple[ClipJob, PrepareConfig, Path]) -> dict:
    """Worker: prepare one clip and publish its shard atomically. Returns a result record."""
    from synth.media.atomic import atomic_path

    job, cfg, out = args
    shard = out / "shards" / f"{job.key}.tar"
    try:
        sample = prepare_clip(job, cfg)
        with atomic_path(shard, force=True) as tmp:
            write_shard(tmp, sample)
        return {"ok": True, "key": job.key, "frames": len(sample.frames)}
    except UserError as e:
        return {"ok": False, "clip": job.rel, "reason": str(e)}
    except Exception as e:  # one broken clip never stops the run; it is reported
        return {"ok": False, "clip": job.rel, "reason": f"{e.__class__.__name__}: {e}"}


def prepare(
    videos: Path,
    out: Path,
    cfg: PrepareConfig,
    manifest: Path | None = None,
    on_progress: Callable[[dict], None] | None = None,
) -> PrepareReport:
    """Prepare every clip under ``videos`` into ``out``; rerunning skips clips already done."""
    from synth.media.atomic import atomic_write_bytes

    jobs = discover(videos, manifest)
    report = PrepareReport()
    todo = []
    # The filters also decide what the index lists: a shard made by an earlier run without them (e.g. of
    # an evaluation hold-out identity) stays on disk but is never offered to training.
    kept = [j for j in jobs if j.identity not in cfg.exclude_identities and license_ok(j.license, cfg.licenses)]
    for j in kept:
        if (out / "shards" / f"{j.key}.tar").exists():
            report.resumed.append(j.key)
            if on_progress:
                on_progress({"ok": True, "key": j.key, "resumed": True})
            continue
        todo.append(j)
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise UserError("two clips map to the same key; rename one of them")
    (out / "shards").mkdir(parents=True, exist_ok=True)
    args = [(j, cfg, out) for j in todo]
    if cfg.workers <= 1:
        results = map(_work, args)
        for r in results:
            _record(r, report, on_progress)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=mp.get_context("fork"),
                                 initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
            futs = [pool.submit(_work, a) for a in args]
            for f in as_completed(futs):
                _record(f.result(), report, on_progress)
    index = build_index(out, kept, cfg, report)
    atomic_write_bytes(out / "index.json", json.dumps(index, indent=1).encode(), force=True)
    atomic_write_bytes(out / "report.json", json.dumps({"skipped": report.skipped}, indent=1).encode(), force=True)
    return report


def _die_with_parent(parent: int) -> None:
    """Worker initializer: a worker dies with `th prepare` (even killed with SIGKILL) instead of finishing
    orphaned clips nobody will index (Linux; elsewhere workers stop when their queue closes)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the call above
        os._exit(1)


def _record(r: dict, report: PrepareReport, on_progress) -> None:
    if r["ok"]:
        report.done.append(r)
    else:
        report.skipped.append({"clip": r["clip"], "reason": r["reason"]})
    if on_progress:
        on_progress(r)


def build_index(out: Path, jobs: list[ClipJob], cfg: PrepareConfig, report: PrepareReport) -> dict:
    """The index lists every clip whose shard exists (from this run or an earlier one)."""
    clips = []
    for j in jobs:
        shard = out / "shards" / f"{j.key}.tar"
        if not shard.exists():
            continue
        meta = shard_meta(shard)
        clips.append({
            "key": j.key,
            "identity": meta["identity"],
            "clip": j.rel,
            "shard": f"shards/{j.key}.tar",
            "frames": len(meta["frame_indices"]),
            "src_width": meta.get("src_width"),
            "src_height": meta.get("src_height"),
            "fps": meta.get("fps"),
            "license": meta.get("license", ""),
        })
    return {
        "version": INDEX_VERSION,
        "size": cfg.size,
        "frames_per_clip": cfg.frames_per_clip,
        "identities": sorted({c["identity"] for c in clips}),
        "clips": clips,
        "skipped": report.skipped,
        "workers": os.cpu_count(),
    }
