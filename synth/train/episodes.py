"""Prepared data → meta-learning episodes (Zakharov et al. 2019, Sec. 3.2).

An episode is K+1 frames of one training video i: K (frame, landmark image) pairs to embed and one
target t to reconstruct from its landmark image. Sampling is a pure function of (seed, step, slot),
so a global batch is the same whatever the number of ranks; each rank takes its slice of the slots
and decodes only the clips it needs (clips are read lazily from the shard tars and cached).
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth.errors import UserError


@dataclass(frozen=True)
class ClipRef:
    """Where one clip lives: its shard and the byte ranges of its frames and landmarks members."""

    key: str
    identity: str
    shard: Path
    frames: tuple[int, int]
    landmarks: tuple[int, int]


@dataclass
class EpisodeBatch:
    """A batch of episodes as numpy arrays (float32, NCHW, [-1, 1])."""

    frames: np.ndarray  # (B, K+1, 3, S, S) — [:, :K] to embed, [:, K] the target
    landmarks: np.ndarray  # (B, K+1, 3, S, S) landmark images
    video: np.ndarray  # (B,) int64 index of the training video (D's column W_i)
    warped: np.ndarray | None = None  # (B, K, 3, S, S): the K shots warped to the target (warp-guided G)


def _index_shard(path: Path) -> dict[str, tuple[int, int]]:
    with tarfile.open(path, "r:") as tf:
        return {m.name: (m.offset_data, m.size) for m in tf.getmembers() if m.isfile()}


def _read_npy(path: Path, span: tuple[int, int]) -> np.ndarray:
    with open(path, "rb") as f:
        f.seek(span[0])
        return np.load(io.BytesIO(f.read(span[1])), allow_pickle=False)


class PreparedData:
    """The clips of a ``th prepare`` folder at the model's resolution, decoded lazily and cached."""

    def __init__(self, root: Path | str, image_size: int, max_cached_clips: int = 2000) -> None:
        root = Path(root)
        index_path = root / "index.json"
        if not index_path.is_file():
            raise UserError(f"{root} is not a prepared data folder (no index.json; run `th prepare` first)")
        index = json.loads(index_path.read_text())
        if index.get("version") != 1:
            raise UserError(f"{index_path}: unsupported index version {index.get('version')!r}")
        self.root = root
        self.source_size = int(index["size"])
        self.image_size = image_size
        members: dict[Path, dict[str, tuple[int, int]]] = {}
        clips = []
        for c in index["clips"]:
            shard = root / c["shard"] if not Path(c["shard"]).is_absolute() else Path(c["shard"])
            if not shard.is_file():
                shard = root / "shards" / Path(c["shard"]).name
            if shard not in members:
                if not shard.is_file():
                    raise UserError(f"missing shard {shard} listed in {index_path}")
                members[shard] = _index_shard(shard)
            m = members[shard]
            key = c["key"]
            if f"{key}.frames.npy" not in m or f"{key}.landmarks.npy" not in m:
                raise UserError(f"clip {key} is missing from {shard}")
            clips.append(ClipRef(key, str(c.get("identity", key)), shard, m[f"{key}.frames.npy"],
                                 m[f"{key}.landmarks.npy"]))
        if not clips:
            raise UserError(f"{index_path} lists no clips")
        self.clips = sorted(clips, key=lambda c: c.key)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.max_cached_clips = max_cached_clips

    def __len__(self) -> int:
        return len(self.clips)

    def clip(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Clip i as (frames float32 (N,3,S,S), landmark images float32 (N,3,S,S)), both in [-1, 1]."""
        frames, images = self.clip_uint8(i)
        return _to_float(frames), _to_float(images)

    def clip_uint8(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Clip i as uint8 (N,3,S,S) frames and landmark images (cached; least recently used evicted)."""
        frames, images, _ = self._load(i)
        return frames, images

    def clip_points(self, i: int) -> np.ndarray:
        """Clip i's landmarks, float32 (N,68,2) in pixels of the model's image size."""
        return self._load(i)[2]

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if i in self._cache:
            self._cache[i] = self._cache.pop(i)  # mark as most recently used
        else:
            import cv2

            from synth.faces.landmark_image import draw_landmarks

            ref = self.clips[i]
            frames = _read_npy(ref.shard, ref.frames)  # (N,S0,S0,3) uint8
            lms = _read_npy(ref.shard, ref.landmarks).astype(np.float32)  # (N,68,2)
            s, s0 = self.image_size, frames.shape[1]
            if s0 != s:
                frames = np.stack([cv2.resize(f, (s, s), interpolation=cv2.INTER_AREA) for f in frames])
            scale = s / float(s0)
            images = np.stack([draw_landmarks(lm * scale, s) for lm in lms])
            self._cache[i] = (np.ascontiguousarray(frames.transpose(0, 3, 1, 2)),
                              np.ascontiguousarray(images.transpose(0, 3, 1, 2)), lms * scale)
            while len(self._cache) > self.max_cached_clips:
                self._cache.pop(next(iter(self._cache)))
        return self._cache[i]


def _to_float(a: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] → float32 [-1, 1]."""
    return a.astype(np.float32) / 127.5 - 1.0


def episode_slots(n_videos: int, seed: int, step: int, batch: int) -> np.ndarray:
    """Video index of each of the ``batch`` global slots of ``step``: epoch-wise permutations."""
    out = np.empty(batch, dtype=np.int64)
    for j in range(batch):
        pos = step * batch + j
        epoch, off = divmod(pos, n_videos)
        out[j] = np.random.default_rng([seed, epoch, 0x5EED]).permutation(n_videos)[off]
    return out


def sample_episodes(
    data: PreparedData, k_shot: int, seed: int, step: int, batch: int, rank: int = 0, world: int = 1,
    warp: bool = False,
) -> EpisodeBatch:
    """This rank's share of the global batch of ``step`` (slots [rank·B/world, (rank+1)·B/world)).

    ``warp``: also the K shots warped to the target's landmarks (synth.faces.warp), for the warp-guided G.
    """
    if batch % world:
        raise UserError(f"--batch {batch} must be a multiple of the number of processes ({world})")
    videos = episode_slots(len(data), seed, step, batch)
    per = batch // world
    fr, lm, vid, wp = [], [], [], []
    for j in range(rank * per, (rank + 1) * per):
        frames, images = data.clip_uint8(int(videos[j]))
        n = frames.shape[0]
        rng = np.random.default_rng([seed, step, j])
        pick = rng.choice(n, size=k_shot + 1, replace=n < k_shot + 1)
        fr.append(_to_float(frames[pick]))
        lm.append(_to_float(images[pick]))
        vid.append(videos[j])
        if warp:
            from synth.faces.warp import ShotWarper

            points = data.clip_points(int(videos[j]))[pick]  # (K+1,68,2)
            shots = frames[pick[:k_shot]].transpose(0, 2, 3, 1)  # (K,S,S,3) uint8
            warped = ShotWarper(shots, points[:k_shot])(points[k_shot])  # (K,S,S,3)
            wp.append(_to_float(np.ascontiguousarray(warped.transpose(0, 3, 1, 2))))
    return EpisodeBatch(np.stack(fr), np.stack(lm), np.asarray(vid, dtype=np.int64), np.stack(wp) if warp else None)


def synthetic_landmarks(rng: np.random.Generator, size: int, open_mouth: float = 0.0) -> np.ndarray:
    """A plausible 68-point face (iBUG order) in a size×size crop, jittered: for tests and benchmarks."""
    c = size / 2.0
    r = size * 0.32
    t = np.linspace(np.pi * 0.05, np.pi * 0.95, 17)
    jaw = np.stack([c - r * np.cos(t), c + 0.1 * r + r * np.sin(t) * 0.9], 1)
    brow_r = np.stack([np.linspace(c - 0.75 * r, c - 0.15 * r, 5), np.full(5, c - 0.45 * r)], 1)
    brow_l = brow_r * [-1, 1] + [2 * c, 0]
    bridge = np.stack([np.full(4, c), np.linspace(c - 0.3 * r, c + 0.1 * r, 4)], 1)
    nostrils = np.stack([np.linspace(c - 0.2 * r, c + 0.2 * r, 5), np.full(5, c + 0.2 * r)], 1)
    a = np.linspace(0, 2 * np.pi, 7)[:-1]
    eye_r = np.stack([c - 0.45 * r + 0.18 * r * np.cos(a), c - 0.25 * r + 0.07 * r * np.sin(a)], 1)
    eye_l = eye_r * [-1, 1] + [2 * c, 0]
    m = np.linspace(0, 2 * np.pi, 13)[:-1]
    outer = np.stack([c + 0.4 * r * np.cos(m), c + 0.5 * r + (0.1 + open_mouth) * r * np.sin(m)], 1)
    mi = np.linspace(0, 2 * np.pi, 9)[:-1]
    inner = np.stack([c + 0.3 * r * np.cos(mi), c + 0.5 * r + (0.03 + open_mouth) * r * np.sin(mi)], 1)
    lm = np.concatenate([jaw, brow_r, brow_l, bridge, nostrils, eye_r, eye_l, outer, inner])
    return (lm + rng.normal(0, size * 0.004, lm.shape)).astype(np.float32)


def write_synthetic_prepared(root: Path | str, n_clips: int = 4, frames: int = 6, size: int = 64,
                             seed: int = 0) -> Path:
    """Write a tiny prepared folder in the exact ``th prepare`` format (cartoon faces that talk).

    Used by the tests and benchmarks before (and besides) real data; one identity per clip.
    """
    import cv2

    root = Path(root)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    clips = []
    shard = root / "shards" / "shard-000000.tar"
    with tarfile.open(shard, "w") as tf:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        for i in range(n_clips):
            key = f"id{i:03d}_clip000"
            skin = rng.integers(90, 230, 3)
            bg = rng.integers(0, 255, 3)
            imgs, lms = [], []
            for f in range(frames):
                lm = synthetic_landmarks(rng, size, open_mouth=0.15 * (f % 3) / 2)
                img = np.empty((size, size, 3), np.uint8)
                img[:] = bg
                centre = (int(size / 2), int(size / 2 + 0.03 * size))
                axes = (int(size * 0.33), int(size * 0.42))
                cv2.ellipse(img, centre, axes, 0, 0, 360, [int(v) for v in skin], -1)
                cv2.fillPoly(img, [np.round(lm[48:60]).astype(np.int32)], (120, 30, 40))
                for eye in (lm[36:42], lm[42:48]):
                    cv2.fillPoly(img, [np.round(eye).astype(np.int32)], (30, 30, 30))
                imgs.append(img)
                lms.append(lm)
            for suffix, arr in (("frames", np.stack(imgs)), ("landmarks", np.stack(lms))):
                buf = io.BytesIO()
                np.save(buf, arr)
                add(f"{key}.{suffix}.npy", buf.getvalue())
            meta = {"identity": f"id{i:03d}", "clip": "clip000", "frame_indices": list(range(frames)), "fps": 25}
            add(f"{key}.json", json.dumps(meta).encode())
            clips.append({"key": key, "identity": meta["identity"], "clip": "clip000",
                          "shard": "shards/shard-000000.tar", "frames": frames, "src_width": size,
                          "src_height": size, "fps": 25})
    index = {"version": 1, "size": size, "frames_per_clip": frames, "clips": clips, "skipped": []}
    (root / "index.json").write_text(json.dumps(index, indent=1))
    return root
