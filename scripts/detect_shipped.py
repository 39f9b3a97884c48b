"""Issue #14 experiment: fine-tune the bundled detector on th's output *as shipped* (one `th animate` file per
portrait of the share) against real clips sent through the same write path (watermark + th's H.264 writer), both
read by the scorer's own crop (detect.score.face_crops), raw and after the re-uploader's chain. Not the bundled
detector's recipe (that is `th detect train`, docs/DETECTOR.md): a measurement of what this data does.

    python scripts/detect_shipped.py gen [--source portraits|clips] [--driver motion|video] [--take K]
                                                # th animate, one 4 s file per portrait (or per clip identity,
                                                # from a video frame), driven by a built-in motion or another
                                                # identity's real clip; ~10 min each, 1 core, in one process
    python scripts/detect_shipped.py crops      # crops of real clips, th files, dev clips as they are, foreign fakes
    python scripts/detect_shipped.py finetune [--steps 600] [--threads 2]

Splits by identity: real clips of the dev identities (models/dev_identities.txt) are the test reals, a seeded fifth
of the other identities calibrates the threshold (1 % FPR over their frames and one augmented copy of each), the
rest trains; portraits of the dev identities and a seeded third of the others are the test fakes.
foreign_fakes/ are only scored, never trained on or calibrated with. Work files: runs/shipped/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
WORK = ROOT / "runs" / "shipped"
MOTIONS = ("talk", "nod", "turn", "blink", "smile", "demo")
FRAMES = 24  # sampled per file


def manifest() -> list[list[str]]:
    lines = (DATA / "MANIFEST.tsv").read_text().splitlines()[1:]
    return [line.split("\t") for line in lines]


def dev_identities() -> set[str]:
    lines = (ROOT / "models" / "dev_identities.txt").read_text().splitlines()
    return {s.strip() for s in lines if s.strip() and not s.startswith("#")}


def real_split(identity: str, dev: set[str]) -> str:
    return "test" if identity in dev else ("val" if zlib.crc32(identity.encode()) % 5 == 0 else "train")


def fake_split(identity: str, dev: set[str]) -> str:
    return "test" if identity in dev or zlib.crc32(identity.encode()) % 3 == 0 else "train"


def gen(source: str, driver: str = "motion", take: int = 0) -> None:
    """One th file per portrait (``source`` = portraits) or per clip identity, enrolled from the clip's 10th frame
    (``source`` = clips: a video frame, not a still photo, as the photo). ``driver`` = motion: a built-in motion;
    video: a real clip of another identity of the same split (its tracked landmarks, relative motion), as most
    users drive th; those files are named ``drv-<name>.mp4`` (``take`` K > 0: the K-th other clip of the pool,
    ``drvK-<name>.mp4``)."""
    from synth.media.video import read_frames_at, write_image

    out_dir = WORK / "out"
    (WORK / "frames").mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TH_HOME": str(WORK / "home"), "TH_THREADS": "1", "PYTHONPATH": str(ROOT)}
    in_process = os.environ.get("TH_HOME") == env["TH_HOME"]
    if in_process:
        from typer.testing import CliRunner

        from thcli.app import app
    seen: set[str] = set()
    dev = dev_identities()
    clips = [r for r in manifest() if r[1] == "clip"]
    for row in manifest():
        kind = "portrait" if source == "portraits" else "clip"
        if row[1] != kind or (kind == "clip" and row[2] in seen):
            continue
        seen.add(row[2])
        photo, name = DATA / row[0], Path(row[0]).stem
        if kind == "clip":
            name = f"clip-{name}"
            photo = WORK / "frames" / f"{name}.png"
            if not photo.exists():
                write_image(photo, read_frames_at(DATA / row[0], [10])[10])
        motion = MOTIONS[zlib.crc32(row[0].encode()) % len(MOTIONS)]
        if driver == "video":
            name = f"drv{take or ''}-{name}"
            split = fake_split(row[2], dev)
            pool = [c for c in clips if c[2] != row[2] and fake_split(c[2], dev) == split]
            motion = str(DATA / pool[(zlib.crc32(row[0].encode()) + take) % len(pool)][0])
        out = out_dir / f"{name}.mp4"
        if out.exists():
            continue
        argv = ["animate", str(photo), motion, "-o", str(out), "--seconds", "4", "--steps", "0",
                "--consent", "detector experiment", "--threads", "1"]
        if in_process:  # the same command, without paying torch's import and the model load per file
            r = CliRunner().invoke(app, argv)
            print(row[0], row[2], "ok" if r.exit_code == 0 else r.output.strip()[-120:], flush=True)
            continue
        r = subprocess.run([sys.executable, "-m", "thcli", *argv], env=env, capture_output=True, text=True)
        print(row[0], row[2], "ok" if r.returncode == 0 else r.stderr.strip()[-120:], flush=True)


def file_crops(path: Path) -> np.ndarray:
    from detect.score import face_crops, read_sampled

    frames, _, _ = read_sampled(path, FRAMES)
    got = [c for c in face_crops(frames, 128) if c is not None]
    return np.stack(got) if got else np.zeros((0, 128, 128, 3), np.uint8)


def marked_copy(path: Path, dest: Path) -> Path:
    """A real clip through th's write path: every frame watermarked, th's H.264 writer (first 100 frames)."""
    from provenance import watermark as wm
    from synth.media.video import VideoWriter, iter_frames, probe

    info = probe(path)
    w, h = info.width - info.width % 2, info.height - info.height % 2
    bits = wm.payload_to_bits(zlib.crc32(path.name.encode()))
    with VideoWriter(dest, info.fps or 25, (w, h)) as writer:
        for i, f in enumerate(iter_frames(path, max_frames=100)):
            writer.write(wm.embed(np.ascontiguousarray(f[:h, :w]), bits, frame_index=i))
    return dest


def crops() -> None:
    from provenance import attacks

    dev = dev_identities()
    rows = manifest()
    jobs = [("real", DATA / r[0]) for r in rows if r[1] == "clip"]
    jobs += [("asis", DATA / r[0]) for r in rows if r[1] == "clip" and r[2] in dev]
    jobs += [("foreign", DATA / r[0]) for r in rows if r[1] == "foreign_fake"]
    jobs += [("fake", p) for p in sorted((WORK / "out").glob("*.mp4"))]
    (WORK / "crops").mkdir(parents=True, exist_ok=True)
    for kind, path in jobs:
        dest = WORK / "crops" / f"{kind}__{path.stem}.npz"
        if dest.exists():
            continue
        with tempfile.TemporaryDirectory() as td:
            src = marked_copy(path, Path(td) / "marked.mp4") if kind == "real" else path
            raw = file_crops(src)
            chained = file_crops(attacks.chain_video(src, Path(td) / "chain.mp4", "chain"))
        np.savez_compressed(dest, raw=raw, chain=chained)
        print(kind, path.name, len(raw), len(chained), flush=True)


class CropSet:
    """The cached crops by (kind, file stem) → (raw, chained), and the identities of the share's files."""

    def __init__(self) -> None:
        self.identity = {Path(r[0]).stem: r[2] for r in manifest()}
        self.identity |= {f"clip-{k}": v for k, v in self.identity.items()}  # th files enrolled from a clip frame
        self.dev = dev_identities()
        self.files = {}
        for p in sorted((WORK / "crops").glob("*.npz")):
            kind, stem = p.stem.split("__", 1)
            with np.load(p) as z:
                self.files[(kind, stem)] = (z["raw"], z["chain"])

    def pool(self, kind: str, split: str) -> np.ndarray:
        splitter = real_split if kind == "real" else fake_split
        parts = [np.concatenate(v) for (k, s), v in self.files.items()
                 if k == kind and splitter(self.identity[s], self.dev) == split]
        return np.concatenate(parts) if parts else np.zeros((0, 128, 128, 3), np.uint8)

    def file_scores(self, det, kind: str, split: str | None, which: int) -> list[float]:
        """Median fake probability per file (the file score of `th detect`)."""
        splitter = real_split if kind == "real" else fake_split
        return [float(np.median(det.probabilities(v[which]))) for (k, s), v in self.files.items()
                if k == kind and len(v[which]) and (split is None or splitter(self.identity[s], self.dev) == split)]


