"""Detector speed: the temporal stage's parts and a whole file, with the bundled weights.

    .venv/bin/python bench/bench_detect.py [--threads 2] [--repeats 5] [--video PATH]

Rows: dlib HOG + 68 landmarks on one whole frame (a window's first pair), and near the previous face (the other
pairs: HOG on a small region); the temporal statistics of one pair (two 150 px chips cut, equalised, DIS flow, 24
numbers); the timm CNN in ONNX Runtime per crop (batches of 64: what stills use); and
`detect.score_file` on a whole video at `--max-frames 64` (4 windows of 16 pairs), with the frames/s it examines.
Medians of ``--repeats`` runs after one warm-up; take the figures on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "clips" / "EDTalk__pose_source1.mp4"  # 10 s, 256 px, 25 fps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    args = ap.parse_args()
    os.environ["TH_THREADS"] = str(args.threads)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from timing import median_time

    from detect import temporal
    from detect.model import load_scorer
    from detect.score import score_file
    from synth.faces.align import align_crop
    from synth.faces.chip import chip_details, extract_chips
    from synth.faces.detector import FaceDetector
    from synth.media.video import iter_frames, probe

    if not args.video.is_file():
        raise SystemExit(f"no video at {args.video} (--video PATH)")
    frames = list(iter_frames(args.video, max_frames=2))
    det, scorer = FaceDetector(), load_scorer()
    face = det.detect(frames[0])[0]
    d = chip_details(face.landmarks, temporal.CHIP, 0.25)
    crops = np.stack([align_crop(frames[0], face.landmarks, size=scorer.spec.input_size)[0]] * 64)

    def pair():
        a, b = (c[None] for c in extract_chips(frames, d, fast=True))
        temporal.pair_features(temporal.equalise(a), temporal.equalise(b))

    hog = median_time(lambda: det.detect(frames[0]), args.repeats)
    near = median_time(lambda: det.detect_near(frames[1], face.box), args.repeats)
    stats = median_time(pair, args.repeats)
    cnn = median_time(lambda: scorer.probabilities(crops), args.repeats) / len(crops)
    whole = median_time(lambda: score_file(args.video, scorer, max_frames=64), args.repeats)
    r = score_file(args.video, scorer, max_frames=64)
    examined = 2 * temporal.WINDOW_PAIRS * len(r.frame_scores)
    info = probe(args.video)
    print(f"{args.video.name}: {info.width}x{info.height}, {info.frames} frames; {args.threads} threads, "
          f"median of {args.repeats}")
    print("| what | ms | per second |")
    print("|---|---|---|")
    print(f"| HOG + landmarks, whole frame | {hog * 1e3:.1f} | {1 / hog:.0f} frames |")
    print(f"| HOG near the previous face + landmarks | {near * 1e3:.1f} | {1 / near:.0f} frames |")
    print(f"| temporal statistics, one pair (chips, equalise, DIS flow, 24 numbers) | {stats * 1e3:.1f} | "
          f"{1 / stats:.0f} pairs |")
    print(f"| timm CNN (ONNX Runtime), one crop in batches of 64 | {cnn * 1e3:.2f} | {1 / cnn:.0f} crops |")
    print(f"| score_file, --max-frames 64: {len(r.frame_scores)} windows, {examined} frames decoded and used | "
          f"{whole * 1e3:.0f} | {examined / whole:.0f} frames examined |")


if __name__ == "__main__":
    main()
