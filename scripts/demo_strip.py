"""docs/images/demo_strip.png: 6 frames of out/demo.mp4 beside the warp of the astronaut along the same motion.

    .venv/bin/python scripts/demo_strip.py   (after `make demo`)
    .venv/bin/python scripts/demo_strip.py --video out/painting.mp4 --avatar out/painting.avatar \
        --motion talk --seconds 4 --dest docs/images/painting_strip.png   (any other avatar and built-in motion)

Top row: th's frames; bottom row: the piecewise-affine warp of the photo (th eval's `warp` baseline). Written
through the sealing write path (watermark + C2PA), since it holds generated pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path("out")
DEST = Path("docs/images/demo_strip.png")


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=OUT / "demo.mp4")
    ap.add_argument("--avatar", type=Path, default=OUT / "astronaut.avatar")
    ap.add_argument("--motion", default="demo", help="the built-in motion the video was animated with")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--dest", type=Path, default=DEST)
    args = ap.parse_args()
    from provenance.manifest import GenerationFacts
    from provenance.write import write_image
    from synth.avatar.avatar_file import Avatar
    from synth.avatar.motion import builtin_motion
    from synth.faces.warp import warp_frames
    from synth.media.video import iter_frames

    frames = list(iter_frames(args.video))
    av = Avatar.load(args.avatar)
    lms = builtin_motion(args.motion, av.landmarks, fps=25.0, seconds=args.seconds)
    pick = np.linspace(0, len(frames) - 1, 6).round().astype(int)
    warped = warp_frames(av.source, av.landmarks, lms[pick])
    s = frames[0].shape[0]
    if warped.shape[1] != s:
        import cv2

        warped = np.stack([cv2.resize(w, (s, s), interpolation=cv2.INTER_CUBIC) for w in warped])
    strip = np.vstack([np.hstack([frames[i] for i in pick]), np.hstack(list(warped))])
    write_image(strip, args.dest, GenerationFacts.current(), force=True)
    print(f"wrote {args.dest}")


if __name__ == "__main__":
    main()