def report(det, data: CropSet, threshold: float, tag: str) -> None:
    from detect.metrics import roc_auc

    print(f"{tag} (threshold {threshold:.4f})")
    for which, name in ((0, "raw"), (1, "chain")):
        fake = data.file_scores(det, "fake", "test", which)
        real = data.file_scores(det, "real", "test", which)
        print(f"  {name}: th test files flagged {sum(v > threshold for v in fake)}/{len(fake)}, dev real clips flagged "
              f"{sum(v > threshold for v in real)}/{len(real)}, file AUC {roc_auc(np.array(real), np.array(fake)):.3f}")
    foreign = data.file_scores(det, "foreign", None, 0)
    asis = data.file_scores(det, "asis", None, 0)
    print(f"  foreign fakes flagged {sum(v > threshold for v in foreign)}/{len(foreign)}, dev real clips as they are "
          f"flagged {sum(v > threshold for v in asis)}/{len(asis)}, file AUC {roc_auc(np.array(asis), np.array(foreign)):.3f}",
          flush=True)


def finetune(steps: int, threads: int) -> None:
    import dataclasses
    import time

    import torch

    from detect.data import augment
    from detect.model import Detector

    torch.set_num_threads(threads)
    data = CropSet()
    real, fake, val = data.pool("real", "train"), data.pool("fake", "train"), data.pool("real", "val")
    print(f"train: {len(real)} real, {len(fake)} th crops; val: {len(val)} real crops")
    det = Detector.load()
    report(det, data, det.spec.threshold, "bundled detector")
    net = det.net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=5e-4, weight_decay=0.05)
    y = torch.cat([torch.zeros(16), torch.ones(16)])
    t0 = time.perf_counter()
    for step in range(steps):
        rng = np.random.default_rng([0, step])
        batch = np.concatenate([real[rng.integers(0, len(real), 16)], fake[rng.integers(0, len(fake), 16)]])
        for g in opt.param_groups:
            g["lr"] = 5e-4 * 0.5 * (1 + np.cos(np.pi * step / steps))
        logits = det.logits(det.to_tensor(np.stack([augment(c, rng) for c in batch])))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1} bce {loss.item():.3f} {time.perf_counter() - t0:.0f} s", flush=True)
    det.net.eval()
    rng = np.random.default_rng(7)
    calib = np.r_[det.probabilities(val), det.probabilities(np.stack([augment(c, rng) for c in val]))]
    threshold = float(np.quantile(calib, 0.99))
    report(det, data, threshold, f"fine-tuned, {steps} steps")
    det.spec = dataclasses.replace(det.spec, threshold=threshold)
    det.save(WORK / "detector-ft.safetensors", force=True)


def main() -> None:
    sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=("gen", "crops", "finetune"))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--source", choices=("portraits", "clips"), default="portraits", help="gen: what th enrolls")
    ap.add_argument("--driver", choices=("motion", "video"), default="motion", help="gen: what drives th")
    ap.add_argument("--take", type=int, default=0, help="gen --driver video: which other clip drives (0 = the first)")
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs the shared data at {DATA}")
    if args.stage == "gen":
        gen(args.source, args.driver, args.take)
    elif args.stage == "crops":
        crops()
    else:
        finetune(args.steps, args.threads)


if __name__ == "__main__":
    main()
