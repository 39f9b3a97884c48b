"""The detector's data: real crops from prepared clips, fakes from our own generator, in-the-wild distortions.

Real: every frame of a prepared clip (``th prepare``: canonical crops, synth.faces.align) resized to the
detector's input. Fake: each clip's person is enrolled from ``k_shot`` of its own frames (feed-forward,
or fine-tuned for a few steps) with one of the generator checkpoints and driven by another clip's
landmarks (relative motion transfer, as ``th animate`` does); frames come straight from the generator
(library level: no watermark, no file). Two further fake kinds stand in for other tools' output: the
same motion made by piecewise-affine warping of a real frame, and the generated face blended into the
person's real frames (real background, synthetic face). A share of clips of both classes additionally goes through a
real H.264 encode (libx264 at several CRFs, at th's default 256 px output size) so compression is not
only simulated by the per-frame JPEG proxy of ``augment``.
Splits are by identity: no person is in two of train / val (threshold calibration) / test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synth.errors import UserError

SPLITS = ("train", "val", "test")


@dataclass
class Samples:
    """Crops with labels: uint8 (N,S,S,3), label (N,) 0 real / 1 fake, split name, clip key, source tag."""

    crops: np.ndarray
    label: np.ndarray
    split: np.ndarray
    clip: np.ndarray
    source: np.ndarray

    @staticmethod
    def concat(parts: list[Samples]) -> Samples:
        return Samples(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                         ("crops", "label", "split", "clip", "source")))

    def where(self, mask: np.ndarray) -> Samples:
        return Samples(self.crops[mask], self.label[mask], self.split[mask], self.clip[mask], self.source[mask])

    def counts(self) -> dict[str, dict[str, int]]:
        return {s: {"real": int(((self.split == s) & (self.label == 0)).sum()),
                    "fake": int(((self.split == s) & (self.label == 1)).sum())} for s in SPLITS}


@dataclass(frozen=True)
class IdentitySplit:
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    notes: list[str] = field(default_factory=list)

    def of(self, identity: str) -> str:
        return "train" if identity in self.train else "val" if identity in self.val else "test"


def split_identities(identities: list[str], test: list[str], val_fraction: float, seed: int) -> IdentitySplit:
    """Disjoint identity splits: ``test`` as given (e.g. the generator's held-out identities), ``val`` a
    seeded hash-ordered share of the rest (used only for threshold calibration), train the remainder."""
    ids = sorted(set(identities))
    test_set = sorted(set(test) & set(ids))
    rest = [i for i in ids if i not in test_set]
    rest.sort(key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    n_val = max(1, round(val_fraction * len(ids)))
    return IdentitySplit(tuple(sorted(rest[n_val:])), tuple(sorted(rest[:n_val])), tuple(test_set))


def resize_to(frames: np.ndarray, size: int) -> np.ndarray:
    """Square crops (N,s,s,3) → (N,size,size,3): area when shrinking, bicubic when enlarging (as th animate)."""
    import cv2

    if frames.shape[1] == size:
        return frames
    interp = cv2.INTER_AREA if frames.shape[1] > size else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in frames])


def h264_roundtrip(frames: np.ndarray, crf: int, size: int = 256, fps: float = 25.0) -> np.ndarray:
    """Encode crops as an H.264 mp4 at ``size`` px (libx264, yuv420p, CRF ``crf``), decode, return them at
    their original size: what a crop of a re-encoded th output (or of a compressed real video) looks like."""
    from synth.media.video import VideoWriter, iter_frames
    from synth.media.workdir import anonymous_file, th_home

    src = frames.shape[1]
    # Generated pixels, unwatermarked: an anonymous file that cannot outlive this process (no name in /tmp).
    with anonymous_file(th_home() / "h264-roundtrip.mp4") as clip:
        with VideoWriter(clip.path, fps, (size, size), crf=crf) as w:
            for f in resize_to(frames, size):
                w.write(f)
        decoded = np.stack(list(iter_frames(clip.path)))
    return resize_to(decoded, src)


def chain_roundtrip(frames: np.ndarray, crf: int = 28, size: int = 128, brightness: float = 0.08) -> np.ndarray:
    """The re-uploader's chain on crops: brightened by ``brightness`` (ffmpeg ``eq``), shrunk to ``size`` px
    (about half of th's 256 px output), H.264 at ``crf``; returned at the crops' own size."""
    bright = np.clip(frames.astype(np.int16) + round(brightness * 255), 0, 255).astype(np.uint8)
    return h264_roundtrip(bright, crf, size=size)


def family(source: str) -> str:
    """The artefact family of a sample's source tag: real, warp, blend, sbi, ae or gen (our generators)."""
    if source.startswith("real"):
        return "real"
    for fam in ("warp", "sbi", "ae"):
        if source.startswith(fam):
            return fam
    return "blend" if ":blend" in source else "gen"


def generate_fakes(model, frames: np.ndarray, landmarks: np.ndarray, driver_landmarks: np.ndarray,
                   k_shot: int, steps: int, seed: int, n_frames: int | None = None,
                   self_driven: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One person's fake frames at the model's size: enroll from ``k_shot`` of ``frames`` (prepared crops
    + landmarks in their pixels), then render the driver's motion transferred onto that person.

    Returns (frames (T,s,s,3), their landmarks (T,68,2) in those frames' pixels). With ``self_driven`` = n,
    n more frames follow, driven by the person's own landmarks of n evenly spread real frames (for
    blending into those frames), and their landmarks are those real frames' landmarks.
    """
    from synth.avatar.animate import render
    from synth.avatar.finetune import finetune
    from synth.avatar.motion import relative_transfer

    rng = np.random.default_rng(seed)
    shots = np.sort(rng.choice(len(frames), size=min(k_shot, len(frames)), replace=False))
    params = finetune(model, frames[shots], landmarks[shots], steps=steps, seed=seed)
    s = model.image_size
    k = s / frames.shape[1]
    avatar_lm = landmarks[shots[0]] * k
    drv = driver_landmarks * (s / frames.shape[1])
    lm = relative_transfer(avatar_lm, drv, neutral=0)
    if n_frames is not None and n_frames < len(lm):
        lm = lm[np.linspace(0, len(lm) - 1, n_frames).round().astype(int)]
    if self_driven:
        own = np.linspace(0, len(frames) - 1, self_driven).round().astype(int)
        lm = np.concatenate([lm, landmarks[own] * k]).astype(np.float32)
    gen = params.generator_module(model)
    return np.stack(list(render(model, gen, params.psi, lm, s, sources=params.sources))), lm


def face_mask(landmarks: np.ndarray, size: int, feather: float = 0.04) -> np.ndarray:
    """float32 (size, size, 1) soft mask of the face: convex hull of the landmarks (brows lifted to cover
    the forehead), feathered — the region a face-swap or reenactment tool blends into a real frame."""
    import cv2

    lm = np.asarray(landmarks, np.float64).copy()
    brows = lm[17:27].copy()
    eyes_y = lm[36:48, 1].mean()
    brows[:, 1] -= 0.4 * (eyes_y - brows[:, 1]).clip(min=0) + 0.03 * size
    pts = np.concatenate([lm[:17], brows]).round().astype(np.int32)
    mask = np.zeros((size, size), np.float32)
    cv2.fillConvexPoly(mask, cv2.convexHull(pts), 1.0)
    k = max(1.0, feather * size)
    return cv2.GaussianBlur(mask, (0, 0), k)[..., None]


def other_tool_fakes(frames: np.ndarray, landmarks: np.ndarray, driven_landmarks: np.ndarray,
                     self_fakes: np.ndarray, n_self: int) -> tuple[np.ndarray, np.ndarray]:
    """Two kinds of fakes other face-animation tools make, of the same person:

    * ``warp``: the classical answer — the first real frame warped piecewise-affinely to the driven
      landmarks (``synth.faces.warp``, th eval's baseline), as warping-based reenactment methods do;
    * ``blend``: generated faces driven by the person's own landmarks of ``n_self`` evenly spread real
      frames, pasted into those frames with a feathered face mask: real background and hair, synthetic
      face — what reenactment, lip-sync and swap tools output.

    ``driven_landmarks`` are in the prepared crops' pixels; ``self_fakes`` (n_self, s, s, 3) at model size.
    """
    from synth.faces.warp import warp_frames

    size = frames.shape[1]
    warped = warp_frames(frames[0], landmarks[0], driven_landmarks)
    own = np.linspace(0, len(frames) - 1, n_self).round().astype(int)
    up = resize_to(self_fakes, size)
    blended = []
    for t, i in enumerate(own):
        m = face_mask(landmarks[i], size)
        blended.append((frames[i] * (1 - m) + up[t] * m + 0.5).clip(0, 255).astype(np.uint8))
    return warped, np.stack(blended)


def build_samples(
    prepared: Path,
    models: list[Path],
    split: IdentitySplit,
    input_size: int,
    seed: int,
    fake_frames: int = 16,
    finetune_every: int = 12,
    finetune_steps: int = 6,
    k_shot: int = 4,
    h264_every: int = 3,
    crfs: tuple[int, ...] = (23, 28, 35),
    test_crf: int = 28,
    other_tools: bool = True,
    pseudo: bool = True,
    ae_steps: int = 250,
    log: Callable[[str], None] = print,
) -> Samples:
    """All real and fake crops (see module docstring), tagged with split, clip and source.

    Every ``finetune_every``-th clip is enrolled with ``finetune_steps`` of fine-tuning (else feed-forward);
    every ``h264_every``-th clip of train/val also goes through H.264 at a CRF from ``crfs``, and another
    share through the re-uploader's chain (``chain_roundtrip``) — both classes alike, so neither the codec
    nor the resolution tells them apart; every test clip goes through both (the report's compressed
    conditions). ``other_tools`` adds warp and blended fakes (``other_tool_fakes``); ``pseudo`` adds the
    pseudo-fake families of ``detect.pseudo`` (self-blended images, autoencoder up-sampling traces).
    """
    import torch

    from detect import pseudo as pz
    from synth.avatar.model import TalkingHeadModel
    from synth.train.shards import load_prepared

    clips = load_prepared(prepared)
    if len(clips) < 3:
        raise UserError(f"{prepared}: need at least 3 prepared clips, found {len(clips)}")
    nets = [TalkingHeadModel.load(p) for p in models]
    parts: list[Samples] = []
    rng = np.random.default_rng(seed)
    by_split = {s: [c for c in clips if split.of(c.identity) == s] for s in SPLITS}
    aes = {}
    if pseudo:
        train_real = np.concatenate([c.frames[::4] for c in by_split["train"]] or [clips[0].frames])
        aes = pz.train_autoencoders(train_real, seed, steps=ae_steps, log=log)
    for sname, group in by_split.items():
        for i, clip in enumerate(group):
            others = [c for c in group if c.identity != clip.identity] or [c for c in clips if c.identity != clip.identity]
            driver = others[int(rng.integers(len(others)))]
            m = (i + SPLITS.index(sname)) % len(nets)
            steps = finetune_steps if i % finetune_every == finetune_every - 1 else 0
            clip_seed = int(rng.integers(1 << 31))
            torch.manual_seed(clip_seed)
            n_self = max(1, fake_frames // 2) if other_tools else 0
            fake, fake_lm = generate_fakes(nets[m], clip.frames, clip.landmarks, driver.landmarks, k_shot, steps,
                                           clip_seed, fake_frames, self_driven=n_self)
            real = resize_to(clip.frames, input_size)
            tag = f"{Path(models[m]).stem}:{'ft' + str(steps) if steps else 'ff'}"
            fakes: list[tuple[np.ndarray, str]] = []  # (crops at prepared size or model size, source tag)
            if other_tools:
                n_drv = len(fake) - n_self
                driven = fake_lm[:n_drv] * (clip.frames.shape[1] / fake.shape[1])
                warped, blended = other_tool_fakes(clip.frames, clip.landmarks, driven[::2], fake[n_drv:], n_self)
                fakes += [(warped, "warp"), (blended, f"{tag}:blend")]
                fake = fake[:n_drv]
            fakes.append((fake, tag))
            if pseudo:
                pick = np.linspace(0, len(clip.frames) - 1, max(1, fake_frames // 2)).round().astype(int)
                fakes.append((pz.self_blended(clip.frames[pick], clip.landmarks[pick], clip_seed), "sbi"))
                kind = pz.AE_KINDS[(i + SPLITS.index(sname)) % len(pz.AE_KINDS)]
                fakes.append((pz.reconstructed(clip.frames[pick[::-1]], aes[kind]), f"ae-{kind}"))
            parts.append(_tagged(real, 0, sname, clip.key, "real"))
            parts += [_tagged(f, 1, sname, clip.key, t, input_size) for f, t in fakes]
            if sname == "test" or i % h264_every == 0:
                crf = test_crf if sname == "test" else crfs[int(rng.integers(len(crfs)))]
                parts.append(_tagged(h264_roundtrip(clip.frames, crf), 0, sname, clip.key, f"real:h264crf{crf}", input_size))
                parts += [_tagged(h264_roundtrip(f, crf), 1, sname, clip.key, f"{t}:h264crf{crf}", input_size)
                          for f, t in fakes]
            if sname == "test" or i % h264_every == 1:
                parts.append(_tagged(chain_roundtrip(clip.frames), 0, sname, clip.key, "real:chain", input_size))
                parts += [_tagged(chain_roundtrip(f), 1, sname, clip.key, f"{t}:chain", input_size)
                          for f, t in fakes]
        log(f"{sname}: {len(group)} clips done")
    return Samples.concat(parts)


def _tagged(crops: np.ndarray, label: int, split: str, clip: str, source: str, size: int | None = None) -> Samples:
    if size is not None:
        crops = resize_to(crops, size)
    n = len(crops)
    return Samples(crops.astype(np.uint8), np.full(n, label, np.int64), np.full(n, split, object),
                   np.full(n, clip, object), np.full(n, source, object))


def augment(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Distortions a face crop meets in the wild, applied alike to both classes: crop jitter (another
    face detector's box), down/up-scaling, blur, noise, colour/brightness/contrast shifts, JPEG (a proxy
    for video compression; real H.264 is in the data too)."""
    import cv2

    s = crop.shape[0]
    img = crop
    if rng.random() < 0.8:  # box jitter: scale ±10 %, shift ±5 % of the side
        sc = rng.uniform(0.9, 1.1)
        dx, dy = rng.uniform(-0.05, 0.05, 2) * s
        M = np.array([[sc, 0, (1 - sc) * s / 2 + dx], [0, sc, (1 - sc) * s / 2 + dy]], np.float64)
        img = cv2.warpAffine(img, M, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.5:
        img = cv2.flip(img, 1)
    if rng.random() < 0.25:  # the face was smaller in its source video
        k = rng.uniform(0.35, 0.9)
        small = cv2.resize(img, (max(8, round(s * k)),) * 2, interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (s, s), interpolation=[cv2.INTER_LINEAR, cv2.INTER_CUBIC][int(rng.integers(2))])
    if rng.random() < 0.1:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.5))
    f = img.astype(np.float32)
    if rng.random() < 0.5:  # brightness, contrast, saturation, per-channel gain
        mean = f.mean()
        f = (f - mean) * rng.uniform(0.75, 1.25) + mean + rng.uniform(-25, 25)
        grey = f.mean(axis=2, keepdims=True)
        f = grey + (f - grey) * rng.uniform(0.7, 1.3)
        f = f * rng.uniform(0.93, 1.07, 3)[None, None]
    if rng.random() < 0.15:
        f = f + rng.normal(0, rng.uniform(1, 6), f.shape)
    img = np.clip(f + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:  # real H.264 and the chain are in the data itself
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(50, 96))])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    return np.ascontiguousarray(img)
